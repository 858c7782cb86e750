"""Every command, fed each bad input a user can cause: one line on stderr naming the problem, exit code 2, no
traceback, and no work lost. Needs no reference tensors: tiny models and files made here."""

import os
import re
from dataclasses import replace

import numpy as np
import pytest
import torch
from PIL import Image

from nextscale import VQVAE, golden, save_model
from nextscale.cli import main
from nextscale.registry import architecture
from tests.helpers import tiny_pair, write_fashion


class NotWeights:
    pass


@pytest.fixture(scope="module")
def ws(tmp_path_factory):
    d = tmp_path_factory.mktemp("ws")
    vae, var = tiny_pair()
    save_model(vae, var, d / "m")
    torch.save(vae.state_dict(), d / "vae.pth")
    torch.save(var.state_dict(), d / "var.pth")
    other = VQVAE(replace(architecture("tiny")[0], vocab_size=16, ch=32, norm_groups=32))  # .pth: 32 groups
    torch.save(other.state_dict(), d / "other_vae.pth")
    (d / "empty.pth").write_bytes(b"")
    (d / "garbage.pth").write_bytes(os.urandom(300))
    (d / "garbage.npz").write_bytes(os.urandom(300))
    torch.save({"x": NotWeights()}, d / "evil.pth")
    (d / "afile").write_text("a regular file: nothing can be created under it")
    Image.new("RGB", (8, 8), (200, 30, 30)).save(d / "img.png")
    (d / "bad.png").write_bytes(b"not a png")
    Image.new("L", (8, 8), 0).save(d / "black.png")
    (d / "clash").mkdir()
    Image.new("RGB", (8, 8)).save(d / "clash" / "000000.png")  # someone else's file where a sample would go
    (d / "nolatest" / "ckpt-00000010").mkdir(parents=True)  # a checkpoint's folder, but not a complete one
    (d / "nolatest" / "ckpt-00000010" / "keep.txt").write_text("a checkpoint's file")
    (d / "badlatest").mkdir()
    (d / "badlatest" / "latest").write_text("ckpt-00000099\n")
    (d / "emptydir").mkdir()
    write_fashion(d / "halffashion")  # Fashion-MNIST's train files without its test files
    for name in ("t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz"):
        (d / "halffashion" / name).unlink()
    for name, broken in (("badstate", "trainer.json"), ("badweights", "__0_0.distcp"), ("badindex", ".metadata")):
        assert main([*TOKENIZER, "--run-dir", str(d / name)]) == 0  # a real run, as the command leaves it
        (d / name / "ckpt-00000002" / broken).write_bytes(b"" if name == "badweights" else b"PK\x03\x04 truncated")
    (d / "twins").mkdir()
    for name in ("a.png", "a.jpg"):
        Image.new("RGB", (8, 8), (10, 200, 30)).save(d / "twins" / name)
    np.savez(d / "samples.npz", arr_0=np.zeros((4, 8, 8, 3), np.uint8), arr_1=np.zeros(4, np.int64))
    np.savez(d / "stats.npz", mu=np.zeros(3), sigma=np.eye(3))
    np.savez(d / "badstats.npz", mu=np.array(["a", "b"]), sigma=np.eye(2))
    np.savez(d / "floats.npz", arr_0=np.zeros((4, 8, 8, 3), np.float32))
    (d / "drawn").mkdir()
    (d / "drawn" / "samples.json").write_text('{"plan": {"seed": 5}, "runs": [], "complete": false}')
    for folder, classes in (("data", ("x", "y")), ("otherdata", ("x", "z"))):
        for c in classes:
            (d / folder / c).mkdir(parents=True)
            for i in range(8):
                Image.new("RGB", (8, 8), (i * 30, 90, 40)).save(d / folder / c / f"{i}.png")
    return d


SAMPLE = ["sample", "--model", "{m}", "--out", "{d}/out"]
EDIT_TO = ["edit", "--model", "{m}", "--out", "{d}/e.png"]
EDIT = [*EDIT_TO, "--image", "{d}/img.png", "--box", "0.25,0.25,0.75,0.75"]
EDIT_BOX = [*EDIT_TO, "--image", "{d}/img.png", "--box"]
TOKENIZER = "train-tokenizer --data digits --preset tiny --steps 2 --batch-size 8 --device cpu --quiet".split()
TRAIN = "train --tokenizer digits --data digits --preset tiny --steps 2 --batch-size 8 --device cpu --quiet --run-dir {d}/varrun".split()
EVAL = ["eval", "--preset", "digits", "--n-per-class", "2", "--device", "cpu"]
METRICS = ["eval", "{d}/samples.npz", "--features", "digits", "--device", "cpu"]
PER_CLASS = [*SAMPLE, "--per-class", "2"]
BENCH = ["bench", "--preset", "tiny", "--device", "cpu", "--runs", "1"]

