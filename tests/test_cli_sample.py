"""`nextscale sample`: outputs, and a one-line error with exit code 2 for each kind of bad input."""

import shutil
import subprocess
import sysconfig

import numpy as np
import pytest
from PIL import Image

from nextscale import load_model, sample, save_model
from nextscale.cli import main
from nextscale.sampling.outputs import to_uint8
from nextscale.seeding import batch_generator


@pytest.fixture
def model_dir(tiny_models, tmp_path):
    return save_model(*tiny_models, tmp_path / "tiny")


def run_cli(capsys, *argv):
    code = main([str(a) for a in argv])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def test_sample_writes_pngs_grid_and_npz(model_dir, tmp_path, capsys, device):
    args = [
        "sample",
        "--model",
        model_dir,
        "--class",
        "0,2",
        "3",
        "--n",
        "2",
        "--batch-size",
        "4",
        "--seed",
        "1",
        "--cfg",
        "2",
        "--top-k",
        "8",
        "--device",
        device,
    ]
    out = tmp_path / "out"
    code, stdout, _ = run_cli(capsys, *args, "--out", out)
    assert code == 0 and "wrote 6 images" in stdout
    pngs = sorted(out.glob("0*.png"))
    assert len(pngs) == 6
    assert Image.open(pngs[0]).size == (8, 8)
    assert Image.open(out / "grid.png").mode == "RGB"
    npz = np.load(out / "samples.npz")
    assert npz["arr_0"].shape == (6, 8, 8, 3) and npz["arr_0"].dtype == np.uint8
    assert npz["arr_1"].tolist() == [0, 0, 2, 2, 3, 3]
    # the same seed gives the same images, whatever else ran before
    code, _, _ = run_cli(capsys, *args, "--out", tmp_path / "again")
    assert code == 0 and np.array_equal(np.load(tmp_path / "again" / "samples.npz")["arr_0"], npz["arr_0"])
    # batch 0 is `sample(seed=S)` itself; batch 1 has its own seed, derived from (S, 1)
    vae, var = load_model(model_dir, device=device)
    first = sample(vae, var, [0, 0, 2, 2], seed=1, cfg=2.0, top_k=8)
    assert np.array_equal(npz["arr_0"][:4], to_uint8(first.images))
    second = sample(vae, var, [3, 3], generator=batch_generator(1, 1, device), cfg=2.0, top_k=8)
    assert np.array_equal(npz["arr_0"][4:], to_uint8(second.images))


def test_a_rerun_replaces_what_the_last_run_wrote(model_dir, tmp_path, capsys):
    out = tmp_path / "out"
    (out / "notes").mkdir(parents=True)
    (out / "mine.txt").write_text("a file of the user's")
    assert run_cli(capsys, "sample", "--model", model_dir, "--n", "5", "--out", out)[0] == 0
    assert len(list(out.glob("0*.png"))) == 5
    code, stdout, _ = run_cli(capsys, "sample", "--model", model_dir, "--n", "2", "--seed", "3", "--out", out)
    assert code == 0 and "removed 7 file(s) an earlier nextscale run wrote there" in stdout
    assert sorted(p.name for p in out.glob("0*.png")) == ["000000.png", "000001.png"]  # no stale 000002-4
    assert len(np.load(out / "samples.npz")["arr_0"]) == 2
    assert (out / "mine.txt").read_text() == "a file of the user's" and (out / "notes").is_dir()


def test_random_classes_are_drawn_by_the_sampler_as_the_reference_does(model_dir, tmp_path, capsys, device):
    """Without --class, one batch draws its labels from the seeded generator: `label_B=None, g_seed=S`."""
    args = ["sample", "--model", model_dir, "--n", "3", "--seed", "7", "--device", device, "--out", tmp_path / "o"]
    assert run_cli(capsys, *args)[0] == 0
    vae, var = load_model(model_dir, device=device)
    reference_like = sample(vae, var, None, batch_size=3, seed=7)
    npz = np.load(tmp_path / "o" / "samples.npz")
    assert npz["arr_1"].tolist() == reference_like.labels.tolist()
    assert np.array_equal(npz["arr_0"], to_uint8(reference_like.images))


