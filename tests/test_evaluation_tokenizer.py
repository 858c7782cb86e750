"""`nextscale eval-tokenizer`: PSNR and SSIM against direct numpy computations, codebook use against hand counts,
LPIPS's wiring and its skip note, and the command on the built-in digits tokenizer, bad input included."""

import contextlib
import io
import json
import math

import numpy as np
import pytest
import torch
from numpy.lib.stride_tricks import sliding_window_view
from PIL import Image

from nextscale.cli import main
from nextscale.data import FashionMNISTDataset
from nextscale.evaluation import FeatureNetwork, TokenizerReport, evaluate_tokenizer
from nextscale.evaluation import tokenizer as tok
from nextscale.evaluation.features import INCEPTION_FILE
from nextscale.training.losses import LPIPS_FILE, VGG16_FILE
from tests.helpers import fashion_data, write_fashion


def numpy_psnr(a: np.ndarray, b: np.ndarray) -> float:
    return 10 * math.log10(1 / np.mean((a - b) ** 2))


def numpy_ssim(a: np.ndarray, b: np.ndarray) -> float:
    """Wang et al.'s SSIM written out window by window: (C, H, W) in [0, 1], valid positions, channels averaged."""
    x = np.arange(11) - 5
    g = np.exp(-(x**2) / (2 * 1.5**2))
    w = np.outer(g, g) / np.outer(g, g).sum()
    c1, c2 = 0.01**2, 0.03**2
    per_channel = []
    for ca, cb in zip(a, b):
        wa, wb = sliding_window_view(ca, (11, 11)), sliding_window_view(cb, (11, 11))  # (H-10, W-10, 11, 11)
        mu_a, mu_b = (wa * w).sum((-2, -1)), (wb * w).sum((-2, -1))
        var_a = (w * (wa - mu_a[..., None, None]) ** 2).sum((-2, -1))
        var_b = (w * (wb - mu_b[..., None, None]) ** 2).sum((-2, -1))
        cov = (w * (wa - mu_a[..., None, None]) * (wb - mu_b[..., None, None])).sum((-2, -1))
        s = (2 * mu_a * mu_b + c1) * (2 * cov + c2) / ((mu_a**2 + mu_b**2 + c1) * (var_a + var_b + c2))
        per_channel.append(s.mean())
    return float(np.mean(per_channel))


@pytest.fixture
def pairs():
    g = torch.Generator().manual_seed(0)
    a = torch.rand(3, 3, 20, 24, generator=g)
    b = (a + 0.1 * torch.randn(a.shape, generator=g)).clamp(0, 1)
    return a, b


def test_psnr_and_ssim_agree_with_numpy(pairs):
    a, b = pairs
    got_psnr, got_ssim = tok.psnr(a, b), tok.ssim(a, b)
    for i in range(len(a)):
        assert got_psnr[i].item() == pytest.approx(numpy_psnr(a[i].double().numpy(), b[i].double().numpy()), rel=1e-5)
        assert got_ssim[i].item() == pytest.approx(numpy_ssim(a[i].double().numpy(), b[i].double().numpy()), rel=1e-5)


def test_an_image_against_itself(pairs):
    a, _ = pairs
    assert torch.isinf(tok.psnr(a, a)).all()
    assert torch.allclose(tok.ssim(a, a), torch.ones(len(a), dtype=torch.float64))
    report = TokenizerReport(1, 32, 4, psnr=math.inf, ssim=1.0, lpips=None, rfid=None, features=None)
    assert json.loads(json.dumps(report.as_dict()))["psnr"] == "inf"  # JSON has no infinity


def test_ssim_refuses_images_smaller_than_its_window():
    with pytest.raises(Exception, match="at least 11"):
        tok.ssim(torch.rand(1, 3, 8, 8), torch.rand(1, 3, 8, 8))


