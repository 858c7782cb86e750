"""The shipped models (digits, fashion), the demo and the digits evaluation."""

import numpy as np
import pytest
import torch
from PIL import Image

from nextscale import load_model, sample
from nextscale.cli import main
from nextscale.data import DigitsDataset, digits8_to_images, digits_splits, images_to_digits8
from nextscale.data.examples import digit_examples, fashion_examples
from nextscale.evaluation import Statistics, evaluate_digits, frechet_distance
from nextscale.registry import BUILTIN
from nextscale.sampling.outputs import to_uint8


def test_built_in_weights_stay_under_20_mb_together():
    from nextscale.evaluation.fashion_network import NETWORK_DIR

    files = [p for folder in [*BUILTIN.values(), NETWORK_DIR] for p in folder.rglob("*") if p.is_file()]
    assert {p.parent.parent.name for p in files if p.parent.name == "var"} == {"digits", "digits-small", "fashion"}
    assert sum(p.stat().st_size for p in files) < 20_000_000  # every built-in model and network together


@pytest.mark.parametrize("name", ["fashion"])
def test_the_fashion_model_loads_strictly_and_draws_every_class_as_its_name(name):
    from nextscale.data.fashion import FASHION_CLASSES
    from nextscale.weights.classes import model_class_names

    vae, var = load_model(name)  # strict: any missing or unexpected key raises; the pair's tokenizer is checked
    assert model_class_names(var) == list(FASHION_CLASSES)
    assert all(p.dtype == torch.float32 for p in var.parameters())  # stored in fp16, computed in fp32
    # Its decoder was sharpened afterwards on the tokens the transformer learnt (the fashion-decoder recipe).
    assert vae.tokens_fingerprint() == vae.provenance["tokens_of"] == var.provenance["tokenizer"] != vae.fingerprint()
    out = sample(vae, var, list(range(10)), seed=0)
    assert out.images.shape == (10, 3, 32, 32) and torch.isfinite(out.images).all()


@pytest.mark.slow
def test_shipped_model_is_small_loads_strictly_and_samples_every_class():
    small = [p for p in BUILTIN["digits-small"].rglob("*") if p.is_file()]
    assert sum(p.stat().st_size for p in small) < 3 * 2**20
    vae, var = load_model("digits")  # strict: any missing or unexpected key raises
    out = sample(vae, var, list(range(10)), seed=0, cfg=3.0)
    assert out.images.shape == (10, 3, 32, 32) and torch.isfinite(out.images).all()
    assert out.labels.tolist() == list(range(10))


def fashion_stand_in(folder, architecture: str = "tiny"):
    """A model that records Fashion-MNIST's class names, standing in for the built-in fashion model: the fashion
    architecture with its initial weights (what the demo costs with the real one), or a tiny one whose last scale
    is the built-in models' 8×8 (so the demo's edit boxes fit)."""
    from dataclasses import replace

    from nextscale import build, save_model
    from nextscale.data.fashion import FASHION_CLASSES
    from nextscale.registry import architecture as architecture_of
    from nextscale.tokenizer import VQVAE
    from nextscale.transformer import VAR
    from tests.helpers import randomize_

    torch.manual_seed(0)
    if architecture == "tiny":
        vae_config, var_config = architecture_of("tiny")
        scales = dict(patch_nums=(1, 2, 4, 8))
        vae = randomize_(VQVAE(replace(vae_config, **scales)), seed=1, std=0.1)
        var = randomize_(VAR(replace(var_config, **scales, num_classes=len(FASHION_CLASSES))), seed=2)
    else:
        vae, var = build(architecture)
    var.provenance = {"tokenizer": vae.fingerprint(), "classes": list(FASHION_CLASSES)}
    return save_model(vae.eval(), var.eval(), folder)


@pytest.mark.slow
def test_demo_writes_a_png_with_a_panel_for_each_model(tmp_path, capsys, monkeypatch):
    from nextscale import demo

    assert main(["demo", "--out", str(tmp_path / "demo.png")]) == 0
    assert "wrote" in capsys.readouterr().out
    with Image.open(tmp_path / "demo.png") as im:
        im.verify()
    with Image.open(tmp_path / "demo.png") as im:
        picture = np.asarray(im)
        assert im.mode == "RGB" and im.width == 2 * demo.MARGIN + 10 * (64 + demo.PAD) - demo.PAD
    digits_at = tile_rows(picture, digit_examples().add(1).div(2))
    fashion_at = tile_rows(picture, fashion_examples().add(1).div(2))
    assert len(digits_at) == 1 and len(fashion_at) == 1 and digits_at < fashion_at  # each model's real images


def tile_rows(picture: np.ndarray, images: torch.Tensor) -> list[int]:
    """The rows at which the demo picture's first column shows `images[0]` (in [0, 1]) as the demo draws it."""
    from nextscale.demo import MARGIN, TILE_SCALE

    tile = images[:1].repeat_interleave(TILE_SCALE, -1).repeat_interleave(TILE_SCALE, -2)
    expected, side = to_uint8(tile)[0], tile.shape[-1]
    column = picture[:, MARGIN : MARGIN + side]
    return [y for y in range(len(column) - side + 1) if np.array_equal(column[y : y + side], expected)]


