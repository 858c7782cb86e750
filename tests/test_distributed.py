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

from nextscale.training.checkpoint import checkpoint_step, latest_checkpoint
from tests.helpers import PROCESS_ENV, run_nextscale

pytestmark = [pytest.mark.cpu_only, pytest.mark.distributed]

COMMON = "--data digits --preset tiny --batch-size 16 --eval-every 1000 --device cpu --quiet --lr 3e-3 --warmup-steps 2"
COMMON = COMMON.split()  # every run's arguments


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
    from nextscale.registry import architecture
    from nextscale.tokenizer import VQVAE

    torch.manual_seed(0)
    out = tmp_path_factory.mktemp("tok") / "model"
    VQVAE(architecture("tiny")[0]).save_pretrained(out)  # random weights tokenize as well as trained ones
    return out


@pytest.fixture(scope="module")
def baselines(tmp_path_factory):
    """Uninterrupted runs, made once and shared: (stage, nproc, steps, extra args) → run directory."""
    made = {}

    def baseline(stage: str, tokenizer: Path, nproc: int, steps: int, *extra: str) -> Path:
        key = (stage, nproc, steps, extra)
        if key not in made:
            made[key] = tmp_path_factory.mktemp("whole")
            run_nextscale(stage_args(stage, tokenizer, steps, made[key], *extra), nproc=nproc)
        return made[key]

    return baseline


def stage_args(stage: str, tokenizer: Path, steps: int, run_dir: Path, *extra: str) -> list[str]:
    if stage == "train":  # label dropout and drop path: per-sample draws that must not depend on the world size
        extra = ("--tokenizer", str(tokenizer), "--cond-drop-rate", "0.5", "--drop-path-rate", "0.3", *extra)
    else:  # code revival: a draw on the whole global batch, and hit counts summed over ranks
        extra = ("--revive-every", "2", *extra)
    return [stage, *COMMON, "--steps", str(steps), "--run-dir", str(run_dir), *extra]


@pytest.mark.parametrize("stage, mode", [("train", "ddp"), ("train", "fsdp"), ("train-tokenizer", "ddp")])
def test_two_processes_train_the_weights_of_one(stage, mode, tokenizer, baselines, tmp_path):
    one = baselines(stage, tokenizer, 1, 6, "--ema", "0.5", "--save-every", "3")
    two = baselines(
        stage, tokenizer, 2, 6, "--ema", "0.5", "--save-every", "3", *(["--fsdp"] if mode == "fsdp" else [])
    )
    # The tokenizer's Adam steps turn float-order noise in near-zero gradients into a few 1e-6 within 6 steps.
    assert max_difference(weights(one, stage), weights(two, stage)) < (1e-6 if stage == "train" else 1e-5)
    records = [json.loads(line) for line in (two / "log.jsonl").read_text().splitlines()]
    assert {"loss", "grad_norm", "lr", "tokens_per_s", "images_per_s", "peak_memory_gib"} <= records[0].keys()
    started = json.loads((two / "runs.jsonl").read_text().splitlines()[0])
    assert started["world_size"] == 2 and "torch" in started["versions"]


def test_an_fsdp_checkpoint_of_two_processes_resumes_in_one_and_in_two(tokenizer, baselines, tmp_path):
    whole = baselines("train", tokenizer, 2, 6, "--ema", "0.5", "--save-every", "3", "--fsdp")
    assert (whole / "ckpt-00000003" / "__1_0.distcp").is_file()  # one shard per rank
    for nproc, extra in ((1, []), (2, ["--fsdp"])):
        resumed = tmp_path / f"resumed{nproc}"
        resumed.mkdir()
        os.symlink(whole / "ckpt-00000003", resumed / "ckpt-00000003")
        run_nextscale(stage_args("train", tokenizer, 6, resumed, "--ema", "0.5", "--resume", *extra), nproc=nproc)
        assert max_difference(weights(whole, "train"), weights(resumed, "train")) < 1e-6


PAUSE_AT = 10  # the step at whose checkpoint an interrupted run waits for its signal (tests/paused_nextscale.py)
PAUSED_LAUNCHER = Path(__file__).with_name("paused_nextscale.py")


def paused_command(args: list[str], nproc: int) -> list[str]:
    """`nextscale ARGS` through tests/paused_nextscale.py, alone or under torchrun (on a free port)."""
    if nproc == 1:
        return [sys.executable, str(PAUSED_LAUNCHER), *args]
    torchrun = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", str(nproc)]
    return [*torchrun, str(PAUSED_LAUNCHER), *args]


