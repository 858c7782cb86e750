"""Fashion-MNIST: the IDX reader on files written here, the 28×28 ↔ 32×32 round trip, where the files are looked
for and `--data DIR`, the command line's errors, and the real files (where installed; CI requires them)."""

import argparse
import gzip
import hashlib
import json
import shutil

import numpy as np
import pytest
import torch
from PIL import Image

from nextscale.cli import main
from nextscale.cli.train import datasets
from nextscale.data import (
    FASHION_CLASSES,
    FashionMNISTDataset,
    ImageFolderDataset,
    builtin_dataset,
    fashion_split,
    fashion_to_images,
    identity,
    images_to_fashion,
    is_fashion_folder,
    open_dataset,
)
from nextscale.data.fashion import FASHION_FILES, SYSTEM_DIR_VARIABLE, fashion_dir, read_idx
from nextscale.errors import NextscaleError
from nextscale.evaluation import FeatureNetwork, evaluate, open_set
from tests import helpers
from tests.helpers import fashion_data, run_nextscale, write_fashion, write_idx

# sha256 of the decoded arrays (images (N, 28, 28) and labels (N,), uint8, C order), computed once from Debian's
# dataset-fashion-mnist. Its .gz files were recompressed, so upstream's checksums (of the .gz files) do not apply;
# the decoded data matches upstream's counts (6,000 and 1,000 per class), its first labels and its pixel mean.
DECODED_SHA256 = {
    "train": (
        "2e487a6c89124f78f2d7521542223cafe96f7123c3ca13d447772ac6ecbb3012",
        "657fbd221bfc9f4198cc14b5619cc33ec57c58dd0e47af4d99d6650759e869a7",
    ),
    "test": (
        "c867c93ff95360594e8ec3287995350b824dd110b11595c0e13d5423f621867a",
        "3d0e6c6ea990b53b6f8f500a41cac93881d981b315f84578b7d915342ade01e9",
    ),
}
FIRST_LABELS = {"train": [9, 0, 0, 3, 0, 2, 7, 2, 5, 5], "test": [9, 2, 1, 1, 6, 1, 4, 6, 5, 7]}  # upstream's


@pytest.fixture
def no_installed(tmp_path, monkeypatch):
    """Neither $NEXTSCALE_DATA nor the system folder holds Fashion-MNIST."""
    monkeypatch.delenv("NEXTSCALE_DATA", raising=False)
    monkeypatch.setenv(SYSTEM_DIR_VARIABLE, str(tmp_path / "no-system-copy"))


# ---- the IDX reader ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["x-idx3-ubyte.gz", "x-idx3-ubyte"])
def test_read_idx_gzipped_or_not(tmp_path, name):
    array = np.random.default_rng(0).integers(0, 256, (5, 28, 28), dtype=np.uint8)
    got = read_idx(write_idx(tmp_path / name, array), 3)
    assert got.dtype == np.uint8 and got.shape == (5, 28, 28) and np.array_equal(got, array)
    labels = np.arange(7, dtype=np.uint8)
    assert np.array_equal(read_idx(write_idx(tmp_path / "y-idx1-ubyte", labels), 1), labels)


@pytest.mark.parametrize("gz", [True, False], ids=["gzipped", "unpacked"])
def test_a_tiny_folder_reads_as_its_splits(tmp_path, gz):
    written = write_fashion(tmp_path, counts=(12, 6), gz=gz)
    for split, n in (("train", 12), ("test", 6)):
        images, labels = fashion_split(split, tmp_path)
        assert images.shape == (n, 28, 28) and labels.shape == (n,) and labels.dtype == np.int64
        assert np.array_equal(images, written[split][0]) and np.array_equal(labels, written[split][1])
    data = FashionMNISTDataset("test", root=tmp_path)
    x, y = data[3]
    assert len(data) == 6 and x.shape == (3, 32, 32) and y == int(written["test"][1][3])
    assert data.classes == list(FASHION_CLASSES) and data.num_classes == 10 and data[(3, 0, True)][0].equal(x)


