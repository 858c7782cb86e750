"""Evaluation offline: every metric against a direct numpy/scipy computation, precomputed statistics against the
images they came from, the Inception Score's order trap, and the per-class sampler (shards, resume, shuffle,
rejection). Small exported networks stand in for Inception, so nothing is downloaded."""

import io
import json
import pickle
import sys
import threading
import zipfile
from concurrent.futures import ThreadPoolExecutor

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
from nextscale.evaluation.judge import export_digits_network
from nextscale.sampling import image_seed, sample, sample_many, sample_per_class
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


@pytest.mark.slow
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


@pytest.mark.slow
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


@pytest.fixture(scope="module")
def digits_file(tmp_path_factory):
    return export_digits_network(tmp_path_factory.mktemp("judge") / "digits.pt2")


def test_the_exported_digits_network_is_the_built_in_one_and_serves_rejection(tmp_path, digits_file, capsys):
    path = digits_file
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


@pytest.mark.distributed
def test_two_processes_write_the_samples_file_of_one(tmp_path):
    from tests.helpers import run_nextscale as run

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


def craft(source, target, change):
    """A copy of the archive `source` with `change(name, bytes)` → [(name, bytes), …] applied to each member."""
    with zipfile.ZipFile(source) as src, zipfile.ZipFile(target, "w") as dst:
        for item in src.infolist():
            for name, data in change(item.filename, src.read(item.filename)):
                dst.writestr(name, data)
    return target


def pickled_weight(name, data):
    if name.endswith("weights/model_weights_config.json"):
        config = json.loads(data)
        next(iter(config["config"].values()))["use_pickle"] = True  # its bytes are now read as a pickle
        return [(name, json.dumps(config).encode())]
    return [(name, torch_saved(Payload()) if name.endswith("weights/weight_0") else data)]


def pickled_constant(name, data):
    if name.endswith("constants/model_constants_config.json"):
        config = json.loads(data)
        config["config"]["opaque"] = {"path_name": "opaque_obj_0", "is_param": False, "use_pickle": True}
        folder = name.partition("/")[0]
        return [(name, json.dumps(config).encode()), (f"{folder}/data/constants/opaque_obj_0", pickle.dumps(Payload()))]
    return [(name, data)]


def legacy_weights(name, data):
    extra = [(f"{name.partition('/')[0]}/data/weights/model.pt", torch_saved(Payload()))] if "byteorder" in name else []
    return [(name, data), *extra]


def outside_the_folder(name, data):  # torch.export.load would fall back to its older format, which unpickles
    return [(name, data), ("version", b"0.0.1")] if "byteorder" in name else [(name, data)]


def torch_saved(obj) -> bytes:
    buffer = io.BytesIO()
    torch.save(obj, buffer)
    return buffer.getvalue()


CRAFTED = {
    "a weight saved with use_pickle": (pickled_weight, r"pickled Python objects \(weight mix\.weight\)"),
    "an opaque constant": (pickled_constant, r"pickled Python objects \(constant opaque\)"),
    "pickled sample inputs": (
        lambda n, d: [(n, torch_saved(Payload()) if n.endswith("sample_inputs/model.pt") else d)],
        r"pickled Python objects \(its sample inputs\)",
    ),
    "legacy weights": (legacy_weights, r"pickled Python objects \(data/weights/model\.pt\)"),
    "a member outside the folder": (outside_the_folder, "not a torch.export archive \\(version is outside"),
}


@pytest.mark.parametrize("case", list(CRAFTED))
def test_a_pt2_carrying_a_pickled_object_is_refused_unloaded(tmp_path, features_file, capsys, case):
    change, message = CRAFTED[case]
    crafted = craft(features_file, tmp_path / "crafted.pt2", change)
    with pytest.raises(NextscaleError, match=f"crafted.pt2: .*{message}"):
        load_network(crafted)
    assert "code ran" not in capsys.readouterr().out


