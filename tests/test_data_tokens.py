"""Token shards record the tokenizer that made them, by content: a folder is never resumed or reported done with
another tokenizer, and `--rebuild` replaces its tokens. `nextscale.data.identity` names what a dataset holds."""

import json
import shutil

import pytest
import torch
from PIL import Image

from nextscale.cli import main
from nextscale.data import DigitsDataset, ImageFolderDataset, class_names, identity
from nextscale.data.tokens import TokenDataset, tokenize
from nextscale.errors import NextscaleError
from nextscale.registry import architecture
from nextscale.tokenizer import VQVAE


@pytest.fixture(scope="module")
def images(tmp_path_factory):
    """Six small images of two classes, read as the tokens are made: centre crops."""
    root = tmp_path_factory.mktemp("images")
    image_folder(root, {f"{c}/{i}.png": 8 + i for c in "ab" for i in range(3)})
    return ImageFolderDataset(root, 8, train=False)


def tokenizer(seed: int) -> VQVAE:
    """A tiny tokenizer: each seed gives other weights of the same shape."""
    torch.manual_seed(seed)
    return VQVAE(architecture("tiny")[0]).eval()


def short(model) -> str:
    return f"{model.fingerprint()[:12]}…"


def test_tokens_of_another_tokenizer_are_refused_and_rebuilt_when_asked(images, tmp_path):
    a, b, out = tokenizer(0), tokenizer(1), tmp_path / "t"
    tokenize(images, a, out, shard_size=2, progress=False)
    before = {p.name: p.read_bytes() for p in out.iterdir()}
    with pytest.raises(NextscaleError, match=rf"another tokenizer \({short(a)}, not {short(b)}\): pass --rebuild"):
        tokenize(images, b, out, shard_size=2, progress=False)
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before
    tokenize(images, a, out, shard_size=2, progress=False)  # the same tokenizer: complete, nothing redone
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before

    tokenize(images, b, out, shard_size=6, rebuild=True, progress=False)  # other settings too: all anew
    assert sorted(p.name for p in out.iterdir()) == [
        "index.json",
        "shard-00000.json",
        "shard-00000.u16",
        "tokenize.json",
    ]
    tokens = TokenDataset(out)
    assert tokens.tokenizer == b.fingerprint() and len(tokens) == len(images)
    assert torch.equal(tokens[5][0], torch.cat(b.img_to_idx(images[5][0][None]), dim=1)[0])


def test_rerunning_tokenize_with_a_retrained_tokenizer_does_not_report_old_tokens_as_done(images, tmp_path, capsys):
    tokenizer(0).save_pretrained(tmp_path / "tok")
    argv = ["tokenize", "--data", str(images.root), "--tokenizer", str(tmp_path / "tok")]
    argv += ["--out", str(tmp_path / "t")]
    argv += ["--device", "cpu", "--quiet", "--workers", "0"]
    assert main(argv) == 0
    assert f"6 images tokenized by tokenizer {short(tokenizer(0))}" in capsys.readouterr().out
    tokenizer(1).save_pretrained(tmp_path / "tok")  # trained further: the same path, other weights
    assert main(argv) == 2
    captured = capsys.readouterr()
    assert captured.out == "" and len(captured.err.strip().splitlines()) == 1, captured
    assert f"another tokenizer ({short(tokenizer(0))}, not {short(tokenizer(1))})" in captured.err
    assert main([*argv, "--rebuild"]) == 0
    assert TokenDataset(tmp_path / "t").tokenizer == tokenizer(1).fingerprint()


def test_token_folders_of_an_older_version_are_read_but_not_resumed(images, tmp_path):
    out = tmp_path / "t"
    tokenize(images, tokenizer(0), out, shard_size=2, progress=False)
    for name in ("index.json", "tokenize.json"):  # as format 1 wrote them: the tokenizer as the path given
        record = json.loads((out / name).read_text())
        (out / name).write_text(json.dumps({**record, "format": 1, "tokenizer": "runs/tok/model"}))
    assert TokenDataset(out).tokenizer is None  # read; what made them is unknown
    with pytest.raises(NextscaleError, match="older nextscale that did not record their tokenizer: pass --rebuild"):
        tokenize(images, tokenizer(0), out, shard_size=2, progress=False)


def image_folder(root, sizes):
    for name, side in sizes.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        Image.new("RGB", (side, side), (side, 90, 40)).save(root / name)
    return ImageFolderDataset(root, 8)


def test_identity_names_what_a_dataset_holds_wherever_it_lies(tmp_path):
    digits = DigitsDataset("test", resolution=8)
    assert identity(digits) == identity(DigitsDataset("test", resolution=16)) != identity(DigitsDataset("train"))
    assert identity(digits).startswith("digits:360:") and identity(None) is None
    sizes = {"a/0.png": 8, "a/1.png": 9, "b/0.png": 10}
    here = image_folder(tmp_path / "here", sizes)
    shutil.copytree(tmp_path / "here", tmp_path / "there")
    assert identity(here) == identity(ImageFolderDataset(tmp_path / "there", 16, train=False))
    assert identity(here) != identity(image_folder(tmp_path / "other", {**sizes, "b/0.png": 12}))  # another file
    assert identity(here) != identity(image_folder(tmp_path / "renamed", {**sizes, "c/0.png": 10}))
    assert class_names(here) == ["a", "b"] and class_names(digits) == [str(c) for c in range(10)]

    vae = tokenizer(0)  # shards of other images, by the same tokenizer and of the same count, are other data
    tokenize(here, vae, tmp_path / "t-here", progress=False)
    tokenize(image_folder(tmp_path / "look-alike", {**sizes, "a/1.png": 11}), vae, tmp_path / "t-other", progress=False)
    tokens = TokenDataset(tmp_path / "t-here")
    assert identity(tokens).startswith("tokens:3:") and identity(tokens) != identity(TokenDataset(tmp_path / "t-other"))
    shutil.copytree(tmp_path / "t-here", tmp_path / "t-moved")
    assert identity(TokenDataset(tmp_path / "t-moved")) == identity(tokens)