def test_codebook_use_equals_hand_counts():
    vocab = 4
    scales = [torch.tensor([0, 0, 1, 1]), torch.tensor([0, 1, 2, 3]), torch.tensor([0, 0, 0, 1])]
    counts = torch.stack([t.bincount(minlength=vocab) for t in scales])
    rows = tok.scale_uses(counts, (1, 2, 3))
    assert [r.scale for r in rows] == ["1×1", "2×2", "3×3", "all"]
    assert [r.tokens for r in rows] == [4, 4, 4, 12]
    assert [r.usage for r in rows] == [0.5, 1.0, 0.5, 1.0]
    three_one = math.exp(-(0.75 * math.log(0.75) + 0.25 * math.log(0.25)))
    p_all = np.array([6, 4, 1, 1]) / 12  # code 0: 2 + 1 + 3 times, code 1: 2 + 1 + 1, codes 2 and 3: once
    assert [r.perplexity for r in rows[:3]] == pytest.approx([2.0, 4.0, three_one])
    assert rows[3].perplexity == pytest.approx(math.exp(-(p_all * np.log(p_all)).sum()))


class FakeLPIPS(torch.nn.Module):
    """Stands in for VGG16 + LPIPS: the batch's mean squared difference, in the same batch-mean form."""

    def __init__(self, vgg, lin):
        super().__init__()
        self.files = (vgg, lin)

    def forward(self, rec, img):
        return (rec - img).square().mean()


def test_lpips_is_computed_from_named_files(tmp_path, monkeypatch):
    (tmp_path / VGG16_FILE).write_bytes(b"")
    (tmp_path / LPIPS_FILE).write_bytes(b"")
    monkeypatch.setattr(tok, "PerceptualLoss", FakeLPIPS)
    lpips, note = tok.load_lpips([str(tmp_path)])
    assert note is None and lpips.files == (str(tmp_path / VGG16_FILE), str(tmp_path / LPIPS_FILE))
    from nextscale.data import DigitsDataset
    from nextscale.weights import load_vae

    vae = load_vae("digits")
    report = evaluate_tokenizer(vae, DigitsDataset("test"), lpips=lpips, batch_size=5, limit=12, progress=False)
    # the fake's per-image value is 4 × the [0, 1] MSE, which PSNR also gives: the means over images must agree
    x = torch.stack([DigitsDataset("test")[i][0] for i in range(12)])
    rec = vae.idx_to_img(vae.img_to_idx(x))
    mse01 = 10 ** (-tok.psnr(x.add(1).div(2), rec.add(1).div(2)) / 10)
    expected = float((4 * mse01).mean())
    assert report.lpips == pytest.approx(expected, rel=1e-4)
    assert report.notes == [] and report.rfid is None


def test_lpips_without_local_weights_is_skipped_with_a_note(tmp_path, monkeypatch):
    monkeypatch.setattr(tok, "lpips_candidates", lambda: [tmp_path])
    lpips, note = tok.load_lpips()
    assert lpips is None and note.startswith("LPIPS skipped") and VGG16_FILE in note and LPIPS_FILE in note


@pytest.fixture(scope="module")
def digits_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("et") / "r.json"
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(tok, "lpips_candidates", lambda: [out.parent / "nothing-here"])
        stdout = io.StringIO()  # capsys is per test; the run (its judge trains for a while) is per module
        with contextlib.redirect_stdout(stdout):
            code = main(
                [
                    "eval-tokenizer",
                    "--tokenizer",
                    "digits",
                    "--data",
                    "digits",
                    "--features",
                    "digits",
                    "--limit",
                    "64",
                    "--json",
                    str(out),
                    "--quiet",
                ]
            )
    return code, stdout.getvalue(), json.loads(out.read_text())


def test_the_command_on_the_digits_tokenizer(digits_run):
    code, text, record = digits_run
    assert code == 0
    assert record["images"] == 64 and record["settings"]["limit"] == 64 and record["features"] == "digits"
    assert 20 < record["psnr"] < 60 and 0.5 < record["ssim"] <= 1 and record["rfid"] >= 0
    assert record["lpips"] is None and any(n.startswith("LPIPS skipped") for n in record["notes"])
    for number in (f"{record['psnr']:.4f}", f"{record['ssim']:.4f}", f"{record['rfid']:.4f}"):
        assert number in text
    scales = record["scales"]
    assert [s["scale"] for s in scales] == ["1×1", "2×2", "3×3", "4×4", "6×6", "8×8", "all"]
    assert [s["tokens"] for s in scales] == [64 * pn * pn for pn in (1, 2, 3, 4, 6, 8)] + [64 * 130]
    for s in scales:
        assert 0 < s["usage"] <= 1 and 1 <= s["perplexity"] <= 256
        assert f"{s['usage']:.2%}" in text and f"{s['perplexity']:.2f}" in text
    assert "LPIPS  skipped" in text and "note: LPIPS skipped" in text