def wait_for(path: Path, process: subprocess.Popen, timeout: float = 300) -> None:
    deadline = time.time() + timeout
    while not path.exists():
        assert process.poll() is None, process.stderr.read()[-2000:] if process.stderr else "exited"
        assert time.time() < deadline, f"{path} never appeared"
        time.sleep(0.01)


def process_tree(pid: int) -> list[int]:
    """`pid` and every process below it. torchrun starts each rank in a session of its own, so a signal to
    torchrun's process group does not reach them."""
    children = []
    for task in Path(f"/proc/{pid}/task").glob("*"):
        try:
            children += [int(c) for c in (task / "children").read_text().split()]
        except FileNotFoundError:  # the thread ended meanwhile
            pass
    return [pid, *(p for child in children for p in process_tree(child))]


def gone(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] in ("Z", "X")  # dead, unreaped
    except FileNotFoundError:
        return True


def interrupted(args: list[str], nproc: int, run_dir: Path, sig: int) -> subprocess.Popen:
    """Starts a run that waits for a signal once it has published its checkpoint of step PAUSE_AT, and sends it:
    SIGKILL to every process of the run, SIGINT to the command's process group as a terminal's Ctrl-C does,
    SIGTERM to the command. Returns once every process of the run has ended."""
    process = subprocess.Popen(
        paused_command(args, nproc),
        env={**PROCESS_ENV, "NEXTSCALE_TEST_PAUSE_AT": str(PAUSE_AT)},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    wait_for(run_dir / f"ckpt-{PAUSE_AT:08d}", process)
    tree = process_tree(process.pid)
    assert len(tree) > nproc or nproc == 1, f"the run's processes were not found: {tree}"  # torchrun and its ranks
    if sig == signal.SIGKILL:
        for pid in tree:
            try:
                os.kill(pid, sig)
            except ProcessLookupError:
                pass
    else:
        os.killpg(process.pid, sig) if sig == signal.SIGINT else process.send_signal(sig)
    process.wait(timeout=300)
    deadline = time.time() + 60
    while not all(gone(pid) for pid in tree):
        assert time.time() < deadline, "a process of the interrupted run outlived it"
        time.sleep(0.05)
    return process


@pytest.mark.parametrize("stage", ["train", "train-tokenizer"])
@pytest.mark.parametrize("nproc", [1, 2])
def test_a_run_killed_with_sigkill_resumes_bit_identical(stage, nproc, tokenizer, baselines, tmp_path):
    steps = "25" if stage == "train-tokenizer" else "40"
    killed = tmp_path / "killed"
    whole = baselines(stage, tokenizer, nproc, int(steps), "--save-every", "10", "--log-every", "7")
    args = stage_args(stage, tokenizer, int(steps), killed, "--save-every", "10", "--log-every", "7")
    process = interrupted(args, nproc, killed, signal.SIGKILL)
    assert process.returncode == -signal.SIGKILL
    newest = latest_checkpoint(killed)
    assert not (killed / "model").exists() and checkpoint_step(newest) == PAUSE_AT
    (killed / "latest").unlink(missing_ok=True)  # as if the kill had landed between a publish and its pointer
    run_nextscale([*args, "--resume"], nproc=nproc)
    assert bit_identical(weights(whole, stage), weights(killed, stage))


def test_sigterm_saves_a_checkpoint_then_the_run_resumes(tokenizer, baselines, tmp_path):
    stopped = tmp_path / "stopped"
    args = ["--save-every", "10", "--log-every", "7"]
    whole = baselines("train", tokenizer, 1, 40, *args)  # the SIGKILL test's
    process = interrupted(stage_args("train", tokenizer, 40, stopped, *args), 1, stopped, signal.SIGTERM)
    assert process.returncode == 143, process.stderr.read()[-2000:]
    assert "stopped by SIGTERM" in process.stderr.read()
    step = checkpoint_step(latest_checkpoint(stopped))
    assert step == PAUSE_AT + 1, step  # saved at the end of the step the signal came in
    run_nextscale([*stage_args("train", tokenizer, 40, stopped, *args), "--resume"])
    assert bit_identical(weights(whole, "train"), weights(stopped, "train"))


@pytest.mark.parametrize("nproc", [1, 2])
def test_ctrl_c_saves_a_checkpoint_then_the_run_resumes(nproc, tokenizer, baselines, tmp_path):
    """Under torchrun the terminal's Ctrl-C reaches torchrun, which passes it on to every rank."""
    stopped = tmp_path / "stopped"
    args = ["--save-every", "10", "--log-every", "7"]
    whole = baselines("train", tokenizer, nproc, 40, *args)  # the SIGKILL test's
    process = interrupted(stage_args("train", tokenizer, 40, stopped, *args), nproc, stopped, signal.SIGINT)
    err = process.stderr.read()
    assert "stopped by Ctrl-C at step" in err and "checkpoint saved: rerun with --resume" in err, err[-2000:]
    if nproc == 1:  # (torchrun ends with its own report of the signal)
        assert process.returncode == 130 and "Traceback" not in err, err[-2000:]
    step = checkpoint_step(latest_checkpoint(stopped))
    assert step == PAUSE_AT + 1, step  # saved at the end of the step the signal came in
    run_nextscale([*stage_args("train", tokenizer, 40, stopped, *args), "--resume"], nproc=nproc)
    assert bit_identical(weights(whole, "train"), weights(stopped, "train"))


def test_a_batch_that_does_not_divide_over_the_processes_is_refused():
    from nextscale.errors import NextscaleError
    from nextscale.training.distributed import Distributed

    assert Distributed(rank=1, world=2).local_batch(16) == slice(8, 16)
    with pytest.raises(NextscaleError, match="batch_size 15 does not divide over 2 processes: use a multiple of 2"):
        Distributed(rank=0, world=2).local_batch(15)


def test_tokenize_shards_over_processes_and_resumes(tokenizer, tmp_path):
    args = ["tokenize", "--data", "digits", "--tokenizer", str(tokenizer), "--shard-size", "300", "--quiet"]
    run_nextscale([*args, "--out", str(tmp_path / "one")])
    run_nextscale([*args, "--out", str(tmp_path / "two")], nproc=2)
    files = sorted(p.name for p in (tmp_path / "one").iterdir())
    assert files == sorted(p.name for p in (tmp_path / "two").iterdir()) and "shard-00004.u16" in files
    for name in files:  # the same records, whichever process wrote them (index.json names the tokenizer only)
        if name != "index.json":
            assert (tmp_path / "one" / name).read_bytes() == (tmp_path / "two" / name).read_bytes(), name
    (tmp_path / "two" / "shard-00002.json").unlink()  # as if stopped before this shard was complete
    (tmp_path / "two" / "shard-00002.u16").write_bytes(b"partial")
    before = (tmp_path / "two" / "shard-00003.u16").stat().st_mtime_ns
    run_nextscale([*args, "--out", str(tmp_path / "two")])
    assert (tmp_path / "two" / "shard-00003.u16").stat().st_mtime_ns == before  # complete shards are kept
    assert (tmp_path / "two" / "shard-00002.u16").read_bytes() == (tmp_path / "one" / "shard-00002.u16").read_bytes()


@pytest.fixture(scope="module")
def initial(tmp_path_factory, tokenizer) -> Path:
    """A tiny model to fine-tune (`--init`): the tokenizer above and a transformer of random weights."""
    from dataclasses import replace

    from nextscale.registry import architecture
    from nextscale.tokenizer import VQVAE
    from nextscale.transformer import VAR

    torch.manual_seed(1)
    out = tmp_path_factory.mktemp("init") / "model"
    VQVAE.from_pretrained(tokenizer).save_pretrained(out / "vae")
    VAR(replace(architecture("tiny")[1], num_classes=10)).save_pretrained(out / "var")
    return out


def test_a_lora_fine_tuning_killed_with_sigkill_resumes_bit_identical(initial, tokenizer, baselines, tmp_path):
    extra = ("--save-every", "10", "--init", str(initial), "--trainable", "lora:4,class", "--ema", "0.5")
    whole = baselines("train", tokenizer, 1, 40, *extra)
    killed = tmp_path / "killed"
    args = stage_args("train", tokenizer, 40, killed, *extra)
    process = interrupted(args, 1, killed, signal.SIGKILL)
    assert process.returncode == -signal.SIGKILL
    run_nextscale([*args, "--resume"])
    assert bit_identical(weights(whole, "train"), weights(killed, "train"))
    assert not any("lora" in k for k in weights(whole, "train"))  # exported merged


def test_lora_fine_tuning_in_two_processes_under_fsdp_trains_the_weights_of_one(initial, tokenizer, baselines):
    extra = ("--save-every", "3", "--init", str(initial), "--trainable", "lora:4,class")
    one = baselines("train", tokenizer, 1, 6, *extra)
    two = baselines("train", tokenizer, 2, 6, *extra, "--fsdp")
    assert max_difference(weights(one, "train"), weights(two, "train")) < 1e-6
