"""`nextscale bench --train`: the VAR training step, in one process or under torchrun (DDP or FSDP2).

Every process runs the trainer's own step (`Trainer._train_step`: forward, backward, clipping, AdamW) on random
token pyramids, and reports per rank: the median step time, global tokens per second, the FLOPs of one global
step (torch's FlopCounterMode, summed over ranks) against the floor (those FLOPs ÷ the matrix-multiply rate of
every rank, each measured in the same run, concurrently), the peak memory of the steps (allocated tensors on
CUDA; the resident set on CPUs, from after freed heap memory is handed back), and the parameter + gradient +
optimizer-state bytes this rank holds (the local shards under FSDP2).

`bench_training_matrix` launches the 1- and N-process configurations as `torchrun --standalone` subprocesses
(a free port each time) and puts their results in one table.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path

import torch

from ..distributed import nextscale_command
from ..errors import NextscaleError
from ..registry import RELEASED_WIDTH_PER_DEPTH, architecture
from ..runtime import count_flops, peak_memory_bytes
from ..tokenizer import VQVAE
from ..training import TrainConfig, Trainer, initial_var
from ..training.common import check_training_device
from ..training.distributed import Distributed, launched_by_torchrun, setup, teardown
from ..training.var_stage import VAROptions, VARStage
from ..transformer import VARConfig
from .measure import machine_name, matmul_rate, reset_peak_memory, synchronize

MODES = ("ddp", "fsdp")
STATE_PARTS = (("parameters", "params"), ("gradients", "grads"), ("optimizer state", "optimizer"))
GiB = 2**30


class _NoImages:
    """What `VARStage` needs of training data when every batch is handed to the step directly."""

    def __init__(self, num_classes: int):
        self.num_classes = num_classes

    def __len__(self) -> int:
        return 0


def parse_scales(text: str | None, flag: str = "--bench-scales") -> tuple[int, ...] | None:
    """Reads "1,2,3,4" as (1, 2, 3, 4): two or more positive, strictly increasing sizes; None passes."""
    if text is None:
        return None
    try:
        scales = tuple(int(x) for x in text.split(","))
    except ValueError:
        raise NextscaleError(f"{flag} takes comma-separated integers such as 1,2,3,4, got {text!r}") from None
    if len(scales) < 2 or scales[0] < 1 or list(scales) != sorted(set(scales)):
        raise NextscaleError(f"{flag} needs two or more positive, strictly increasing sizes, got {text!r}")
    return scales


def _local_bytes(t) -> int:
    if t is None:
        return 0
    if hasattr(t, "to_local"):  # FSDP2's DTensors: what this rank stores
        t = t.to_local()
    return t.numel() * t.element_size()


def state_bytes(model: torch.nn.Module, optimizer: torch.optim.Optimizer) -> dict[str, int]:
    """Bytes this rank holds in parameters, their gradients and the optimizer's state tensors."""
    params = list(model.parameters())
    optim = sum(_local_bytes(v) for s in optimizer.state.values() for v in s.values() if torch.is_tensor(v))
    return {
        "params": sum(_local_bytes(p) for p in params),
        "grads": sum(_local_bytes(p.grad) for p in params),
        "optimizer": optim,
    }


def _hand_back_freed_memory() -> None:
    """glibc's malloc_trim: freed heap pages go back to the kernel, so the resident set measures what is live
    (the `nextscale` command keeps freed blocks for reuse; see `nextscale.runtime.reuse_freed_memory`)."""
    if not sys.platform.startswith("linux"):
        return
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        libc.malloc_trim(ctypes.c_size_t(0))
    except (OSError, AttributeError):
        pass


