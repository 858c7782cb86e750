"""The Fashion-MNIST evaluation: the shipped feature network (shapes, determinism, its recorded and its real test
accuracy), its training (deterministic from a seed), `--features fashion`, `eval --preset fashion` and the edit
measurement on a tiny 10-class 32×32 model, against a tiny Fashion-MNIST written here (the real files only where a
test says so)."""

import json
import math
from dataclasses import replace

import numpy as np
import pytest
import torch

from nextscale.cli import main
from nextscale.errors import NextscaleError
from nextscale.evaluation import PRESETS, evaluate_edits, evaluate_samples, load_network
from nextscale.evaluation.edits import EDIT_BOX, outside_change
from nextscale.evaluation.fashion_network import (
    NETWORK_DIR,
    FashionNetwork,
    TrainSettings,
    fashion_uint8,
    train_fashion_network,
)
from nextscale.evaluation.verdicts import FashionVerdicts
from nextscale.registry import architecture
from nextscale.tokenizer import VQVAE
from nextscale.transformer import VAR
from nextscale.weights import save_model
from tests.helpers import fashion_data, randomize_, write_fashion

pytestmark = pytest.mark.cpu_only


def random_uint8(n: int, seed: int = 0) -> torch.Tensor:
    grey = np.random.default_rng(seed).integers(0, 256, (n, 28, 28), dtype=np.uint8)
    return fashion_uint8(grey)


@pytest.fixture
def tiny_fashion(tmp_path, monkeypatch):
    """A tiny Fashion-MNIST (12 training and 8 test images) where the evaluation looks first."""
    written = write_fashion(tmp_path / "data" / "fashion-mnist", counts=(12, 8))
    monkeypatch.setenv("NEXTSCALE_DATA", str(tmp_path / "data"))
    return written


@pytest.fixture(scope="module")
def tiny_model():
    """The tiny architecture drawing 10 classes at 32×32 (8×8 latents, 4× downsampling), random weights."""
    vae_config, var_config = architecture("tiny")
    patch_nums = (1, 2, 4, 8)
    torch.manual_seed(0)
    vae = VQVAE(replace(vae_config, ch_mult=(1, 2, 2), patch_nums=patch_nums))
    var = VAR(replace(var_config, num_classes=10, patch_nums=patch_nums))
    randomize_(vae, seed=1, std=0.1)
    randomize_(var, seed=2)
    return vae.eval(), var.eval()


# ---- the network ----------------------------------------------------------------------------------------------


def test_the_shipped_network_gives_features_and_logits_the_same_every_time():
    network = load_network("fashion")
    images = random_uint8(6)
    features, logits = network(images)
    assert network.name == "fashion" and features.shape == (6, 128) and logits.shape == (6, 10)
    assert (features >= 0).all()  # the hidden layer after its ReLU
    again = network(images)
    assert torch.equal(features, again[0]) and torch.equal(logits, again[1])
    # one image's numbers do not depend on the batch it came in (eval mode: no batch statistics)
    torch.testing.assert_close(network(images[:1])[0], features[:1], rtol=1e-5, atol=1e-5)
    with pytest.raises(NextscaleError, match="the fashion features take 3×32×32 images"):
        network(torch.zeros(2, 3, 16, 16, dtype=torch.uint8))


def test_the_shipped_network_records_its_test_accuracy_and_is_small():
    recorded = FashionNetwork.read_provenance(NETWORK_DIR)
    assert recorded["test_accuracy"] >= 0.9 and recorded["test_images"] == 10_000
    assert recorded["trained_on"].startswith("fashion-mnist train split")
    assert sum(f.stat().st_size for f in NETWORK_DIR.iterdir()) < 1_000_000


def test_the_shipped_network_scores_its_recorded_accuracy_on_the_real_test_images():
    fashion_data()  # the real files (CI requires them)
    measured = FashionVerdicts().test_accuracy()
    assert measured >= 0.9
    # recorded with one thread; another thread count sums in another order, which may move a verdict or two
    assert measured == pytest.approx(FashionNetwork.read_provenance(NETWORK_DIR)["test_accuracy"], abs=2e-4)


def test_training_is_deterministic_given_the_seed(tmp_path):
    write_fashion(tmp_path, counts=(48, 10))
    settings = TrainSettings(seed=3, epochs=1, batch_size=16)
    first, accuracy = train_fashion_network(settings, root=tmp_path, progress=False)
    second, again = train_fashion_network(settings, root=tmp_path, progress=False)
    other, _ = train_fashion_network(replace(settings, seed=4), root=tmp_path, progress=False)
    assert 0 <= accuracy <= 1 and accuracy == again
    for name, tensor in first.state_dict().items():
        assert torch.equal(tensor, second.state_dict()[name]), name
    assert not torch.equal(first.hidden.weight, other.hidden.weight)


def test_training_restores_the_callers_thread_count(tmp_path):
    write_fashion(tmp_path, counts=(16, 4))
    before = torch.get_num_threads()
    train_fashion_network(TrainSettings(epochs=1, batch_size=16, threads=1), root=tmp_path, progress=False)
    assert torch.get_num_threads() == before


# ---- the metrics through it -------------------------------------------------------------------------------------