# fmt: off
CASES = {
    # sample
    "sample: 0-byte .pth": (
        ["sample", "--vae", "{d}/empty.pth", "--var", "{d}/var.pth"],
        r"empty.pth is empty \(0 bytes\)",
    ),
    "sample: random bytes": (
        ["sample", "--vae", "{d}/vae.pth", "--var", "{d}/garbage.pth"],
        "not a readable weights-only",
    ),
    "sample: pickled object": (
        ["sample", "--vae", "{d}/evil.pth", "--var", "{d}/var.pth"],
        "not a readable weights-only",
    ),
    "sample: tokenizer as VAR": (
        ["sample", "--vae", "{d}/vae.pth", "--var", "{d}/vae.pth"],
        "it is a VQ-VAE tokenizer",
    ),
    "sample: mismatched pair": (["sample", "--vae", "{d}/other_vae.pth", "--var", "{d}/var.pth"], "do not fit together: codebook size: VAR 32, VAE 16"),
    "sample: missing file": (["sample", "--vae", "{d}/nope.pth", "--var", "{d}/var.pth"], "nope.pth: no such file"),
    "sample: no model": (["sample"], "name a model"),
    "sample: two models": ([*SAMPLE, "--var", "{d}/var.pth"], "either --model or --vae"),
    "sample: unknown name": (["sample", "--model", "nope"], "unknown model 'nope'"),
    "sample: seed -1": ([*SAMPLE, "--seed", "-1"], r"--seed must be an integer in \[0, 2\*\*63 - 1\]"),
    "sample: cfg nan": ([*SAMPLE, "--cfg", "nan"], "--cfg must be a finite number"),
    "sample: cfg inf": ([*SAMPLE, "--cfg", "inf"], "--cfg must be a finite number"),
    "sample: top-p 1.5": ([*SAMPLE, "--top-p", "1.5"], r"--top-p must lie in \[0, 1\]"),
    "sample: top-k -1": ([*SAMPLE, "--top-k", "-1"], "--top-k must be an integer ≥ 0"),
    "sample: top-k 1.5": ([*SAMPLE, "--top-k", "1.5"], "argument --top-k: '1.5' is not an integer"),
    "sample: device banana": ([*SAMPLE, "--device", "banana"], "unknown device 'banana'"),
    "sample: class cat": ([*SAMPLE, "--class", "cat"], "not an integer class id"),
    "sample: class out of range": (
        [*SAMPLE, "--class", "4"],
        r"--class 4 is out of range: this model has classes 0..3",
    ),
    "sample: n 0": ([*SAMPLE, "--n", "0"], "--n must be at least 1"),
    "sample: batch 0": ([*SAMPLE, "--batch-size", "0"], "--batch-size must be at least 1"),
    "sample: n 10^12": ([*SAMPLE, "--n", "1000000000000"], r"1,000,000,000,000 images of 8×8 need about .* GB"),
    "sample: unwritable out": (
        ["sample", "--model", "{m}", "--out", "{d}/afile/out"],
        "--out .*afile/out is not writable",
    ),
    "sample: out is a file": (["sample", "--model", "{m}", "--out", "{d}/afile"], "is a file, not a directory"),
    "sample: someone else's files": (
        ["sample", "--model", "{m}", "--out", "{d}/clash"],
        "000000.png exists and was not written by nextscale",
    ),
    # edit
    "edit: out without .png": ([*EDIT, "--out", "{d}/noext"], "--out .*noext must end in .png"),
    "edit: unwritable out": ([*EDIT, "--out", "{d}/afile/e.png"], "not writable"),
    "edit: keep-scales 100": ([*EDIT, "--keep-scales", "100"], r"--keep-scales must be an integer in \[0, 3\]"),
    "edit: keep-scales -1": ([*EDIT, "--keep-scales", "-1"], "--keep-scales must be ≥ 0"),
    "edit: feather -1": ([*EDIT, "--feather", "-1"], "--feather must be a finite number"),
    "edit: feather 1000": ([*EDIT, "--feather", "1000"], r"--feather must lie in \[0, 2\]"),
    "edit: feather nan": ([*EDIT, "--feather", "nan"], "--feather must be a finite number"),
    "edit: seed -1": ([*EDIT, "--seed", "-1"], "--seed must be an integer"),
    "edit: cfg nan": ([*EDIT, "--cfg", "nan"], "--cfg must be a finite number"),
    "edit: not an image": ([*EDIT_TO, "--image", "{d}/bad.png", "--box", "0.2,0.2,0.8,0.8"], "bad.png: not a readable"),
    "edit: no such image": ([*EDIT_TO, "--image", "{d}/nope.png", "--box", "0.2,0.2,0.8,0.8"], "nope.png: no such file"),
    "edit: empty mask": ([*EDIT_TO, "--image", "{d}/img.png", "--mask", "{d}/black.png"], "the mask is empty"),
    "edit: box outside": ([*EDIT_BOX, "0,0,1.5,1"], r"outside \[0, 1\]"),
    "edit: box of three": ([*EDIT_BOX, "0,0,1"], "four numbers"),
    "edit: box empty": ([*EDIT_BOX, "0.5,0,0.5,1"], "is empty"),
    "edit: class out of range": ([*EDIT, "--class", "9"], "--class 9 is out of range"),
    "edit: no region": ([*EDIT_TO, "--image", "{d}/img.png"], "exactly one of --mask"),
    "edit: two images, one name": (["edit", "--model", "{m}", "--image", "{d}/twins", "--box", "0.2,0.2,0.8,0.8", "--out", "{d}/twins-out"], "several images named a"),
    "edit: out is the image folder": (["edit", "--model", "{m}", "--image", "{d}/twins", "--box", "0.2,0.2,0.8,0.8", "--out", "{d}/twins"], "is the --image folder"),
    # train-tokenizer
    "tokenizer: vocab 0": ([*TOKENIZER, "--run-dir", "{d}/t", "--vocab-size", "0"], "vocab_size must be at least 1"),
    "tokenizer: ch-mult 0,0": ([*TOKENIZER, "--run-dir", "{d}/t", "--ch-mult", "0,0"], "ch_mult needs positive"),
    "tokenizer: ch-mult words": (
        [*TOKENIZER, "--run-dir", "{d}/t", "--ch-mult", "a,b"],
        "--ch-mult takes comma-separated integers",
    ),
    "tokenizer: patch-nums down": ([*TOKENIZER, "--run-dir", "{d}/t", "--patch-nums", "3,2"], "increase strictly"),
    "tokenizer: lr nan": ([*TOKENIZER, "--run-dir", "{d}/t", "--lr", "nan"], "--lr must be a finite number"),
    "tokenizer: lr 0": ([*TOKENIZER, "--run-dir", "{d}/t", "--lr", "0"], "--lr must be positive"),
    "tokenizer: steps 0": ([*TOKENIZER, "--run-dir", "{d}/t", "--steps", "0"], "--steps must be at least 1"),
    "tokenizer: warmup -1": ([*TOKENIZER, "--run-dir", "{d}/t", "--warmup-steps", "-1"], "--warmup-steps must be ≥ 0"),
    "tokenizer: grad-clip 0": ([*TOKENIZER, "--run-dir", "{d}/t", "--grad-clip", "0"], "--grad-clip must be positive"),
    "tokenizer: lr-end-ratio 2": (
        [*TOKENIZER, "--run-dir", "{d}/t", "--lr-end-ratio", "2"],
        r"--lr-end-ratio must lie in \[0, 1\]",
    ),
    "tokenizer: beta -1": ([*TOKENIZER, "--run-dir", "{d}/t", "--beta", "-1"], "--beta must lie in"),
    "tokenizer: seed -1": ([*TOKENIZER, "--run-dir", "{d}/t", "--seed", "-1"], "--seed must be an integer"),
    "tokenizer: device banana": ([*TOKENIZER, "--run-dir", "{d}/t", "--device", "banana"], "unknown device 'banana'"),
    "tokenizer: bf16 on cpu": (
        [*TOKENIZER, "--run-dir", "{d}/t", "--precision", "bf16"],
        "--precision bf16 trains on a CUDA device only",
    ),
    "tokenizer: no such data": (
        [*TOKENIZER[:2], "{d}/nope", *TOKENIZER[3:], "--run-dir", "{d}/t"],
        "nope: not a directory",
    ),
    "tokenizer: batch over data": (
        [*TOKENIZER, "--run-dir", "{d}/t", "--batch-size", "5000"],
        "fewer than one batch of 5000",
    ),
    "tokenizer: val classes differ": ([*TOKENIZER[:2], "{d}/data", *TOKENIZER[3:], "--val-data", "{d}/otherdata", "--run-dir", "{d}/t"], "does not have the classes of --data"),
    "tokenizer: unwritable run-dir": ([*TOKENIZER, "--run-dir", "{d}/afile/run"], "--run-dir .* is not writable"),
    "tokenizer: run without latest": (
        [*TOKENIZER, "--run-dir", "{d}/nolatest"],
        r"already holds a run \(ckpt-00000010\): pass --resume",
    ),
    "tokenizer: resume on nothing": (
        [*TOKENIZER, "--run-dir", "{d}/emptydir", "--resume"],
        r"--resume: .*emptydir holds no complete checkpoint to continue \(nothing of a run\)",
    ),
    "tokenizer: resume, latest to nowhere": (
        [*TOKENIZER, "--run-dir", "{d}/badlatest", "--resume"],
        r"badlatest holds no complete checkpoint to continue \(only latest\)",
    ),
    "tokenizer: resume, incomplete checkpoint": (
        [*TOKENIZER, "--run-dir", "{d}/nolatest", "--resume"],
        r"nolatest holds no complete checkpoint to continue \(only ckpt-00000010\)",
    ),
    "tokenizer: resume, broken state": (
        [*TOKENIZER, "--run-dir", "{d}/badstate", "--resume"],
        "ckpt-00000002/trainer.json is missing or unreadable",
    ),
    "tokenizer: resume, empty weights": (
        [*TOKENIZER, "--run-dir", "{d}/badweights", "--resume"],
        "ckpt-00000002 could not be loaded",
    ),
    "tokenizer: resume, broken checkpoint index": (
        [*TOKENIZER, "--run-dir", "{d}/badindex", "--resume"],
        "ckpt-00000002/.metadata is not a readable checkpoint index",
    ),
    "tokenizer: existing run, no resume": (
        [*TOKENIZER, "--run-dir", "{d}/badstate"],
        "already holds a run .*pass --resume",
    ),
    # train
    "train: 0-byte tokenizer": ([*TRAIN, "--tokenizer", "{d}/empty.pth"], "empty.pth is empty"),
    "train: no such tokenizer": ([*TRAIN, "--tokenizer", "{d}/nope"], "nope: no such file"),
    "train: unknown tokenizer name": ([*TRAIN, "--tokenizer", "digitz"], "unknown tokenizer 'digitz'"),
    "train: depth 0": ([*TRAIN, "--depth", "0"], "depth must be at least 1"),
    "train: label smoothing 2": ([*TRAIN, "--label-smoothing", "2"], r"--label-smoothing must lie in \[0, 1\)"),
    "train: cond-drop 1.5": ([*TRAIN, "--cond-drop-rate", "1.5"], r"--cond-drop-rate must lie in \[0, 1\)"),
    "train: drop-path 1": ([*TRAIN, "--drop-path-rate", "1"], r"--drop-path-rate must lie in \[0, 1\)"),
    "train: lr nan": ([*TRAIN, "--lr", "nan"], "--lr must be a finite number"),
    "train: fp16 on a cpu": ([*TRAIN, "--precision", "fp16"], "--precision fp16 trains on a CUDA device only"),
    "train: fsdp without torchrun": ([*TRAIN, "--fsdp"], "--fsdp needs torchrun"),
    "train: ema 1": ([*TRAIN, "--ema", "1"], r"--ema must lie in \[0, 1\)"),
    "train: pg 2": ([*TRAIN, "--pg", "2"], r"--pg must lie in \[0, 1\]"),
    "train: lr and base-lr": ([*TRAIN, "--lr", "1e-3", "--base-lr", "1e-4"], "give --lr or --base-lr, not both"),
    "train: keep 0": ([*TRAIN, "--keep", "0"], "--keep must be at least 1"),
    "train: workers -1": ([*TRAIN, "--workers", "-1"], "--workers must be ≥ 0"),
    "train: unknown recipe": ([*TRAIN, "--recipe", "var-d99"], "invalid choice: 'var-d99'"),
    "tokenize: no such data": (["tokenize", "--data", "{d}/nope", "--tokenizer", "digits", "--out", "{d}/tok"],
                               "nope: not a directory"),
    "tokenize: shard size 0": (["tokenize", "--data", "digits", "--tokenizer", "digits", "--out", "{d}/tok",
                                "--shard-size", "0"], "--shard-size must be at least 1"),
    "tokenize: unwritable out": (["tokenize", "--data", "digits", "--tokenizer", "digits", "--out",
                                  "{d}/afile/tok"], "--out .* is not writable"),
    "export: no run": (["export", "{d}/emptydir", "{d}/exported"], r"emptydir holds no complete checkpoint \(nothing of a run\)"),
    "export: not a directory": (["export", "{d}/nope", "{d}/exported"], "nope: not a run directory"),
    "export: ema of a run without": (["export", "{d}/badweights", "{d}/exported", "--weights", "ema"],
                                     "has no EMA weights"),
    "train: out unwritable": ([*TRAIN, "--out", "{d}/afile/model"], "--out .* is not writable"),
    # eval
    "eval: unwritable json": ([*EVAL, "--json", "{d}/afile/r.json"], "not writable"),
    "eval: json suffix": ([*EVAL, "--json", "{d}/r.txt"], "must end in .json"),
    "eval: n-per-class 1": ([*EVAL, "--n-per-class", "1"], "--n-per-class must be at least 2"),
    "eval: unknown preset": ([*EVAL, "--preset", "imagenet"], "argument --preset: invalid choice"),
    "eval: edit-cfg nan": ([*EVAL, "--edit-cfg", "nan"], "--edit-cfg must be a finite number"),
    "eval: not a digits model": ([*EVAL, "--model", "{m}"], "the digits evaluation needs a 10-class model"),
    "eval: seed -1": ([*EVAL, "--seed", "-1"], "--seed must be an integer"),
    "eval: preset with samples": ([*EVAL, "{d}/samples.npz"], "--preset digits draws and judges its own samples: SAMPLES is for"),
    "eval: nothing to evaluate": (["eval"], "give SAMPLES to evaluate"),
    "eval: no such samples": (["eval", "{d}/nothing.npz", "--features", "digits"], "nothing.npz: no such file or folder"),
    "eval: not an npz": (["eval", "{d}/img.png", "--features", "digits"], "expected an .npz file"),
    "eval: not a zip": (["eval", "{d}/garbage.npz", "--features", "digits"], "not a readable .npz"),
    "eval: float images": (["eval", "{d}/floats.npz", "--features", "digits"], "the ADM format is uint8"),
    "eval: empty folder": (["eval", "{d}/emptydir", "--features", "digits"], "no images"),
    "eval: unknown metric": ([*METRICS, "--metrics", "fid,sfid"], "unknown 'sfid'"),
    "eval: fid without ref": ([*METRICS, "--metrics", "fid"], "compare with a reference: give --ref"),
    "eval: prc on statistics": ([*METRICS, "--ref", "{d}/stats.npz", "--metrics", "prc"], "holds statistics only: prc"),
    "eval: other features' stats": ([*METRICS, "--ref", "{d}/stats.npz", "--metrics", "fid"], "statistics of inception features cannot be compared"),
    "eval: unknown features": ([*METRICS, "--features", "resnet"], "not a registered network"),
    "eval: features file missing": ([*METRICS, "--features", "{d}/net.pt2"], "net.pt2: no such file"),
    "eval: features not a program": ([*METRICS, "--features", "{d}/garbage.pth"], "expected a torch.export file"),
    "eval: inception weights missing": ([*METRICS, "--features", "inception", "--inception-weights", "{d}/w.pth"], "w.pth: no such file"),
    "eval: stats suffix": ([*METRICS, "--save-stats", "{d}/s.txt"], "must end in .npz"),
    "eval: batch 0": ([*METRICS, "--batch-size", "0"], "--batch-size must be at least 1"),
    "eval: preset with features": ([*EVAL, "--features", "digits"], "--features is for evaluating a sample set"),
    "eval: model without preset": ([*METRICS, "--model", "digits"], "--model goes with --preset digits"),
    "eval: cfg without preset": ([*METRICS, "--cfg", "2"], "--cfg goes with --preset digits"),
    "eval: inception weights, other net": ([*METRICS, "--inception-weights", "{d}/w.pth"], "--inception-weights goes with --features inception"),
    "eval: damaged npz entry": (["eval", "{d}/badstats.npz", "--features", "digits"], "badstats.npz: not an ADM or statistics .npz"),
    # sample --per-class
    "per-class: 0": ([*SAMPLE, "--per-class", "0"], "--per-class must be at least 1"),
    "per-class: with --n": ([*PER_CLASS, "--n", "3"], "give --n or --per-class, not both"),
    "per-class: no-png": ([*PER_CLASS, "--no-png"], "drop --no-png"),
    "per-class: reject alone": ([*PER_CLASS, "--reject", "{d}/c.pt2"], "needs both --reject CLASSIFIER and --keep-top"),
    "per-class: keep-top 1.5": ([*PER_CLASS, "--reject", "{d}/c.pt2", "--keep-top", "1.5"], r"--keep-top must be a fraction in \[0.01, 1\]"),
    "per-class: keep-top 0.001": ([*PER_CLASS, "--reject", "{d}/c.pt2", "--keep-top", "0.001"], r"--keep-top must be a fraction in \[0.01, 1\]"),
    "per-class: classifier missing": ([*PER_CLASS, "--reject", "{d}/c.pt2", "--keep-top", "0.5"], "--reject .*c.pt2: no such file"),
    "per-class: class out of range": ([*PER_CLASS, "--class", "99"], "--class 99 is out of range"),
    "per-class: not our folder": ([*SAMPLE[:-1], "{d}/twins", "--per-class", "2"], "is not empty and holds no samples.json"),
    "per-class: other settings": ([*SAMPLE[:-1], "{d}/drawn", "--per-class", "2"], "holds samples drawn with other settings"),
    "sample: unknown schedule": ([*SAMPLE, "--cfg-schedule", "cosine"], "--cfg-schedule must be one of linear, constant, power:P"),
    "sample: power without P": ([*SAMPLE, "--cfg-schedule", "power:"], "--cfg-schedule must be one of"),
    "sample: negative power": ([*SAMPLE, "--cfg-schedule", "power:-2"], "--cfg-schedule power:P needs P ≥ 0"),
    "sample: guidance list too short": ([*SAMPLE, "--cfg-schedule", "list:1,2"], "the guidance list has 2 weights; this model has 4 scales"),
    "sample: temperature -1": ([*SAMPLE, "--temperature", "-1"], "--temperature must be > 0"),
    "sample: temperature list": ([*SAMPLE, "--temperature", "1,1"], "--temperature has 2 entries; this model has 4 scales"),
    "sample: temperature text": ([*SAMPLE, "--temperature", "hot"], "argument --temperature: 'hot' is not a number"),
    "sample: top-k list": ([*SAMPLE, "--top-k", "5,5,5"], "--top-k has 3 entries; this model has 4 scales"),
    "sample: top-p list value": ([*SAMPLE, "--top-p", "0.5,2,0.5,0.5"], r"--top-p must lie in \[0, 1\], got 2"),
    "sample: guidance scales": ([*SAMPLE, "--guidance-scales", "3"], "argument --guidance-scales: '3' is not A:B"),
    "sample: handoff alone": ([*SAMPLE, "--handoff", "2"], "--fine-model and --handoff go together"),
    "sample: fine model, other tokenizer": ([*SAMPLE, "--fine-model", "digits-small", "--handoff", "2"], "comes with another tokenizer"),
    "sample: handoff 0": ([*SAMPLE, "--fine-model", "{m}", "--handoff", "0"], "--handoff must be a scale in 1..3"),
    "sample: precision fp16": ([*SAMPLE, "--precision", "fp16"], "argument --precision: invalid choice"),
    "sample: compile bogus": ([*SAMPLE, "--compile", "bogus"], "unknown torch.compile backend 'bogus'"),
    "edit: temperature 0": ([*EDIT, "--temperature", "0"], "--temperature must be > 0"),
    "edit: handoff too far": ([*EDIT, "--fine-model", "{m}", "--handoff", "9"], "--handoff must be a scale in 1..3"),
    "sample: png without per-class": ([*SAMPLE, "--png"], "--png goes with --per-class"),
    "sample: shard size without per-class": ([*SAMPLE, "--shard-size", "8"], "--shard-size goes with --per-class"),
    "sample: unconditional with per-class": ([*PER_CLASS, "--unconditional"], "drop --unconditional"),
    "sample: unconditional with a class": ([*SAMPLE, "--unconditional", "--class", "1"], "not allowed with"),
    # serve
    "serve: port 70000": (["serve", "--port", "70000"], r"--port must be in \[0, 65535\]"),
    "serve: port -1": (["serve", "--port", "-1"], r"--port must be in \[0, 65535\]"),
    "serve: max images 0": (["serve", "--max-images", "0"], "--max-images must be at least 1"),
    "serve: vae without var": (["serve", "--vae", "{m}"], "name a model"),
    "serve: model and vae": (["serve", "--model", "digits", "--vae", "{m}", "--var", "{m}"], "not both"),
    "serve: unknown model": (["serve", "--model", "{d}/nothing", "--port", "0"], "nothing"),
    "serve: device banana": (["serve", "--device", "banana", "--port", "0"], "unknown device"),
    # demo
    "demo: out without .png": (["demo", "--out", "{d}/demo"], "must end in .png"),
    "demo: unwritable out": (["demo", "--out", "{d}/afile/demo.png"], "not writable"),
    "demo: seed -1": (["demo", "--seed", "-1", "--out", "{d}/demo.png"], "--seed must be an integer"),
    "demo: device banana": (["demo", "--device", "banana", "--out", "{d}/demo.png"], "unknown device"),
    "demo: train into a run": (
        ["demo", "--train", "--run-dir", "{d}/runs", "--out", "{d}/demo.png"],
        "already holds a run",
    ),
    # bench
    "bench: runs 0": ([*BENCH, "--runs", "0"], "--runs must be at least 1"),
    "bench: warmup -1": ([*BENCH, "--warmup", "-1"], "--warmup must be at least 0"),
    "bench: batch 0": ([*BENCH, "--batch-size", "0"], "--batch-size must be at least 1"),
    "bench: unknown preset": (["bench", "--preset", "var-d99"], "argument --preset: invalid choice"),
    "bench: compile bogus": ([*BENCH, "--compile", "bogus"], "unknown torch.compile backend 'bogus'"),
    "bench: unwritable json": ([*BENCH, "--json", "{d}/afile/b.json"], "not writable"),
    "bench: device banana": ([*BENCH, "--device", "banana"], "unknown device 'banana'"),
    "bench: orders and sweep": ([*BENCH, "--orders", "--sweep"], "choose one of .* not --sweep and --orders"),
    "bench: latents without orders": ([*BENCH, "--latents", "4"], "--latents applies to --orders"),
    "bench: no pyramid ends there": ([*BENCH, "--orders", "--latents", "7"], r"no reference pyramid ends at 7×7; choose from 1, 2, 3"),
    "bench: orders batches 0": ([*BENCH, "--orders", "--batch-sizes", "1,0"], "--batch-sizes takes integers of at least 1"),
    "bench: orders latents text": ([*BENCH, "--orders", "--latents", "a"], "--latents takes comma-separated integers"),
    "bench: orders bf16": ([*BENCH, "--orders", "--precision", "bf16"], "--orders times the eager fp32 sampler"),
    "bench: width without depth": ([*BENCH, "--orders", "--width-per-depth", "32"], "--width-per-depth applies with --depth"),
    # classes by name; folders that are not classes
    "edit: class by unknown name": ([*EDIT, "--class", "cat"], r"--class 'cat' is not one of this model's 4 class names \(0, 1, 2, 3\) and not an integer class id"),
    "sample: class name unknown": ([*SAMPLE, "--class", "name:7"], "--class '7' is not one of this model's 4 class names"),
    "sample: class id not a number": ([*SAMPLE, "--class", "id:seven"], "--class 'seven' is not an integer class id"),
    "tokenize: class folder without images": (["tokenize", "--data", "{d}/nolatest", "--tokenizer", "{m}/vae", "--out", "{d}/tok"], r"nolatest/ckpt-00000010 holds no image files \(1 such class folder\(s\)\)"),
    # evaluating your own images (a folder of mixed sizes is read: tests/test_evaluation.py)
    "eval: unfinished sample folder": (["eval", "{d}/drawn", "--features", "digits"], "drawn: nextscale sample's folder holds no samples.npz yet: the run has not finished"),
    "eval-tokenizer: no-rfid, features": (["eval-tokenizer", "--tokenizer", "digits", "--data", "digits", "--no-rfid", "--features", "digits"], "--features is for rFID: drop --no-rfid"),
    "eval-tokenizer: no-rfid, weights": (["eval-tokenizer", "--tokenizer", "digits", "--data", "digits", "--no-rfid", "--inception-weights", "{d}/w.pth"], "--inception-weights is for rFID: drop --no-rfid"),
    "eval-tokenizer: weights, other net": (["eval-tokenizer", "--tokenizer", "digits", "--data", "digits", "--features", "digits", "--inception-weights", "{d}/w.pth"], "--inception-weights goes with --features inception"),
    # a folder of Fashion-MNIST's IDX files without all four
    "tokenize: fashion folder lacking files": (["tokenize", "--data", "{d}/halffashion", "--tokenizer", "{m}/vae", "--out", "{d}/tok"], "halffashion lacks t10k-images-idx3-ubyte.gz, t10k-labels-idx1-ubyte.gz"),
    "tokenizer: fashion folder lacking files": ([*TOKENIZER[:2], "{d}/halffashion", *TOKENIZER[3:], "--run-dir", "{d}/t"], "halffashion lacks t10k-images-idx3-ubyte.gz, t10k-labels-idx1-ubyte.gz"),
    "eval-tokenizer: fashion folder lacking files": (["eval-tokenizer", "--tokenizer", "{m}/vae", "--data", "{d}/halffashion", "--no-rfid"], "halffashion lacks t10k-images-idx3-ubyte.gz"),
    # the command itself
    "no command": ([], "the following arguments are required: command"),
    "unknown command": (["paint"], "invalid choice: 'paint'"),
    # tokens: --rebuild removes a token folder's own files only, so a folder of other files is still refused
    "tokenize: rebuild over other files": (["tokenize", "--data", "digits", "--tokenizer", "digits", "--out", "{d}/twins",
                                             "--rebuild"], "twins is not empty and holds no tokenize.json"),
}
# fmt: on