def test_console_script_is_installed():
    exe = shutil.which("nextscale", path=sysconfig.get_path("scripts")) or shutil.which("nextscale")
    assert exe, "the nextscale console script is not on PATH"
    proc = subprocess.run([exe, "sample", "--help"], capture_output=True, text=True)
    assert proc.returncode == 0 and "--cfg-schedule" in proc.stdout


def test_an_interrupted_run_leaves_no_partial_file_and_stops_as_asked(model_dir, tmp_path, monkeypatch):
    import nextscale.sampling.batches as batches

    vae, var = load_model(model_dir)
    calls = []

    def stop_at_the_second_batch(*args, **kwargs):
        calls.append(1)
        if len(calls) == 2:
            raise KeyboardInterrupt
        return sample(*args, **kwargs)

    monkeypatch.setattr(batches, "sample", stop_at_the_second_batch)
    with pytest.raises(KeyboardInterrupt):
        batches.sample_many(vae, var, [0, 1, 2, 3], batch_size=2, out_dir=tmp_path / "o", progress=False)
    assert not list((tmp_path / "o").glob("*.partial")) and not (tmp_path / "o" / "samples.npz").exists()


def test_bad_settings_are_refused_before_the_last_run_is_cleared(model_dir, tmp_path, capsys):
    from nextscale import NextscaleError
    from nextscale.sampling import sample_many

    assert run_cli(capsys, "sample", "--model", model_dir, "--n", "2", "--out", tmp_path / "o")[0] == 0
    vae, var = load_model(model_dir)
    for bad in (dict(top_k=-1), dict(compile="bogus"), dict(batch_size=1.5), dict(count=0, labels=None)):
        kwargs = {"labels": [0, 1], **bad}
        with pytest.raises(NextscaleError):
            sample_many(vae, var, kwargs.pop("labels"), out_dir=tmp_path / "o", progress=False, **kwargs)
    assert len(np.load(tmp_path / "o" / "samples.npz")["arr_0"]) == 2  # the earlier run's files are intact


def named_model(tiny_models, path, names):
    """A model that records the class names it was trained with, as an image folder's training does."""
    vae, var = tiny_models
    var.provenance = {"classes": names}
    return save_model(vae, var, path)


def test_classes_are_given_by_the_names_the_model_records(tiny_models, tmp_path, capsys):
    import json

    model = named_model(tiny_models, tmp_path / "named", ["three", "two", "one", "zero"])
    code, stdout, err = run_cli(capsys, "sample", "--model", model, "--class", "zero,Two", "1", "--out", tmp_path / "o")
    assert code == 0 and np.load(tmp_path / "o" / "samples.npz")["arr_1"].tolist() == [3, 1, 1], err
    code, _, err = run_cli(capsys, "sample", "--model", model, "--class", "four", "--out", tmp_path / "o")
    assert code == 2 and len(err.strip().splitlines()) == 1
    assert "--class 'four' is not one of this model's 4 class names (three, two, one, zero)" in err
    # samples.json names the classes it drew (not part of the plan: a name changes no image)
    argv = ["--per-class", "1", "--class", "one", "--out", tmp_path / "p"]
    assert run_cli(capsys, "sample", "--model", model, *argv)[0] == 0
    assert json.loads((tmp_path / "p" / "samples.json").read_text())["class_names"] == {"2": "one"}


def test_a_number_that_is_also_another_class_name_is_refused_unless_marked(tiny_models, tmp_path, capsys):
    model = named_model(tiny_models, tmp_path / "numbered", ["1", "10", "11", "2"])  # folders 1, 2, 10, 11, sorted
    code, _, err = run_cli(capsys, "sample", "--model", model, "--class", "2", "--out", tmp_path / "o")
    assert code == 2 and len(err.strip().splitlines()) == 1
    assert "--class 2 is ambiguous: class 2 is named '11', and class 3 is named '2': write id:2 or name:2" in err
    for given, label in (("id:2", 2), ("name:2", 3), ("10", 1), ("0", 0)):  # no class 10: "10" is the name
        assert run_cli(capsys, "sample", "--model", model, "--class", given, "--out", tmp_path / given)[0] == 0
        assert np.load(tmp_path / given / "samples.npz")["arr_1"].tolist() == [label], given