def test_a_demo_panel_shows_every_class_real_images_the_pyramid_and_edits(tmp_path):
    from nextscale.data.fashion import FASHION_CLASSES
    from nextscale.demo import draw_panels, model_panel
    from nextscale.editing.edit import prepare_images

    panel = model_panel(str(fashion_stand_in(tmp_path / "fashion")), rows=2)
    assert panel.heading.startswith(f"{tmp_path / 'fashion'}: Fashion-MNIST")
    samples, real, pyramid, inpainted, outpainted = panel.sections
    assert [len(row.images) for row in samples.rows] == [10, 10] and samples.rows[-1].captions == list(FASHION_CLASSES)
    shipped = prepare_images(fashion_examples().add(1).div(2), 16)  # at the stand-in's resolution
    assert torch.equal(real.rows[0].images, shipped)  # the shipped test images
    assert real.rows[1].images.shape == (10, 3, 16, 16) and real.rows[1].captions == list(FASHION_CLASSES)
    assert [row.captions for row in pyramid.rows] == [["1x1", "2x2", "4x4", "8x8"]]  # the stand-in's scales
    assert inpainted.rows[0].captions == [*FASHION_CLASSES[1:], FASHION_CLASSES[0]]  # each as the next class
    assert outpainted.rows[0].images.shape == (10, 3, 16, 16)
    for section in (samples, pyramid, inpainted, outpainted):
        assert all(
            torch.isfinite(row.images).all() and 0 <= row.images.min() <= row.images.max() <= 1 for row in section.rows
        )
    picture = np.asarray(draw_panels([panel, panel]))
    assert len(tile_rows(picture, shipped)) == 2  # the real t-shirt, once in each panel


def test_digits_round_trip_through_32px_is_exact():
    _, test = digits_splits()
    back = images_to_digits8((digits8_to_images(test.images8) + 1) / 2)
    np.testing.assert_allclose(back, test.images8, atol=1e-4)
    data = DigitsDataset("test")
    assert len(data) == 360 and data.images.shape[1:] == (3, 32, 32)
    assert -1 <= float(data.images.min()) and float(data.images.max()) <= 1


def test_frechet_distance_is_zero_for_identical_sets_and_grows_with_a_shift():
    rng = np.random.default_rng(0)
    a = rng.normal(size=(500, 8))
    stats = Statistics.of(a, "f")
    assert abs(frechet_distance(stats, stats)) < 1e-6
    assert frechet_distance(stats, Statistics.of(a + 1.0, "f")) > 7.9


@pytest.mark.slow
def test_digits_evaluation_reports_every_number():
    vae, var = load_model("digits")
    report = evaluate_digits(vae, var, n_per_class=3, progress=False)
    assert 0 <= report.guided_accuracy <= 1 and 0 <= report.unguided_accuracy <= 1
    assert report.classifier_test_accuracy > 0.98
    assert report.train_test_fd > 0 and report.sample_fd > 0
    assert "Fréchet" in report.summary()


@pytest.mark.slow
def test_the_readme_python_example_runs_as_written(tmp_path, monkeypatch):
    import re
    from pathlib import Path

    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text()
    section = readme[readme.index("## Python API") :]
    code = re.search(r"```python\n(.*?)```", section, re.S).group(1)
    monkeypatch.chdir(tmp_path)  # it saves "my-model" in the working directory
    namespace: dict = {}
    exec(compile(code, "README.md", "exec"), namespace)
    assert namespace["out"].images.shape == (3, 3, 32, 32)
    assert (tmp_path / "my-model" / "var" / "model.safetensors").is_file()
    assert namespace["var"].head.weight.is_meta  # the last line builds var-d16 shapes only


def test_the_shipped_digits_split_is_scikit_learns():
    import numpy as np
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    from nextscale.data import digits_splits

    digits = load_digits()
    x_tr, x_te, y_tr, y_te = train_test_split(
        digits.images, digits.target, test_size=0.2, random_state=0, stratify=digits.target
    )
    train, test = digits_splits(0)
    assert np.array_equal(train.images8, x_tr) and np.array_equal(train.labels, y_tr)
    assert np.array_equal(test.images8, x_te) and np.array_equal(test.labels, y_te)


@pytest.mark.slow
def test_the_small_digits_model_takes_over_the_fine_scales():
    vae, var = load_model("digits")
    small_vae, small = load_model("digits-small")  # strict, and on the digits tokenizer
    assert all(torch.equal(a, b) for a, b in zip(vae.state_dict().values(), small_vae.state_dict().values()))
    plain = sample(vae, var, [7] * 4, seed=3)
    handed = sample(vae, var, [7] * 4, seed=3, fine_var=small, handoff=4)
    assert all(torch.equal(a, b) for a, b in zip(plain.tokens[:4], handed.tokens[:4]))
    assert not all(torch.equal(a, b) for a, b in zip(plain.tokens[4:], handed.tokens[4:]))