def run_cli(argv: list[str]) -> int:
    try:
        return main(argv)
    except SystemExit as e:  # argparse's own checks (types, choices) exit from inside parse_args
        return e.code


@pytest.fixture
def no_computation(monkeypatch):
    """The evaluation and the benchmark must refuse bad input before they compute anything."""

    def refuse(*args, **kwargs):
        raise AssertionError("computed before the arguments and outputs were checked")

    monkeypatch.setattr("nextscale.evaluation.evaluate_samples", refuse)
    monkeypatch.setattr("nextscale.evaluation.evaluate_edits", refuse)
    monkeypatch.setattr("nextscale.bench.bench_sampling", refuse)
    monkeypatch.setattr("nextscale.bench.orders.bench_orders", refuse)


@pytest.mark.parametrize("case", list(CASES))
def test_bad_input_ends_in_one_line_and_exit_code_2(case, ws, capsys, no_computation):
    argv, message = CASES[case]
    if case == "demo: train into a run":
        (ws / "runs" / "var").mkdir(parents=True, exist_ok=True)
        (ws / "runs" / "var" / "latest").write_text("ckpt-00000001\n")
    code = run_cli([a.format(d=ws, m=ws / "m") for a in argv])
    err = capsys.readouterr().err
    assert code == 2, err
    assert len(err.strip().splitlines()) == 1, err
    assert re.search(r"^nextscale( [a-z-]+)?: error: ", err) and re.search(message, err), err