def test_a_folder_of_images(tmp_path, capsys):
    for c in ("a", "b"):
        (tmp_path / c).mkdir()
        for i in range(2):
            Image.new("RGB", (40, 48), (60 * i, 100, 200)).save(tmp_path / c / f"{i}.png")
    code = main(
        [
            "eval-tokenizer",
            "--tokenizer",
            "digits",
            "--data",
            str(tmp_path),
            "--features",
            "digits",
            "--workers",
            "0",
            "--quiet",
        ]
    )
    out = capsys.readouterr().out
    assert code == 0 and "4 images at 32×32" in out


BAD = {
    "missing data folder": (["--data", "/no/such/folder"], "--data /no/such/folder: no such folder"),
    "--limit 0": (["--limit", "0"], "--limit must be at least 1, got 0"),
    "--batch-size 0": (["--batch-size", "0"], "--batch-size must be at least 1, got 0"),
    "bad --json suffix": (["--json", "{tmp}/out.txt"], "out.txt must end in .json"),
    "unknown --features": (["--features", "nonesuch"], "--features 'nonesuch': not a registered network"),
    "missing --lpips-weights": (["--lpips-weights", "{tmp}/none"], "--lpips-weights"),
    "--lpips-weights without the files": (["--lpips-weights", "{tmp}"], "vgg16-397923af.pth and vgg.pth not found"),
}


@pytest.mark.parametrize("case", list(BAD))
def test_bad_input_ends_in_one_line_and_exit_code_2(case, tmp_path, capsys):
    extra, message = BAD[case]
    extra = [a.format(tmp=tmp_path) for a in extra]
    args = ["eval-tokenizer", "--tokenizer", "digits", "--data", "digits", "--features", "digits", "--quiet"]
    assert main(args + extra) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("nextscale eval-tokenizer: error: ") and message in err, err


class MeanColour(FeatureNetwork):
    """Stands in for Inception: the Inception weights file is only looked for, never read, by these tests."""

    name = "inception"

    def __call__(self, images):
        features = images.float().mean(dim=(2, 3))
        return features, features


OFFLINE_RUN = ["eval-tokenizer", "--tokenizer", "digits", "--data", "digits", "--limit", "8", "--quiet"]


@pytest.fixture
def offline(tmp_path, monkeypatch):
    """No network, an empty torch hub folder; the hub path is returned."""

    def no_network(*args, **kwargs):
        raise OSError("<urlopen error [Errno -3] Temporary failure in name resolution>")

    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path / "hub"))
    monkeypatch.setattr(torch.hub, "download_url_to_file", no_network)
    return tmp_path / "hub" / "checkpoints"


def test_offline_rfid_is_skipped_with_a_note_unless_asked_for(offline, capsys):
    assert main(OFFLINE_RUN) == 0
    out = capsys.readouterr().out
    assert "rFID   skipped" in out and f"note: rFID skipped: the Inception weights {INCEPTION_FILE}" in out
    assert str(offline) in out and "--rfid" in out and "PSNR" in out
    assert main([*OFFLINE_RUN, "--rfid"]) == 2  # asked for: the file to download, in one line
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and INCEPTION_FILE in err and str(offline) in err and "--inception-weights" in err