def test_a_pt2_of_a_tensor_subclass_weight_is_refused(tmp_path):
    from torch.testing._internal.two_tensor import TwoTensor

    class Twofold(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.w = torch.nn.Parameter(TwoTensor(torch.ones(3), torch.ones(3)))

        def forward(self, images):
            return images.float().mean(dim=(2, 3)) + self.w

    path = export(Twofold(), tmp_path / "twofold.pt2", 4)  # torch.export.save pickles such weights
    with pytest.raises(NextscaleError, match=r"pickled Python objects \(weight w\)"):
        load_network(path)


ORIGINALS = (pickle.loads, torch.load, torch._C._pickle_load_obj)


def load_while_another_thread_unpickles(load):
    """`load()` in one thread, paused at its first `torch.load`, while another thread unpickles a plain dict again
    and again: a loader that swapped any unpickling function process-wide would break the other thread."""
    paused, resume, reached = threading.Event(), threading.Event(), []
    plain = {"a": [1, 2.5, "x"], "b": (None, True), "t": torch.arange(3)}

    def pause_at_torch_load(frame, event, arg):
        if event == "call" and frame.f_code is ORIGINALS[1].__code__ and not reached:
            reached.append(frame.f_code.co_name)
            paused.set()
            resume.wait()
            sys.settrace(None)  # the rest of the loading runs untraced

    def loader():
        sys.settrace(pause_at_torch_load)
        try:
            return load()
        finally:
            sys.settrace(None)
            paused.set()  # a loader that never reached torch.load must not leave the other thread waiting

    def unpickler():
        try:
            paused.wait()
            saved = torch_saved(plain)
            for _ in range(20):
                assert (pickle.loads, torch.load, torch._C._pickle_load_obj) == ORIGINALS
                assert pickle.loads(pickle.dumps(plain)).keys() == plain.keys()
                assert torch.equal(torch.load(io.BytesIO(saved), weights_only=False)["t"], plain["t"])
        finally:
            resume.set()

    with ThreadPoolExecutor(2) as pool:
        loading, other = pool.submit(loader), pool.submit(unpickler)
        other.result()
        network = loading.result()
    assert reached, "the loader never reached torch.load, so nothing overlapped"
    assert all(a is b for a, b in zip((pickle.loads, torch.load, torch._C._pickle_load_obj), ORIGINALS))
    return network


@pytest.mark.slow
def test_loading_a_network_patches_nothing_another_thread_unpickles_with(digits_file, fake_inception):
    images = torch.zeros(2, 3, 32, 32, dtype=torch.uint8)
    exported = load_while_another_thread_unpickles(lambda: load_network(digits_file))
    assert exported(images)[1].shape == (2, 10)
    inception = load_while_another_thread_unpickles(lambda: load_network("inception", inception_weights=fake_inception))
    assert inception(images)[0].shape == (2, 2048)


def test_a_folder_of_transparent_and_16_bit_images_is_read_as_they_show(tmp_path):
    """The folder reader converts as every reader of a user's images does (`nextscale.data.to_rgb`)."""
    from PIL import Image

    rgba = np.zeros((4, 4, 4), np.uint8)
    rgba[..., 0], rgba[2:, :, 3] = 200, 255  # top half transparent
    Image.fromarray(rgba, "RGBA").save(tmp_path / "0.png")
    Image.fromarray(np.full((4, 4), 32896, np.uint16)).save(tmp_path / "1.png")  # 16-bit grey, mid-grey
    images = torch.cat(list(open_set(tmp_path).batches(2))).permute(0, 2, 3, 1)
    assert images[0, 0, 0].tolist() == [255, 255, 255] and images[0, -1, 0].tolist() == [200, 0, 0]
    assert images[1, 0, 0].tolist() == [128, 128, 128]


# --- your own images: class folders, other sizes, nextscale sample's folders --------------------------------------


def save_pngs(folder, images, names=None):
    from PIL import Image

    folder.mkdir(parents=True, exist_ok=True)
    for i, image in enumerate(images):
        Image.fromarray(image).save(folder / (names[i] if names else f"{i:06d}.png"))


def test_a_class_folder_tree_is_read_as_training_reads_it(tmp_path):
    """Sub-folders too, every file type training reads (a .tif and a .ppm here), hidden folders and files not."""
    images = random_images(4, 5)
    save_pngs(tmp_path / "ref" / "cat", images[:2], ["a.png", "b.tif"])
    save_pngs(tmp_path / "ref" / "dog", images[2:], ["c.ppm", "d.png"])
    save_pngs(tmp_path / "ref" / ".thumbnails", random_images(1, 6), ["e.png"])
    save_pngs(tmp_path / "ref" / "dog", random_images(1, 7), ["._d.png"])
    ref = open_set(tmp_path / "ref", "--ref")
    assert ref.count == 4 and ref.notes == []
    assert torch.equal(torch.cat(list(ref.batches(3))), torch.from_numpy(images).permute(0, 3, 1, 2))


def test_images_of_another_size_are_brought_to_the_samples_size_as_training_reads_them(tmp_path, features_file):
    from nextscale.data import ImageFolderDataset

    save_pngs(tmp_path / "ref" / "x", random_images(3, 8))
    save_pngs(tmp_path / "ref" / "x", [random_images(1, 9, side=40)[0][:, :28]], ["wide.png"])  # 28 wide, 40 high
    np.savez(tmp_path / "samples.npz", arr_0=random_images(6, 10))
    result = evaluate(tmp_path / "samples.npz", tmp_path / "ref", load_network(features_file), progress=False)
    assert result["metrics"]["fid"] >= 0 and result["settings"]["ref_count"] == 4
    (note,) = result["settings"]["notes"]
    assert "1 of 4 images are not 16×16: resized and centre-cropped" in note
    # the pixels a model trained on that folder would see at 16×16 (its evaluation crop), as uint8
    trained = ImageFolderDataset(tmp_path / "ref", 16, train=False)[3][0].add(1).mul(127.5).round().to(torch.uint8)
    assert torch.equal(torch.cat(list(open_set(tmp_path / "ref", "--ref", (16, 16)).batches(4)))[3], trained)
    # a sample folder of mixed sizes: the size most of them have
    assert open_set(tmp_path / "ref" / "x").size == (16, 16)


def test_a_nextscale_sample_folder_is_read_through_its_samples_npz_not_grid_png(tmp_path, digits_model):
    vae, var = digits_model
    out = tmp_path / "out"
    sample_many(vae, var, [1, 2, 3], seed=1, out_dir=out, progress=False)  # what `nextscale sample --out` runs
    assert (out / "grid.png").is_file()
    drawn = open_set(out)
    assert drawn.source == str(out / "samples.npz") and drawn.count == 3 and drawn.size == (32, 32)
    assert drawn.notes == [f"SAMPLES {out}: read samples.npz, the samples nextscale sample wrote there (not its PNGs)"]
    expected = torch.from_numpy(read(out / "samples.npz")[0]).permute(0, 3, 1, 2)
    assert torch.equal(torch.cat(list(drawn.batches(2))), expected)
    (out / "samples.npz").unlink()  # a run that has not finished: its PNGs are not all the samples
    with pytest.raises(NextscaleError, match="holds no samples.npz yet: the run has not finished"):
        open_set(out)


@pytest.mark.slow
def test_eval_of_a_sample_folder_from_the_command_line_says_what_it_read(tmp_path, capsys):
    out = tmp_path / "out"
    assert main(["sample", "--model", "digits", "--n", "3", "--seed", "1", "--out", str(out), "--device", "cpu"]) == 0
    net = export(ChannelMoments(), tmp_path / "moments32.pt2", 32)
    capsys.readouterr()
    assert main(["eval", str(out), "--ref", "digits", "--features", str(net), "--metrics", "fid"]) == 0
    printed = capsys.readouterr().out
    assert f"{out / 'samples.npz'} (3) vs digits" in printed and "note: SAMPLES" in printed and "FID" in printed


@pytest.mark.slow
def test_the_digits_preset_reports_what_the_fashion_preset_reports(tmp_path, capsys):
    """Both presets go through one evaluation: the digits one also prints FID, IS, precision/recall and KID beside
    the real floor, its unguided accuracy, and the edits with the change outside the box (a tiny 10-class model)."""
    from dataclasses import replace

    from nextscale.registry import architecture
    from nextscale.tokenizer import VQVAE
    from nextscale.transformer import VAR
    from nextscale.weights import save_model
    from tests.helpers import randomize_

    vae_config, var_config = architecture("tiny")
    vae = VQVAE(replace(vae_config, ch_mult=(1, 2, 2), patch_nums=(1, 2, 4, 8)))
    var = VAR(replace(var_config, num_classes=10, patch_nums=(1, 2, 4, 8)))
    save_model(randomize_(vae, seed=1, std=0.1).eval(), randomize_(var, seed=2).eval(), tmp_path / "m")
    report = tmp_path / "r.json"
    argv = ["eval", "--preset", "digits", "--model", str(tmp_path / "m"), "--n-per-class", "2", "--edit-limit", "4"]
    assert main([*argv, "--device", "cpu", "--json", str(report)]) == 0
    printed = capsys.readouterr().out
    for name in ("FID", "IS", "precision", "recall", "KID", "real floor", "unguided", "outside the box"):
        assert name in printed, name
    record = json.loads(report.read_text())
    assert record["compared"]["test"] == "digits" and record["compared"]["test_count"] == 360
    assert record["compared"]["floor"] == "digits-train" and record["compared"]["floor_count"] == 1437
    assert record["unguided_accuracy"] is not None and record["classifier_test_accuracy"] > 0.98
    assert record["samples"]["fid"] > record["floor"]["fid"] > 0  # random weights are far from real digits
    assert record["edits"]["n"] == 4 and record["edits"]["preset"] == "digits" and record["options"]["edit_cfg"] == 3