def bench_train_step(
    preset: str = "var-d16",
    batch_size: int = 2,
    device="cpu",
    precision: str | None = None,
    fsdp: bool = False,
    steps: int = 3,
    warmup: int = 1,
    patch_nums=None,
    grad_checkpointing: bool = False,
    seed: int = 0,
    dist: Distributed | None = None,
    trainable: str = "all",
    depth: int | None = None,
    width_per_depth: int = RELEASED_WIDTH_PER_DEPTH,
) -> list[dict]:
    """Times `steps` training steps (after `warmup` untimed ones) of the preset's transformer with random
    weights, in this process or in every process of torchrun's job (`dist` None: joined here when the
    environment has WORLD_SIZE and RANK, and left again if this call joined it; `Distributed()`: this process
    alone). `batch_size` is the global batch; `patch_nums` replaces the preset's scales (fewer tokens; the
    parameters change only by the position embedding); `trainable` what learns (`VAROptions.trainable`: groups or
    LoRA); `depth` a transformer of that depth by the width rule (`VARConfig.from_depth`, as `scaling run` builds
    its sizes) in place of the preset's, on the preset's tokenizer shapes. Returns every rank's record, rank order
    (on every rank)."""
    import torch.distributed as tdist

    device = torch.device(device)
    precision = precision or ("bf16" if device.type == "cuda" else "fp32")
    if steps < 1 or warmup < 0:
        raise NextscaleError(f"--train-steps must be at least 1 and --warmup at least 0, got {steps} and {warmup}")
    if fsdp and not launched_by_torchrun():
        raise NextscaleError(
            "--fsdp needs torchrun (e.g. torchrun --standalone --nproc_per_node 2 -m nextscale bench --train --fsdp …)"
        )
    check_training_device(device, precision)
    vae_config, var_config = architecture(preset)
    if depth is not None:
        shapes = ("vocab_size", "num_classes", "latent_channels", "patch_nums")
        var_config = VARConfig.from_depth(depth, width_per_depth, **{k: getattr(var_config, k) for k in shapes})
    if patch_nums is not None:
        patch_nums = parse_scales(",".join(str(p) for p in patch_nums))
        vae_config, var_config = replace(vae_config, patch_nums=patch_nums), replace(var_config, patch_nums=patch_nums)
    joined = dist is None and not (tdist.is_available() and tdist.is_initialized())
    if dist is None:
        dist, device = setup(device)
    finished = False
    try:
        local = dist.local_batch(batch_size)
        config = TrainConfig(
            steps=warmup + steps + 1,
            batch_size=batch_size,
            precision=precision,
            fsdp=fsdp,
            grad_checkpointing=grad_checkpointing,
            seed=seed,
            warmup_steps=0,
        )
        options = VAROptions(trainable=trainable)
        var = initial_var(var_config, config, options, dist)
        vae = VQVAE(vae_config, device="cpu")
        stage = VARStage(vae, var, _NoImages(var_config.num_classes), None, config, options, device, dist)
        with tempfile.TemporaryDirectory() as run_dir:  # the trainer writes nothing before `start`
            trainer = Trainer(stage, config, run_dir, dist=dist, device=device, progress=False)
        num_params = sum(p.numel() for p in stage.model.parameters())
        trained_params = sum(p.numel() for p in stage.model.parameters() if p.requires_grad)

        # Random token pyramids (the global batch, then this rank's slice), as token shards feed the step.
        g = torch.Generator().manual_seed(seed)
        L = var_config.num_tokens
        ids = torch.randint(var_config.vocab_size, (batch_size, L), generator=g)[local].to(device)
        labels = torch.randint(var_config.num_classes, (batch_size,), generator=g)[local].to(device)
        batch = stage._pyramid(ids, labels)

        def timed_step(step: int) -> float:
            synchronize(device)
            dist.barrier()
            started = time.perf_counter()
            trainer._train_step(batch, step)
            synchronize(device)
            return time.perf_counter() - started

        # The peak covers every step from here (what building the model freed is handed back first, so that the
        # warm-up steps, not the timed ones, pay for faulting memory in again). FLOPs are counted in the first
        # warm-up step (or in one more step after the timed ones).
        synchronize(device)
        if device.type == "cpu":
            _hand_back_freed_memory()
        reset_peak_memory(device)
        local_flops = count_flops(lambda: timed_step(0)) if warmup else None
        for step in range(1, warmup):
            timed_step(step)
        matmul_dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(precision, torch.float32)
        times, rates = [], []
        for step in range(warmup, warmup + steps):
            dist.barrier()  # every rank measures the yardstick at once, as they share the machine in the steps
            rates.append(matmul_rate(device, matmul_dtype))
            times.append(timed_step(step))
        peak = peak_memory_bytes(device)
        state = state_bytes(stage.model, trainer.optimizer)
        if local_flops is None:
            local_flops = count_flops(lambda: timed_step(steps))

        mode = "fsdp" if fsdp else "ddp" if dist.enabled else "single"
        record = {
            "rank": dist.rank,
            "world": dist.world,
            "mode": mode,
            "preset": preset,
            "model": preset if depth is None else f"depth {depth}, width {var_config.embed_dim}, on {preset}'s shapes",
            "patch_nums": list(var_config.patch_nums),
            "device": str(device),
            "machine": machine_name(device),
            "precision": precision,
            "grad_checkpointing": grad_checkpointing,
            "batch_size": batch_size,
            "local_batch": local.stop - local.start,
            "tokens_per_step": batch_size * L,
            "num_params": num_params,
            "trainable": trainable,
            "trained_params": trained_params,
            "warmup": warmup,
            "steps": steps,
            "step_times_s": times,
            "step_s": statistics.median(times),
            "matmul_gflops": statistics.median(rates) / 1e9,
            "local_flops": local_flops,
            "peak_memory_gib": peak / GiB,
            "state_gib": sum(state.values()) / GiB,
            **{f"{k}_gib": v / GiB for k, v in state.items()},
        }
        records = [record]
        if dist.enabled:
            records = [None] * dist.world
            tdist.all_gather_object(records, record, group=dist.cpu_group)
        flops = sum(r["local_flops"] for r in records)
        floor = flops / (sum(r["matmul_gflops"] for r in records) * 1e9)  # every rank's share of the machine
        for r in records:
            r.update(
                flops=flops,
                floor_s=floor,
                ratio=r["step_s"] / floor if floor else float("inf"),
                tokens_per_s=r["tokens_per_step"] / r["step_s"],
            )
        finished = True
        return records
    finally:
        if joined:
            teardown(after_error=not finished)


