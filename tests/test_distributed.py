"""Training at scale on the CPU: torchrun with gloo, tiny models, real processes (killed for real).

Two processes must train the weights of one with the same global batch (up to the order of float additions);
a run killed with SIGKILL and resumed must end bit-identical to one that was never interrupted.
"""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

pytestmark = pytest.mark.cpu_only

ENV = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONWARNINGS": "ignore"}  # 2 processes on 2 cores
COMMON = ["--data", "digits", "--preset", "tiny", "--batch-size", "16", "--eval-every", "1000", "--device", "cpu",
          "--quiet", "--lr", "3e-3", "--warmup-steps", "2"]  # fmt: skip


def command(args: list[str], nproc: int) -> list[str]:
    if nproc == 1:
        return [sys.executable, "-m", "nextscale", *args]
    # --standalone: a rendezvous on localhost port 0, i.e. a free port picked by the OS
    return [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", str(nproc),
            "-m", "nextscale", *args]  # fmt: skip


def run(args: list[str], nproc: int = 1, expect: int = 0) -> subprocess.CompletedProcess:
    done = subprocess.run(command(args, nproc), env=ENV, capture_output=True, text=True, timeout=300)
    assert done.returncode == expect, done.stderr[-3000:]
    return done


def weights(run_dir: Path, stage: str) -> dict[str, torch.Tensor]:
    sub = "var/" if stage == "train" else ""
    return load_file(run_dir / "model" / sub / "model.safetensors")


def max_difference(a: dict, b: dict) -> float:
    assert a.keys() == b.keys()
    return max((a[k].double() - b[k].double()).abs().max().item() for k in a)


def bit_identical(a: dict, b: dict) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


@pytest.fixture(scope="module")
def tokenizer(tmp_path_factory) -> Path:
    run_dir = tmp_path_factory.mktemp("tok")
    run(["train-tokenizer", *COMMON, "--steps", "2", "--run-dir", str(run_dir)])
    return run_dir / "model"


def stage_args(stage: str, tokenizer: Path, steps: int, run_dir: Path, *extra: str) -> list[str]:
    if stage == "train":  # label dropout and drop path: per-sample draws that must not depend on the world size
        extra = ("--tokenizer", str(tokenizer), "--cond-drop-rate", "0.5", "--drop-path-rate", "0.3", *extra)
    else:  # code revival: a draw on the whole global batch, and hit counts summed over ranks
        extra = ("--revive-every", "2", *extra)
    return [stage, *COMMON, "--steps", str(steps), "--run-dir", str(run_dir), *extra]


@pytest.mark.parametrize("stage, mode", [("train", "ddp"), ("train", "fsdp"), ("train-tokenizer", "ddp")])
def test_two_processes_train_the_weights_of_one(stage, mode, tokenizer, tmp_path):
    one, two = tmp_path / "one", tmp_path / "two"
    run(stage_args(stage, tokenizer, 6, one, "--ema", "0.5"))
    run(stage_args(stage, tokenizer, 6, two, "--ema", "0.5", *(["--fsdp"] if mode == "fsdp" else [])), nproc=2)
    # The tokenizer's Adam steps turn float-order noise in near-zero gradients into a few 1e-6 within 6 steps.
    assert max_difference(weights(one, stage), weights(two, stage)) < (1e-6 if stage == "train" else 1e-5)
    records = [json.loads(line) for line in (two / "log.jsonl").read_text().splitlines()]
    assert {"loss", "grad_norm", "lr", "tokens_per_s", "images_per_s", "peak_memory_gib"} <= records[0].keys()
    started = json.loads((two / "runs.jsonl").read_text().splitlines()[0])
    assert started["world_size"] == 2 and "torch" in started["versions"]


def test_an_fsdp_checkpoint_of_two_processes_resumes_in_one_and_in_two(tokenizer, tmp_path):
    whole = tmp_path / "whole"
    run(stage_args("train", tokenizer, 6, whole, "--fsdp", "--save-every", "3", "--ema", "0.5"), nproc=2)
    assert (whole / "ckpt-00000003" / "__1_0.distcp").is_file()  # one shard per rank
    for nproc, extra in ((1, []), (2, ["--fsdp"])):
        resumed = tmp_path / f"resumed{nproc}"
        resumed.mkdir()
        os.symlink(whole / "ckpt-00000003", resumed / "ckpt-00000003")
        (resumed / "latest").write_text("ckpt-00000003\n")
        run(stage_args("train", tokenizer, 6, resumed, "--ema", "0.5", "--resume", *extra), nproc=nproc)
        assert max_difference(weights(whole, "train"), weights(resumed, "train")) < 1e-6


