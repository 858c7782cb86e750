"""Evaluation offline: every metric against a direct numpy/scipy computation, precomputed statistics against the
images they came from, the Inception Score's order trap, and the per-class sampler (shards, resume, shuffle,
rejection). Small exported networks stand in for Inception, so nothing is downloaded."""

import json

import numpy as np
import pytest
import torch
from scipy import linalg
from scipy.spatial.distance import cdist

from nextscale.cli import main
from nextscale.errors import NextscaleError
from nextscale.evaluation import (
    Statistics,
    evaluate,
    frechet_distance,
    inception_score,
    kernel_distance,
    load_network,
    open_set,
    precision_recall,
)
from nextscale.sampling import image_seed, sample, sample_per_class
from nextscale.sampling.outputs import to_uint8
from nextscale.weights import load_model

pytestmark = pytest.mark.cpu_only


class ChannelMoments(torch.nn.Module):
    """uint8 images → 8 features from per-channel means and spreads, mixed by a fixed random matrix."""

    def __init__(self):
        super().__init__()
        self.mix = torch.nn.Linear(6, 8)
        torch.nn.init.normal_(self.mix.weight, generator=torch.Generator().manual_seed(0))

    def forward(self, images):
        x = images.float().div(255)
        return self.mix(torch.cat((x.mean(dim=(2, 3)), x.std(dim=(2, 3))), dim=1))


def export(module: torch.nn.Module, path, side: int):
    batch = torch.export.Dim("batch", min=1)
    example = (torch.zeros(2, 3, side, side, dtype=torch.uint8),)
    torch.export.save(torch.export.export(module, example, dynamic_shapes=({0: batch},)), path)
    return path


@pytest.fixture(scope="module")
def features_file(tmp_path_factory):
    return export(ChannelMoments(), tmp_path_factory.mktemp("net") / "moments.pt2", 16)