# ---- the matrix: 1 and N processes, DDP and FSDP2, each in fresh processes --------------------------------


def cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:
        return os.cpu_count() or 1


def train_command(
    nproc: int,
    fsdp: bool,
    json_path: str | Path,
    *,
    preset: str,
    batch_size: int,
    device: str,
    precision: str | None,
    steps: int,
    warmup: int,
    patch_nums=None,
    grad_checkpointing: bool = False,
    trainable: str = "all",
    depth: int | None = None,
    width_per_depth: int = RELEASED_WIDTH_PER_DEPTH,
) -> list[str]:
    """`nextscale bench --train …` for one configuration: under torchrun (`--standalone`: a free port) for
    more than one process."""
    args = [
        "bench",
        "--train",
        "--preset",
        preset,
        "--batch-size",
        str(batch_size),
        "--device",
        device,
        "--train-steps",
        str(steps),
        "--warmup",
        str(warmup),
        "--json",
        str(json_path),
    ]
    if precision:
        args += ["--precision", precision]
    if patch_nums:
        args += ["--bench-scales", ",".join(str(p) for p in patch_nums)]
    if grad_checkpointing:
        args.append("--grad-checkpointing")
    if trainable != "all":
        args += ["--trainable", trainable]
    if depth is not None:
        args += ["--depth", str(depth), "--width-per-depth", str(width_per_depth)]
    if fsdp:
        args.append("--fsdp")
    return nextscale_command(args, nproc, torchrun=nproc > 1 or fsdp)  # FSDP needs torchrun even alone