def test_no_checkpoint_was_touched(ws, capsys):
    """The cases above that met a run directory left every file of it as it was."""
    for case in (
        "tokenizer: run without latest",
        "tokenizer: resume, latest to nowhere",
        "tokenizer: resume, incomplete checkpoint",
    ):
        argv = [a.format(d=ws, m=ws / "m") for a in CASES[case][0]]
        assert main(argv) == 2
    assert (ws / "nolatest" / "ckpt-00000010" / "keep.txt").read_text() == "a checkpoint's file"
    assert sorted(p.name for p in (ws / "badlatest").iterdir()) == ["latest"]
    assert not (ws / "emptydir" / "latest").exists()


REFUSED_RUNS = {
    "batch over data": [*TOKENIZER, "--batch-size", "5000"],
    "val classes differ": [*TOKENIZER[:2], "{d}/data", *TOKENIZER[3:], "--val-data", "{d}/otherdata"],
    "fsdp without torchrun": pytest.param([*TRAIN[:-2], "--fsdp"], marks=pytest.mark.slow),  # encodes the data first
    "label smoothing 2": [*TRAIN[:-2], "--label-smoothing", "2"],
}


@pytest.mark.parametrize("argv", list(REFUSED_RUNS.values()), ids=list(REFUSED_RUNS))
def test_a_refused_run_leaves_no_directory_behind(argv, ws, tmp_path, capsys):
    argv = [a.format(d=ws) for a in argv]
    assert main([*argv, "--run-dir", str(tmp_path / "run"), "--out", str(tmp_path / "out")]) == 2
    assert len(capsys.readouterr().err.strip().splitlines()) == 1
    assert sorted(p.name for p in tmp_path.iterdir()) == []  # neither the run directory nor --out


def test_a_run_stopped_before_its_first_checkpoint_starts_again_with_resume(tmp_path, capsys):
    run = tmp_path / "run"
    run.mkdir()
    (run / "log.jsonl").write_text('{"step": 3, "loss": 1.0}\n')  # as a run killed before its first checkpoint
    (run / "runs.jsonl").write_text('{"from_step": 0}\n')
    assert main([*TOKENIZER, "--run-dir", str(run)]) == 2
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1 and "pass --resume to start it again from step 0" in err, err
    assert main([*TOKENIZER, "--run-dir", str(run), "--resume"]) == 0
    assert "holds a run stopped before its first checkpoint: starting it again from step 0" in capsys.readouterr().err
    assert (run / "ckpt-00000002").is_dir() and len((run / "runs.jsonl").read_text().splitlines()) == 2


@pytest.mark.parametrize("content", [b"", os.urandom(200), None], ids=["empty", "random", "missing"])
def test_golden_check_refuses_files_that_are_not_reference_tensors(content, tmp_path, capsys):
    path = tmp_path / "ref.safetensors"
    if content is not None:
        path.write_bytes(content)
    assert golden.main([str(path)]) == 2
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1 and f"{path}" in err, err