def test_rfid_uses_the_inception_weights_where_they_are_and_none_with_no_rfid(offline, monkeypatch, capsys, tmp_path):
    offline.mkdir(parents=True)
    (offline / INCEPTION_FILE).write_bytes(b"")
    loaded = []
    monkeypatch.setattr(tok, "load_network", lambda name, **kw: loaded.append(kw["inception_weights"]) or MeanColour())
    assert main([*OFFLINE_RUN, "--json", str(tmp_path / "r.json")]) == 0
    record = json.loads((tmp_path / "r.json").read_text())
    assert loaded == [offline / INCEPTION_FILE] and record["features"] == "inception" and record["rfid"] >= 0
    assert not any("rFID" in note for note in record["notes"])
    assert main([*OFFLINE_RUN, "--no-rfid", "--json", str(tmp_path / "r.json")]) == 0
    record = json.loads((tmp_path / "r.json").read_text())
    assert record["rfid"] is None and record["settings"]["rfid"] == "skipped" and len(loaded) == 1
    assert main([*OFFLINE_RUN, "--no-rfid", "--features", "digits"]) == 2
    assert "--features is for rFID: drop --no-rfid" in capsys.readouterr().err


class Named(MeanColour):
    def __init__(self, name):
        self.name = name


@pytest.fixture
def fashion_folder(tmp_path, monkeypatch):
    """A tiny Fashion-MNIST folder (`--data DIR`), no LPIPS weights, and the networks the run loads, recorded."""
    write_fashion(tmp_path / "fm", counts=(4, 12))
    monkeypatch.setattr(tok, "lpips_candidates", lambda: [tmp_path / "nothing-here"])
    loaded = []
    monkeypatch.setattr(tok, "load_network", lambda name, **kw: loaded.append(name) or Named(name))
    return tmp_path / "fm", loaded


def test_fashion_mnist_is_measured_through_its_own_network_by_default(fashion_folder, offline, tmp_path, capsys):
    folder, loaded = fashion_folder
    args = ["eval-tokenizer", "--tokenizer", "digits", "--data", str(folder), "--quiet"]
    assert main([*args, "--json", str(tmp_path / "r.json")]) == 0
    record = json.loads((tmp_path / "r.json").read_text())
    assert loaded == ["fashion"] and record["features"] == "fashion" and record["rfid"] >= 0
    assert record["images"] == 12 and 0 < record["ssim"] <= 1 and record["settings"]["features"] is None
    assert f"tokenizer digits on {folder} (test split): 12 images" in capsys.readouterr().out
    assert main([*args, "--features", "inception"]) == 0  # named: Inception, which is not here
    assert loaded == ["fashion"] and "note: rFID skipped: the Inception weights" in capsys.readouterr().out
    assert tok.default_features(FashionMNISTDataset("test", root=folder)) == "fashion"
    assert tok.default_features(FashionMNISTDataset("test", root=folder, resolution=64)) == "inception"  # 32 only


def test_the_installed_fashion_mnist_test_split(tmp_path, monkeypatch, capsys):
    fashion_data()
    monkeypatch.setattr(tok, "lpips_candidates", lambda: [tmp_path / "nothing-here"])
    args = ["eval-tokenizer", "--tokenizer", "digits", "--data", "fashion-mnist", "--limit", "16", "--no-rfid"]
    assert main([*args, "--quiet", "--json", str(tmp_path / "r.json")]) == 0
    record = json.loads((tmp_path / "r.json").read_text())
    assert record["images"] == 16 and record["rfid"] is None and 5 < record["psnr"] < 60
    assert [s["tokens"] for s in record["scales"]][-1] == 16 * 130
    assert "tokenizer digits on fashion-mnist (test split): 16 images at 32×32" in capsys.readouterr().out


def test_rfid_required_on_fashion_mnist_loads_the_shipped_fashion_network(tmp_path, monkeypatch, capsys):
    write_fashion(tmp_path / "fm", counts=(2, 8))
    monkeypatch.setattr(tok, "lpips_candidates", lambda: [tmp_path / "nothing-here"])
    args = ["eval-tokenizer", "--tokenizer", "digits", "--data", str(tmp_path / "fm"), "--rfid", "--quiet"]
    assert main([*args, "--json", str(tmp_path / "r.json")]) == 0
    record = json.loads((tmp_path / "r.json").read_text())
    assert record["features"] == "fashion" and record["rfid"] > 0 and record["images"] == 8
