"""`nextscale sample`: outputs, and a one-line error with exit code 2 for each kind of bad input."""

import shutil
import subprocess
import sysconfig

import numpy as np
import pytest
import torch
from PIL import Image

from nextscale import save_model
from nextscale.cli import main
from tests.conftest import golden_files
from tests.test_checkpoint import reference_state_dicts


@pytest.fixture
def model_dir(tiny_models, tmp_path):
    return save_model(*tiny_models, tmp_path / "tiny")


def run_cli(capsys, *argv):
    code = main([str(a) for a in argv])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def test_sample_writes_pngs_grid_and_npz(model_dir, tmp_path, capsys):
    args = ["sample", "--model", model_dir, "--class", "0,2", "3", "--n", "2", "--batch-size", "4", "--seed", "1",
            "--cfg", "2", "--top-k", "8"]  # fmt: skip
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


def test_console_script_is_installed():
    exe = shutil.which("nextscale", path=sysconfig.get_path("scripts")) or shutil.which("nextscale")
    assert exe, "the nextscale console script is not on PATH"
    proc = subprocess.run([exe, "sample", "--help"], capture_output=True, text=True)
    assert proc.returncode == 0 and "--cfg-schedule" in proc.stdout


@pytest.fixture
def reference_files(tmp_path):
    files = golden_files()
    _, _, vae_sd, var_sd = reference_state_dicts(files[0])
    torch.save(vae_sd, tmp_path / "vae.pth")
    torch.save(var_sd, tmp_path / "var.pth")
    other = [p for p in files if p != files[0]]
    if other:
        _, _, _, other_var = reference_state_dicts(other[0])
        torch.save(other_var, tmp_path / "other_var.pth")
    (tmp_path / "garbage.pth").write_bytes(b"this is not a checkpoint")
    return tmp_path


def bad_inputs(model_dir, ref):
    return {
        "class out of range": (["--model", model_dir, "--class", "4"], "--class 4 is out of range"),
        "class not a number": (["--model", model_dir, "--class", "cat"], "not an integer class id"),
        "n below one": (["--model", model_dir, "--n", "0"], "--n must be at least 1"),
        "top-p above one": (["--model", model_dir, "--top-p", "1.5"], r"--top-p must lie in \[0, 1\]"),
        "top-p below zero": (["--model", model_dir, "--top-p", "-0.1"], r"--top-p must lie in \[0, 1\]"),
        "missing file": (["--vae", ref / "nope.pth", "--var", ref / "var.pth"], "nope.pth: no such file"),
        "unreadable file": (["--vae", ref / "vae.pth", "--var", ref / "garbage.pth"], "not a readable"),
        "vae where var belongs": (
            ["--vae", ref / "vae.pth", "--var", ref / "vae.pth"],
            "it is a VQ-VAE tokenizer",
        ),
        "mismatched pair": (
            ["--vae", ref / "vae.pth", "--var", ref / "other_var.pth"],
            "do not fit together",
        ),
        "no model": ([], "name a model"),
        "unknown model": (["--model", "nope"], "unknown model 'nope'"),
    }


@pytest.mark.parametrize("case", list(bad_inputs("m", __import__("pathlib").Path("r"))))
def test_bad_input_gives_one_line_error(case, model_dir, reference_files, capsys, tmp_path):
    import re

    args, message = bad_inputs(model_dir, reference_files)[case]
    if case == "mismatched pair" and not (reference_files / "other_var.pth").exists():
        pytest.skip("needs a second reference file")
    code, _, err = run_cli(capsys, "sample", *args, "--out", tmp_path / "o")
    assert code == 2
    assert len(err.strip().splitlines()) == 1, err
    assert err.startswith("nextscale sample: error: ") and re.search(message, err), err