def wait_for(path: Path, process: subprocess.Popen, timeout: float = 120) -> None:
    deadline = time.time() + timeout
    while not path.exists():
        assert process.poll() is None, process.stderr.read()[-2000:] if process.stderr else "exited"
        assert time.time() < deadline, f"{path} never appeared"
        time.sleep(0.01)


def interrupted(args: list[str], nproc: int, run_dir: Path, sig: int) -> subprocess.Popen:
    """Starts a run and sends `sig` to every process of it once its second checkpoint is published."""
    process = subprocess.Popen(command(args, nproc), env=ENV, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                               text=True, start_new_session=True)  # fmt: skip
    wait_for(run_dir / "ckpt-00000010", process)
    os.killpg(process.pid, sig) if sig == signal.SIGKILL else process.send_signal(sig)
    process.wait(timeout=120)
    return process


@pytest.mark.parametrize("stage", ["train", "train-tokenizer"])
@pytest.mark.parametrize("nproc", [1, 2])
def test_a_run_killed_with_sigkill_resumes_bit_identical(stage, nproc, tokenizer, tmp_path):
    steps = "40" if stage == "train-tokenizer" else "80"  # long enough that the kill lands mid-run
    whole, killed = tmp_path / "whole", tmp_path / "killed"
    run(stage_args(stage, tokenizer, int(steps), whole, "--save-every", "5", "--log-every", "7"), nproc=nproc)
    args = stage_args(stage, tokenizer, int(steps), killed, "--save-every", "5", "--log-every", "7")
    process = interrupted(args, nproc, killed, signal.SIGKILL)
    assert process.returncode == -signal.SIGKILL
    assert not (killed / "model").exists() and (killed / "latest").read_text().strip() != f"ckpt-{int(steps):08d}"
    run([*args, "--resume"], nproc=nproc)
    assert bit_identical(weights(whole, stage), weights(killed, stage))


def test_sigterm_saves_a_checkpoint_then_the_run_resumes(tokenizer, tmp_path):
    whole, stopped = tmp_path / "whole", tmp_path / "stopped"
    args = ["--save-every", "10", "--log-every", "7"]
    run(stage_args("train", tokenizer, 80, whole, *args))
    process = interrupted(stage_args("train", tokenizer, 80, stopped, *args), 1, stopped, signal.SIGTERM)
    assert process.returncode == 143, process.stderr.read()[-2000:]
    assert "stopped by SIGTERM" in process.stderr.read()
    step = int((stopped / "latest").read_text().strip()[5:])
    assert 10 <= step < 80  # saved where the signal came (or at the cadence, if it came right then)
    run([*stage_args("train", tokenizer, 80, stopped, *args), "--resume"])
    assert bit_identical(weights(whole, "train"), weights(stopped, "train"))


def test_a_batch_that_does_not_divide_over_the_processes_is_refused(tokenizer, tmp_path):
    args = stage_args("train", tokenizer, 2, tmp_path / "odd")
    args[args.index("--batch-size") + 1] = "15"
    done = run(args, nproc=2, expect=1)  # torchrun reports the failed workers; each printed the one line
    assert "--batch-size 15 does not divide over 2 processes" in done.stderr


def test_tokenize_shards_over_processes_and_resumes(tokenizer, tmp_path):
    args = ["tokenize", "--data", "digits", "--tokenizer", str(tokenizer), "--shard-size", "300", "--quiet"]
    run([*args, "--out", str(tmp_path / "one")])
    run([*args, "--out", str(tmp_path / "two")], nproc=2)
    files = sorted(p.name for p in (tmp_path / "one").iterdir())
    assert files == sorted(p.name for p in (tmp_path / "two").iterdir()) and "shard-00004.u16" in files
    for name in files:  # the same records, whichever process wrote them (index.json names the tokenizer only)
        if name != "index.json":
            assert (tmp_path / "one" / name).read_bytes() == (tmp_path / "two" / name).read_bytes(), name
    (tmp_path / "two" / "shard-00002.json").unlink()  # as if stopped before this shard was complete
    (tmp_path / "two" / "shard-00002.u16").write_bytes(b"partial")
    before = (tmp_path / "two" / "shard-00003.u16").stat().st_mtime_ns
    run([*args, "--out", str(tmp_path / "two")])
    assert (tmp_path / "two" / "shard-00003.u16").stat().st_mtime_ns == before  # complete shards are kept
    assert (tmp_path / "two" / "shard-00002.u16").read_bytes() == (tmp_path / "one" / "shard-00002.u16").read_bytes()