def test_features_fashion_serve_eval(tmp_path, tiny_fashion, capsys):
    test_images, _ = tiny_fashion["test"]
    np.savez(tmp_path / "s.npz", arr_0=fashion_uint8(test_images).permute(0, 2, 3, 1).numpy())
    report = tmp_path / "r.json"
    argv = ["eval", str(tmp_path / "s.npz"), "--ref", "fashion-mnist", "--features", "fashion", "--json", str(report)]
    assert main(argv) == 0
    result = json.loads(report.read_text())
    assert result["settings"]["features"] == "fashion" and result["settings"]["ref_count"] == 8
    assert abs(result["metrics"]["fid"]) < 1e-3  # the same images as the reference
    assert result["metrics"]["precision"] == 1 and result["metrics"]["recall"] == 1


# ---- the preset and the edits -----------------------------------------------------------------------------------


def test_the_fashion_preset_from_the_command_line(tmp_path, tiny_fashion, tiny_model, capsys):
    save_model(*tiny_model, tmp_path / "m")
    report = tmp_path / "r.json"
    argv = ["eval", "--preset", "fashion", "--model", str(tmp_path / "m"), "--n-per-class", "2", "--edit-limit", "3"]
    assert main([*argv, "--device", "cpu", "--top-k", "5", "--json", str(report)]) == 0
    printed = capsys.readouterr().out
    for name in ("FID", "IS", "precision", "recall", "KID", "real floor", "class accuracy", "centre edits"):
        assert name in printed, name
    record = json.loads(report.read_text())
    assert record["options"]["preset"] == "fashion" and record["options"]["n_per_class"] == 2
    assert record["options"]["edit_limit"] == 3 and record["settings"]["top_k"] == 5  # every setting recorded
    assert record["compared"]["test"] == "fashion-mnist" and record["compared"]["test_count"] == 8
    assert record["compared"]["floor"] == "fashion-mnist-train" and record["compared"]["floor_count"] == 12
    assert record["compared"]["features"] == "fashion" and record["unguided_accuracy"] is None
    assert set(record["samples"]) >= {"fid", "is", "precision", "recall", "kid"} and record["samples"]["fid"] > 0
    assert 0 <= record["guided_accuracy"] <= 1 and record["edits"]["n"] == 3 and record["edits"]["preset"] == "fashion"


def test_the_preset_samples_are_judged_by_the_network_and_the_floor_by_the_real_images(tiny_fashion, tiny_model):
    vae, var = tiny_model
    report = evaluate_samples(vae, var, "fashion", n_per_class=2, progress=False)
    assert report.n_per_class == 2 and report.compared["samples"].startswith("20 samples")
    network, train = load_network("fashion"), fashion_uint8(tiny_fashion["train"][0])
    # the floor is the 12 real training images against the 8 test images, by the same features
    from nextscale.evaluation import Statistics, frechet_distance

    stats = lambda images: Statistics.of(network(images)[0].double().numpy(), "fashion")  # noqa: E731
    test = fashion_uint8(tiny_fashion["test"][0])
    assert report.train_test_fd == pytest.approx(frechet_distance(stats(train), stats(test)), rel=1e-6)
    assert report.classifier_test_accuracy == pytest.approx(
        float((network(test)[1].argmax(1).numpy() == tiny_fashion["test"][1]).mean())
    )


def test_a_model_of_another_shape_is_refused_before_sampling(tiny_fashion):
    vae, var = (m.eval() for m in (VQVAE(architecture("tiny")[0]), VAR(architecture("tiny")[1])))
    with pytest.raises(NextscaleError, match="the fashion evaluation needs a 10-class model of 32×32 images"):
        evaluate_samples(vae, var, "fashion", n_per_class=2, progress=False)


def test_edits_are_judged_and_the_change_outside_the_box_is_measured(tiny_fashion, tiny_model):
    vae, var = tiny_model
    report = evaluate_edits(vae, var, "fashion", limit=3, batch_size=2, top_k=5)
    assert report.n == 3 and report.preset == "fashion" and report.cfg == 3.0
    assert 0 <= report.accuracy <= 1 and 0 <= report.kept_original_class <= 1
    assert report.accuracy + report.kept_original_class <= 1  # the requested class is never the original one
    assert report.outside_change > 0 and math.isfinite(report.outside_psnr)  # random weights change everything
    assert "outside the box" in report.summary()


def test_the_change_outside_the_box_counts_only_the_pixels_outside_it():
    originals = torch.rand(2, 3, 32, 32, generator=torch.Generator().manual_seed(0)) * 0.9  # none at 255
    inside = originals.clone()
    inside[:, :, 4:28, 4:28] = 1 - inside[:, :, 4:28, 4:28]  # EDIT_BOX on 32×32: rows and columns 4…27
    assert outside_change(originals, inside, EDIT_BOX) == (0.0, math.inf)
    brighter = (originals.mul(255).add(0.5).floor() + 1) / 255  # every pixel one level up
    change, psnr = outside_change(originals, brighter, EDIT_BOX)
    assert change == pytest.approx(1.0) and psnr == pytest.approx(10 * math.log10(255**2), rel=1e-9)


def test_the_presets_share_one_shape():
    for name, preset in PRESETS.items():
        assert preset.name == name and preset.network in ("digits", "fashion") and preset.n_per_class >= 2
    assert PRESETS["fashion"].train_limit == 10_000 and PRESETS["fashion"].n_per_class == 1000