def _corrupt(kind: str, folder):
    """Breaks one file of a tiny Fashion-MNIST; returns the file's name."""
    image_file, label_file = (folder / name for name in FASHION_FILES["train"])
    rng = np.random.default_rng(1)
    if kind == "gzip cut short":
        raw = image_file.read_bytes()
        image_file.write_bytes(raw[: len(raw) // 2])
        return image_file
    if kind == "body cut short":
        raw = gzip.decompress(image_file.read_bytes())
        image_file.write_bytes(gzip.compress(raw[:-28]))
        return image_file
    if kind == "header cut short":
        image_file.write_bytes(gzip.compress(b"\0\0\x08\x03\0\0"))
        return image_file
    if kind == "wrong magic":
        write_idx(image_file, rng.integers(0, 256, (12, 28, 28)), magic=0x0000_0D03)  # float data
        return image_file
    if kind == "label count":
        write_idx(label_file, rng.integers(0, 10, 11))
        return label_file
    if kind == "label 10":
        write_idx(label_file, np.array([0] * 11 + [10]))
        return label_file
    if kind == "not 28×28":
        write_idx(image_file, rng.integers(0, 256, (12, 27, 28)))
        return image_file
    raise AssertionError(kind)


BROKEN = {
    "gzip cut short": "is corrupt or cut short",
    "body cut short": r"holds 9380 bytes of data where its header promises 9408 \(shape 12×28×28\)",
    "header cut short": "is cut short: 6 bytes, not even an IDX header",
    "wrong magic": r"is not an IDX file of 3-dimensional bytes \(magic number 0x00000d03, expected 0x00000803\)",
    "label count": "holds 12 images but .*train-labels-idx1-ubyte.gz 11 labels",
    "label 10": r"holds label 10: Fashion-MNIST has classes 0…9",
    "not 28×28": "holds 27×28 images, not 28×28",
}


@pytest.mark.parametrize("kind", list(BROKEN))
def test_a_broken_file_is_one_error_naming_it(tmp_path, kind):
    write_fashion(tmp_path)
    broken = _corrupt(kind, tmp_path)
    with pytest.raises(NextscaleError, match=BROKEN[kind]) as e:
        fashion_split("train", tmp_path)
    message = str(e.value)
    assert "\n" not in message and str(broken) in message
    assert fashion_split("test", tmp_path)[0].shape == (6, 28, 28)  # the other split is untouched


# ---- 28×28 grey ↔ the tokenizer's 32×32 RGB ----------------------------------------------------------------


def test_the_rendering_round_trip_is_exact():
    g = torch.Generator().manual_seed(0)
    grey = torch.randint(0, 256, (20, 28, 28), generator=g, dtype=torch.uint8).numpy()
    grey[0], grey[1] = 0, 255  # the extremes
    images = fashion_to_images(grey)
    assert images.shape == (20, 3, 32, 32) and images.min() >= -1 and images.max() <= 1
    assert torch.equal(images[:, 0], images[:, 1]) and torch.equal(images[:, 0], images[:, 2])  # grey
    border = torch.ones(32, 32, dtype=torch.bool)
    border[2:30, 2:30] = False
    assert torch.all(images[:, :, border] == -1)  # padded with black, Fashion-MNIST's background
    back = images_to_fashion(images / 2 + 0.5)
    assert back.dtype == np.uint8 and np.array_equal(back, grey)


# ---- where the files are looked for, and --data DIR -----------------------------------------------------------


def test_nextscale_data_is_searched_before_the_system_folder(tmp_path, monkeypatch):
    system = tmp_path / "system"
    write_fashion(system, counts=(5, 4), seed=1)
    monkeypatch.setenv(SYSTEM_DIR_VARIABLE, str(system))
    monkeypatch.setenv("NEXTSCALE_DATA", str(tmp_path / "empty"))
    assert fashion_dir() == system  # $NEXTSCALE_DATA without fashion-mnist/: the system folder
    write_fashion(tmp_path / "mine" / "fashion-mnist", counts=(7, 3), gz=False)
    monkeypatch.setenv("NEXTSCALE_DATA", str(tmp_path / "mine"))
    assert fashion_dir() == tmp_path / "mine" / "fashion-mnist"
    assert len(open_dataset("fashion-mnist", 32, "test")) == 3 and len(open_dataset("fashion-mnist", 32)) == 7


def test_nothing_installed_says_what_to_do(no_installed, tmp_path):
    with pytest.raises(NextscaleError) as e:
        open_dataset("fashion-mnist", 32, "test")
    message = str(e.value)
    assert "\n" not in message and "Fashion-MNIST is not installed" in message
    assert str(tmp_path / "no-system-copy") in message and "apt-get install dataset-fashion-mnist" in message
    assert "NEXTSCALE_DATA" in message and "--data DIR" in message


def test_a_folder_of_the_idx_files_is_fashion_mnist(tmp_path, no_installed):
    written = write_fashion(tmp_path / "fm", counts=(9, 5))
    assert is_fashion_folder(tmp_path / "fm") and builtin_dataset(str(tmp_path / "fm")) == "fashion-mnist"
    train, test = (open_dataset(str(tmp_path / "fm"), 32, split) for split in ("train", "test"))
    assert isinstance(train, FashionMNISTDataset) and (len(train), len(test)) == (9, 5)
    assert torch.equal(test.labels, torch.as_tensor(written["test"][1], dtype=torch.long))
    assert builtin_dataset("digits") == "digits" and builtin_dataset("fashion-mnist") == "fashion-mnist"
    (tmp_path / "images" / "a").mkdir(parents=True)
    Image.new("RGB", (8, 8)).save(tmp_path / "images" / "a" / "0.png")
    assert builtin_dataset(str(tmp_path / "images")) is None and not is_fashion_folder(tmp_path / "images")
    assert isinstance(open_dataset(str(tmp_path / "images"), 32), ImageFolderDataset)
    assert builtin_dataset(str(tmp_path / "nowhere")) is None


def test_a_folder_with_some_of_the_files_names_the_missing_ones(tmp_path):
    write_fashion(tmp_path)
    for name in FASHION_FILES["test"]:
        (tmp_path / name).unlink()
    assert is_fashion_folder(tmp_path)
    with pytest.raises(NextscaleError) as e:
        open_dataset(str(tmp_path), 32, "train")
    message = str(e.value)
    assert "\n" not in message and str(tmp_path) in message
    assert "lacks t10k-images-idx3-ubyte.gz, t10k-labels-idx1-ubyte.gz" in message and "train-" not in message


def test_identity_is_the_split_wherever_its_files_lie(tmp_path):
    write_fashion(tmp_path / "a", gz=True)
    write_fashion(tmp_path / "b", gz=False)  # the same data, unpacked, elsewhere
    write_fashion(tmp_path / "c", seed=5)
    a, b, c = (identity(open_dataset(str(tmp_path / x), 32, "train")) for x in "abc")
    assert a == b and a != c and a.startswith("fashion-mnist:12:")
    assert identity(open_dataset(str(tmp_path / "a"), 32, "test")).startswith("fashion-mnist:6:")


# ---- the command line ------------------------------------------------------------------------------------------


def test_training_and_tokenizing_read_a_folder_of_the_files(tmp_path, capsys):
    write_fashion(tmp_path / "fm", counts=(16, 8))
    args = argparse.Namespace(data=str(tmp_path / "fm"), val_data=None, seed=0)
    train, held_out = datasets(args, 8)  # train-tokenizer's and train's data: its test split is held out
    assert (len(train), len(held_out)) == (16, 8) and train[0][0].shape == (3, 8, 8)
    assert held_out.split == "test" and train.classes == list(FASHION_CLASSES)
    argv = ["tokenize", "--data", str(tmp_path / "fm"), "--tokenizer", "digits", "--out", str(tmp_path / "tok")]
    assert main([*argv, "--quiet"]) == 0
    index = json.loads((tmp_path / "tok" / "index.json").read_text())
    assert "16 images tokenized" in capsys.readouterr().out and index["classes"] == list(FASHION_CLASSES)
    assert index["data"] == identity(open_dataset(str(tmp_path / "fm"), 32, "train"))


def test_the_command_line_says_what_to_install_in_one_line(tmp_path, monkeypatch):
    """In a process of its own: where the files are looked for is read from its environment."""
    monkeypatch.setitem(helpers.PROCESS_ENV, "NEXTSCALE_DATA", str(tmp_path / "empty"))
    monkeypatch.setitem(helpers.PROCESS_ENV, SYSTEM_DIR_VARIABLE, str(tmp_path / "no-system-copy"))
    argv = ["tokenize", "--data", "fashion-mnist", "--tokenizer", "digits", "--out", str(tmp_path / "tokens")]
    lines = run_nextscale(argv, expect=2).stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("nextscale tokenize: error: Fashion-MNIST is not installed")
    assert str(tmp_path / "empty" / "fashion-mnist") in lines[0] and str(tmp_path / "no-system-copy") in lines[0]
    assert "apt-get install dataset-fashion-mnist" in lines[0]


# ---- the installed files (CI: NEXTSCALE_REQUIRE_FASHION=1) ------------------------------------------------------


@pytest.fixture(scope="module")
def real():
    fashion_data()
    return {split: fashion_split(split) for split in ("train", "test")}


def test_the_installed_files_are_upstream_fashion_mnist(real):
    for split, n in (("train", 60_000), ("test", 10_000)):
        images, labels = real[split]
        assert images.shape == (n, 28, 28) and images.dtype == np.uint8 and labels.shape == (n,)
        assert np.bincount(labels, minlength=10).tolist() == [n // 10] * 10
        assert labels[:10].tolist() == FIRST_LABELS[split]
        sha = tuple(hashlib.sha256(a.astype(np.uint8).tobytes()).hexdigest() for a in (images, labels))
        assert sha == DECODED_SHA256[split], split
    assert real["train"][0].mean() / 255 == pytest.approx(0.2860, abs=5e-5)  # the usual normalisation constant


class QuadrantMeans(FeatureNetwork):
    """A cheap stand-in network: each channel's mean over the four quadrants (12 features)."""

    name = "quadrants"

    def __call__(self, images):
        x = images.float()
        h, w = x.shape[-2] // 2, x.shape[-1] // 2
        quads = [x[..., :h, :w], x[..., :h, w:], x[..., h:, :w], x[..., h:, w:]]
        features = torch.cat([q.mean(dim=(2, 3)) for q in quads], dim=1)
        return features, features


def test_eval_reads_the_test_and_train_images_as_the_tokenizer_sees_them(real, tmp_path):
    ref = open_set("fashion-mnist", "--ref")
    assert ref.count == 10_000 and ref.size == (32, 32)
    first = next(ref.batches(32))
    expected = fashion_to_images(real["test"][0][:32]).add(1).mul(127.5).round().to(torch.uint8)
    assert first.dtype == torch.uint8 and torch.equal(first, expected)
    assert open_set("fashion-mnist-train").count == 60_000
    for i, image in enumerate(first):  # samples: real test images, written as PNGs
        Image.fromarray(image.permute(1, 2, 0).numpy()).save(tmp_path / f"{i}.png")
    result = evaluate(str(tmp_path), "fashion-mnist", QuadrantMeans(), metrics=("fid",), progress=False)
    assert result["settings"]["ref_count"] == 10_000 and result["settings"]["samples_count"] == 32
    assert np.isfinite(result["metrics"]["fid"]) and result["metrics"]["fid"] > 0


def test_the_installed_copy_is_one_dataset_wherever_it_lies(real, tmp_path):
    """A run records its data's identity: a copy of the files in a folder (`--data DIR`) is the same data."""
    data = open_dataset("fashion-mnist", 32, "test")
    assert len(data) == 10_000 and identity(data).startswith("fashion-mnist:10000:")
    shutil.copytree(fashion_dir(), tmp_path / "copy")
    assert identity(open_dataset(str(tmp_path / "copy"), 32, "test")) == identity(data)