def bench_training_matrix(
    preset: str = "var-d16",
    *,
    batch_size: int = 2,
    device: str = "cpu",
    precision: str | None = None,
    steps: int = 3,
    warmup: int = 1,
    patch_nums=None,
    grad_checkpointing: bool = False,
    trainable: str = "all",
    depth: int | None = None,
    width_per_depth: int = RELEASED_WIDTH_PER_DEPTH,
    nprocs=(1, 2),
    modes=MODES,
    out_json: str | Path | None = None,
    timeout: float | None = None,
    log=None,
) -> dict:
    """Runs one process alone ("single") and, for every N > 1 in `nprocs`, N processes under each of `modes`
    ("ddp", "fsdp"), each configuration in fresh processes with OMP_NUM_THREADS = cores // N. Returns
    {"runs": [every configuration's per-rank records], "table": markdown}; `out_json` gets the same."""
    nprocs = tuple(nprocs)
    if not nprocs or any(n < 1 for n in nprocs):
        raise NextscaleError(f"--nprocs needs positive process counts, got {','.join(map(str, nprocs)) or 'none'}")
    unknown = [m for m in modes if m not in MODES]
    if unknown or not modes:
        raise NextscaleError(f"modes must be among {', '.join(MODES)}, got {', '.join(unknown) or 'none'}")
    for n in nprocs:
        if batch_size % n:
            raise NextscaleError(f"--batch-size {batch_size} does not divide over {n} processes")
    if device.startswith("cuda") and torch.cuda.is_available() and max(nprocs) > torch.cuda.device_count():
        raise NextscaleError(
            f"--nprocs {max(nprocs)} needs that many GPUs; this machine has {torch.cuda.device_count()}"
        )
    configs = [(n, m) for n in nprocs for m in (("single",) if n == 1 else modes)]
    runs = []
    with tempfile.TemporaryDirectory() as scratch:
        for i, (n, mode) in enumerate(configs):
            path = Path(scratch) / f"{i}-{n}-{mode}.json"
            cmd = train_command(
                n,
                mode == "fsdp",
                path,
                preset=preset,
                batch_size=batch_size,
                device=device,
                precision=precision,
                steps=steps,
                warmup=warmup,
                patch_nums=patch_nums,
                grad_checkpointing=grad_checkpointing,
                trainable=trainable,
                depth=depth,
                width_per_depth=width_per_depth,
            )
            env = {**os.environ, "OMP_NUM_THREADS": str(max(1, cores() // n))}
            if log:
                log(f"running {n} process{'es' if n > 1 else ''}, {mode}: {' '.join(cmd[1:])}")
            done = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=timeout)
            if done.returncode != 0 or not path.is_file():
                lines = [line for line in done.stderr.splitlines() if line.strip()]
                why = next((line for line in reversed(lines) if "error" in line.lower()), lines[-1] if lines else "")
                raise NextscaleError(f"the {n}-process {mode} run failed (exit {done.returncode}): {why.strip()}")
            runs.append(json.loads(path.read_text())["ranks"])
    result = {"runs": runs, "table": matrix_table(runs)}
    if out_json:
        from ..files import atomic_write_text

        atomic_write_text(out_json, json.dumps(result, indent=2) + "\n")
    return result


def _per_rank(records: list[dict], key: str) -> str:
    return " / ".join(f"{r[key]:.2f}" for r in records)


def matrix_table(runs: list[list[dict]]) -> str:
    """Markdown: one row per configuration (its slowest rank's time; memory per rank, rank 0 first), then the
    FSDP ÷ DDP ratio of parameter + gradient + optimizer memory per rank for every process count."""
    first = runs[0][0]
    tokens = first["tokens_per_step"] // first["batch_size"]
    lines = [
        f"{first.get('model', first['preset'])}, scales {','.join(map(str, first['patch_nums']))} "
        f"({tokens} tokens per image), "
        f"{first['num_params'] / 1e6:.1f}M parameters, global batch {first['batch_size']}, "
        f"{first['precision']}, {first['device']} ({first['machine'].split(',')[0]})" + _trained(first),
        "",
        "| processes | mode | tokens/s | step s | GFLOP/step | floor s | ratio | peak memory GiB per rank | "
        "param+grad+optim GiB per rank |",
        "|---:|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for records in runs:
        r = max(records, key=lambda r: r["step_s"])
        lines.append(
            f"| {r['world']} | {r['mode']} | {r['tokens_per_s']:.1f} | {r['step_s']:.3f} | "
            f"{r['flops'] / 1e9:.3g} | {r['floor_s']:.3g} | {r['ratio']:.2f} | "
            f"{_per_rank(records, 'peak_memory_gib')} | {_per_rank(records, 'state_gib')} |"
        )
    by = {(rs[0]["world"], rs[0]["mode"]): rs for rs in runs}
    notes = []
    for (world, mode), records in by.items():
        if mode == "fsdp" and (world, "ddp") in by:
            ddp = max(r["state_gib"] for r in by[(world, "ddp")])
            fsdp = max(r["state_gib"] for r in records)
            notes.append(
                f"FSDP ÷ DDP parameter + gradient + optimizer memory per rank ({world} processes, the "
                f"largest rank): {fsdp:.3f} / {ddp:.3f} GiB = {fsdp / ddp:.3f}"
            )
    return "\n".join(lines + ([""] + notes if notes else []))


def _trained(record: dict) -> str:
    trainable = record.get("trainable", "all")
    if trainable == "all":
        return ""
    return f"; trainable {trainable}: {record['trained_params'] / 1e6:.2f}M parameters trained"


def run_table(records: list[dict]) -> str:
    """One configuration's table (the `--train` output), and rank 0's parameter, gradient and optimizer memory."""
    r = records[0]
    parts = ", ".join(f"{what} {r[f'{key}_gib']:.3f} GiB" for what, key in STATE_PARTS)
    return matrix_table([records]) + f"\n\nrank 0 holds {parts}"