def random_images(n: int, seed: int, side: int = 16, shift: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return np.clip(rng.integers(0, 200, (n, side, side, 3)) + shift, 0, 255).astype(np.uint8)


# --- the metrics against direct computations ------------------------------------------------------------------


def direct_fid(a: np.ndarray, b: np.ndarray) -> float:
    mu_a, mu_b, cov_a, cov_b = a.mean(0), b.mean(0), np.cov(a, rowvar=False), np.cov(b, rowvar=False)
    return float(((mu_a - mu_b) ** 2).sum() + np.trace(cov_a + cov_b - 2 * linalg.sqrtm(cov_a @ cov_b).real))


def direct_mmd(a: np.ndarray, b: np.ndarray) -> float:
    """Unbiased MMD² with the cubic polynomial kernel (x·y/d + 1)³, KID's estimator."""
    kernel = lambda x, y: (x @ y.T / a.shape[1] + 1) ** 3  # noqa: E731
    m = len(a)
    off = lambda k: (k.sum() - np.trace(k)) / (m * (m - 1))  # noqa: E731
    return float(off(kernel(a, a)) + off(kernel(b, b)) - 2 * kernel(a, b).mean())


def direct_precision_recall(samples: np.ndarray, real: np.ndarray, k: int = 3) -> tuple[float, float]:
    radius = lambda x: np.sort(cdist(x, x), axis=1)[:, k]  # noqa: E731 (column 0 is the point itself)
    d = cdist(samples, real)
    precision = (d <= radius(real)[None, :]).any(axis=1).mean()
    recall = (d.T <= radius(samples)[None, :]).any(axis=1).mean()
    return float(precision), float(recall)


@pytest.fixture(scope="module")
def feature_sets():
    rng = np.random.default_rng(0)
    return rng.normal(size=(400, 16)), rng.normal(0.3, 1.2, size=(400, 16))


def test_fid_of_a_set_with_itself_is_zero_and_matches_scipy(feature_sets):
    a, b = feature_sets
    sa, sb = Statistics.of(a, "f"), Statistics.of(b, "f")
    assert abs(frechet_distance(sa, sa)) < 1e-8
    assert frechet_distance(sa, sb) == pytest.approx(direct_fid(a, b), rel=1e-6)


def test_kid_and_precision_recall_match_direct_computations(feature_sets):
    a, b = feature_sets
    mean, std, size = kernel_distance(a, b, subsets=3, subset_size=len(a))  # whole sets: no sampling left
    assert size == len(a) and std == pytest.approx(0, abs=1e-12)
    assert mean == pytest.approx(direct_mmd(a, b), rel=1e-6)
    assert precision_recall(a, b) == pytest.approx(direct_precision_recall(a, b), abs=1e-6)  # shares of 400
    assert precision_recall(a, a) == (1.0, 1.0)


def test_inception_score_of_a_class_ordered_file_is_far_lower_than_shuffled():
    rng = np.random.default_rng(0)
    labels = np.repeat(np.arange(4), 100)
    logits = np.eye(4)[labels] * 8 + rng.normal(size=(400, 4))
    ordered, _ = inception_score(logits, block=100)  # each block holds one class: IS ≈ 1
    shuffled, _ = inception_score(logits[rng.permutation(400)], block=100)
    assert ordered < 1.5 and shuffled > 3


# --- sets, statistics and networks -----------------------------------------------------------------------------


def test_reference_statistics_give_the_fid_of_their_images(tmp_path, features_file):
    net = load_network(features_file)
    ref, samples = random_images(120, 1), random_images(90, 2, shift=30)
    np.savez(tmp_path / "ref.npz", arr_0=ref)
    np.savez(tmp_path / "samples.npz", arr_0=samples)
    from_images = evaluate(tmp_path / "samples.npz", tmp_path / "ref.npz", net, metrics=["fid"], progress=False)
    evaluate(tmp_path / "ref.npz", None, net, metrics=[], save_stats=tmp_path / "stats.npz", progress=False)
    with np.load(tmp_path / "stats.npz") as z:
        assert z["mu"].dtype == np.float64 and z["sigma"].dtype == np.float64
        np.savez(tmp_path / "both.npz", arr_0=ref, mu=z["mu"], sigma=z["sigma"], features=z["features"])
    for ref_file in ("stats.npz", "both.npz"):
        result = evaluate(tmp_path / "samples.npz", tmp_path / ref_file, net, metrics=["fid"], progress=False)
        assert result["metrics"]["fid"] == pytest.approx(from_images["metrics"]["fid"], rel=1e-9)
        assert result["settings"]["fid_ref"].startswith("precomputed")
    # the images of a file with statistics serve precision/recall
    both = evaluate(tmp_path / "samples.npz", tmp_path / "both.npz", net, progress=False)
    assert set(both["metrics"]) == {"fid", "is", "is_std", "precision", "recall", "kid", "kid_std"}


def test_a_folder_and_an_npz_of_the_same_images_give_the_same_features(tmp_path, features_file):
    from PIL import Image

    images = random_images(7, 3)
    (tmp_path / "pngs").mkdir()
    for i, image in enumerate(images):
        Image.fromarray(image).save(tmp_path / "pngs" / f"{i:06d}.png")
    np.savez(tmp_path / "same.npz", arr_0=images)
    batches = lambda s: torch.cat(list(open_set(s).batches(3)))  # noqa: E731
    assert torch.equal(batches(tmp_path / "pngs"), batches(tmp_path / "same.npz"))
    assert open_set(tmp_path / "same.npz").count == 7


def test_an_exported_network_that_fails_or_misbehaves_is_named(tmp_path, features_file):
    net = load_network(features_file)
    with pytest.raises(NextscaleError, match="moments.pt2 failed on a batch of"):
        net(torch.zeros(2, 3, 9, 9, dtype=torch.uint8))  # exported for 16×16
    flat = export(torch.nn.Flatten(0), tmp_path / "flat.pt2", 4)
    with pytest.raises(NextscaleError, match="must return N×D features"):
        load_network(flat)(torch.zeros(2, 3, 4, 4, dtype=torch.uint8))


@pytest.fixture(scope="module")
def fake_inception(tmp_path_factory):
    """torch-fidelity's Inception with random weights, saved as its weights file: the real code path, offline."""
    from unittest import mock

    from torch_fidelity import feature_extractor_inceptionv3 as tfi

    with (
        mock.patch.object(tfi, "load_state_dict_from_url", lambda *a, **k: {}),
        mock.patch.object(tfi.FeatureExtractorInceptionV3, "load_state_dict", lambda self, sd: None),
    ):
        net = tfi.FeatureExtractorInceptionV3("inception-v3-compat", ["2048"])
    path = tmp_path_factory.mktemp("inception") / "weights-inception-2015-12-05-6726825d.pth"
    torch.save(net.state_dict(), path)
    return path


def test_inception_features_and_an_adm_reference_batch(tmp_path, fake_inception):
    net = load_network("inception", inception_weights=fake_inception)
    features, logits = net(torch.from_numpy(random_images(2, 0, side=32)).permute(0, 3, 1, 2))
    assert features.shape == (2, 2048) and logits.shape == (2, 1008)
    ref, samples = random_images(5, 1, side=32), random_images(4, 2, side=32, shift=40)
    np.savez(tmp_path / "ref.npz", arr_0=ref)
    np.savez(tmp_path / "samples.npz", arr_0=samples)
    evaluate(tmp_path / "ref.npz", None, net, metrics=[], save_stats=tmp_path / "stats.npz", progress=False)
    with np.load(tmp_path / "stats.npz") as z:  # the ADM layout: images, float64 mu/sigma, no feature name
        np.savez(tmp_path / "VIRTUAL_like.npz", arr_0=ref, mu=z["mu"], sigma=z["sigma"])
    direct = evaluate(tmp_path / "samples.npz", tmp_path / "ref.npz", net, metrics=["fid"], progress=False)
    adm = evaluate(tmp_path / "samples.npz", tmp_path / "VIRTUAL_like.npz", net, metrics=["fid"], progress=False)
    assert adm["metrics"]["fid"] == pytest.approx(direct["metrics"]["fid"], rel=1e-9)


def test_offline_inception_error_is_one_line_naming_the_file(tmp_path, monkeypatch, capsys):
    def offline(*args, **kwargs):
        raise OSError("<urlopen error [Errno -3] Temporary failure in name resolution>")

    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path / "hub"))
    monkeypatch.setattr(torch.hub, "download_url_to_file", offline)
    assert main(["eval", "digits", "--device", "cpu"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1
    assert "weights-inception-2015-12-05-6726825d.pth" in err and str(tmp_path / "hub" / "checkpoints") in err
    assert "--inception-weights" in err


# --- the per-class sampler ---------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def digits_model():
    return load_model("digits")


def per_class(out, digits_model, **kwargs):
    vae, var = digits_model
    options = dict(per_class=3, classes=[2, 5, 7], seed=4, batch_size=4, shard_size=4, progress=False) | kwargs
    return sample_per_class(vae, var, out, **options)


def read(path):
    with np.load(path) as z:
        return z["arr_0"], z["arr_1"]


@pytest.fixture(scope="module")
def whole_run(tmp_path_factory, digits_model):
    return read(per_class(tmp_path_factory.mktemp("whole"), digits_model))


def test_per_class_samples_are_shuffled_and_each_image_depends_on_its_seed_only(tmp_path, whole_run, digits_model):
    images, labels = whole_run
    assert images.shape == (9, 32, 32, 3) and sorted(labels) == [2, 2, 2, 5, 5, 5, 7, 7, 7]
    assert list(labels) != sorted(labels)  # shuffled, with the labels kept aligned:
    order = np.random.default_rng(4).permutation(9)
    for position in (0, 4):
        cls, index = [2, 5, 7][order[position] // 3], order[position] % 3
        assert labels[position] == cls
        vae, var = digits_model
        alone = to_uint8(sample(vae, var, [cls], seed=image_seed(4, cls, index)).images)[0]
        assert np.abs(alone.astype(int) - images[position]).max() <= 2  # tokens equal; decode bits may differ
    other_batching = read(per_class(tmp_path, digits_model, batch_size=3, shard_size=5))
    assert np.abs(other_batching[0].astype(int) - images).max() <= 2


def test_a_stopped_run_resumes_with_no_image_missing_or_drawn_twice(tmp_path, whole_run, digits_model, monkeypatch):
    from nextscale.sampling import per_class as module

    real, drawn = module._draw_shard, []

    def stop_after_one(out, k, *args, **kwargs):
        if drawn:
            (out / "shards" / ".shard-00002.npy.crashed.tmp").write_bytes(b"half")  # what a kill leaves
            raise KeyboardInterrupt
        drawn.append(k)
        return real(out, k, *args, **kwargs)

    monkeypatch.setattr(module, "_draw_shard", stop_after_one)
    with pytest.raises(KeyboardInterrupt):
        per_class(tmp_path, digits_model)
    assert not (tmp_path / "samples.npz").exists()
    monkeypatch.setattr(module, "_draw_shard", lambda out, k, *a, **kw: drawn.append(k) or real(out, k, *a, **kw))
    images, labels = read(per_class(tmp_path, digits_model))
    assert sorted(drawn) == [0, 1, 2]  # shard 0 once, the rest on the rerun
    assert np.array_equal(images, whole_run[0]) and np.array_equal(labels, whole_run[1])
    record = json.loads((tmp_path / "samples.json").read_text())
    assert record["complete"] and record["count"] == 9 and len(record["runs"]) == 2
    assert not (tmp_path / "shards").exists()
    with pytest.raises(NextscaleError, match="other settings \\(seed"):
        per_class(tmp_path, digits_model, seed=5)


def test_rejection_keeps_the_candidates_the_classifier_is_most_sure_of(tmp_path, digits_model):
    def darkness(images):  # a "classifier": darker images are more confidently class 7
        ink = 1 - images.float().mean(dim=(1, 2, 3)) / 255
        return torch.stack([torch.zeros_like(ink)] * 7 + [ink * 50], dim=1)

    kept = per_class(tmp_path / "kept", digits_model, classes=[7], per_class=2, scorer=darkness, keep_top=0.5)
    everything = per_class(tmp_path / "all", digits_model, classes=[7], per_class=4)  # the same 4 candidates
    candidates, _ = read(everything)
    ink = darkness(torch.from_numpy(candidates).permute(0, 3, 1, 2))[:, 7]
    darkest = candidates[ink.argsort(descending=True)[:2].numpy()]
    images, _ = read(kept)
    assert sorted(map(bytes, images)) == sorted(map(bytes, darkest))
    record = json.loads((tmp_path / "kept" / "samples.json").read_text())
    assert record["candidates_drawn"] == 4 and record["count"] == 2 and record["plan"]["keep_top"] == 0.5


def test_the_digits_protocol_from_the_command_line(tmp_path, features_file, capsys):
    out = tmp_path / "digits"
    assert main(["sample", "--model", "digits", "--per-class", "4", "--out", str(out), "--png", "--device", "cpu"]) == 0
    assert len(list((out / "png").glob("*.png"))) == 40
    record = json.loads((out / "samples.json").read_text())
    assert record["plan"]["sampler"] == {
        "cfg": 1.5,
        "cfg_schedule": "linear",
        "top_k": 900,
        "top_p": 0.96,
        "more_smooth": False,
    }
    assert record["runs"][0]["world_size"] == 1 and "torch" in record["runs"][0]["versions"]
    report = tmp_path / "r.json"
    argv = ["eval", str(out / "samples.npz"), "--ref", "digits", "--features", "digits", "--json", str(report)]
    assert main(argv) == 0
    printed = capsys.readouterr().out
    for name in ("FID", "IS", "precision", "recall", "KID"):
        assert name in printed
    result = json.loads(report.read_text())
    assert result["settings"]["features"] == "digits" and result["metrics"]["fid"] > 0
    # any exported network serves every metric
    np.savez(tmp_path / "ref16.npz", arr_0=random_images(30, 5))
    np.savez(tmp_path / "s16.npz", arr_0=random_images(20, 6, shift=20))
    assert (
        main(
            [
                "eval",
                str(tmp_path / "s16.npz"),
                "--ref",
                str(tmp_path / "ref16.npz"),
                "--features",
                str(features_file),
                "--metrics",
                "fid,is,prc,kid",
            ]
        )
        == 0
    )
    assert "KID" in capsys.readouterr().out


def test_the_exported_digits_network_is_the_built_in_one_and_serves_rejection(tmp_path, capsys):
    from nextscale.evaluation.digits import export_digits_network

    path = export_digits_network(tmp_path / "digits.pt2")
    images = next(open_set("digits").batches(50))
    built_in, exported = load_network("digits")(images), load_network(path)(images)
    for a, b in zip(built_in, exported):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-5)
    argv = [
        "sample",
        "--model",
        "digits",
        "--per-class",
        "3",
        "--class",
        "1",
        "--reject",
        str(path),
        "--keep-top",
        "0.5",
        "--out",
        str(tmp_path / "kept"),
        "--device",
        "cpu",
    ]
    assert main(argv) == 0
    assert "3 images in shuffled order, from 6 drawn" in capsys.readouterr().out
    record = json.loads((tmp_path / "kept" / "samples.json").read_text())
    assert record["plan"]["model"]["classifier"]["file"] == str(path)


def test_two_processes_write_the_samples_file_of_one(tmp_path):
    from tests.test_distributed import run

    args = [
        "sample",
        "--model",
        "digits",
        "--per-class",
        "3",
        "--batch-size",
        "4",
        "--shard-size",
        "4",
        "--device",
        "cpu",
        "--seed",
        "7",
    ]
    run([*args, "--out", str(tmp_path / "one")], nproc=1)
    run([*args, "--out", str(tmp_path / "two")], nproc=2)
    one, two = read(tmp_path / "one" / "samples.npz"), read(tmp_path / "two" / "samples.npz")
    assert np.array_equal(one[0], two[0]) and np.array_equal(one[1], two[1])
    record = json.loads((tmp_path / "two" / "samples.json").read_text())
    assert record["runs"][0]["world_size"] == 2 and record["count"] == 30
    # A refusal reaches every process (torchrun then exits 1): none is left waiting for the others.
    refused = run([*args[:-1], "8", "--out", str(tmp_path / "two")], nproc=2, expect=1)
    assert refused.stderr.count("holds samples drawn with other settings (seed: 7 there, 8 now)") == 2


class Payload:
    """What a crafted file would unpickle: its __reduce__ runs code."""

    def __reduce__(self):
        return (print, ("code ran while loading a feature network",))


def test_a_pt2_carrying_a_pickled_object_is_refused_unloaded(tmp_path, features_file, capsys):
    import io
    import zipfile

    crafted = tmp_path / "crafted.pt2"
    payload = io.BytesIO()
    torch.save(Payload(), payload)
    with zipfile.ZipFile(features_file) as src, zipfile.ZipFile(crafted, "w") as dst:
        config_name = next(n for n in src.namelist() if n.endswith("weights/model_weights_config.json"))
        config = json.loads(src.read(config_name))
        entry = next(iter(config["config"].values()))
        entry["use_pickle"] = True  # the weight's bytes are now read as a pickle
        for item in src.infolist():
            data = src.read(item.filename)
            if item.filename == config_name:
                data = json.dumps(config).encode()
            elif item.filename.endswith(f"weights/{entry['path_name']}"):
                data = payload.getvalue()
            dst.writestr(item, data)
    with pytest.raises(NextscaleError, match="crafted.pt2: not a loadable .pt2 program"):
        load_network(crafted)
    assert "code ran" not in capsys.readouterr().out
