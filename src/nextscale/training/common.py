"""What both training stages share: the reference LR/WD schedule and progressive curriculum, parameter groups,
data order and run directories.

Every random draw of step s comes from seeds derived from (seed, s), and the data order of epoch e from
(seed, e), for the whole global batch: a run resumed at step s, on any number of processes, replays exactly
what an uninterrupted run would have done.
"""

from __future__ import annotations

import functools
import json
import math
from pathlib import Path

import torch

from ..errors import NextscaleError, SettingError
from ..seeding import derived_generator
from .checkpoint import LOG, TRAINER_JSON, latest_checkpoint, run_contents

RUNS = "runs.jsonl"  # a record of each start of a run: its settings, world size, versions

NO_DECAY_NAMES = (
    "cls_token",
    "start_token",
    "task_token",
    "cfg_uncond",
    "pos_embed",
    "pos_1LC",
    "pos_start",
    "start_pos",
    "lvl_embed",
    "gamma",
    "beta",
    "ada_gss",
    "moe_bias",
    "scale_mul",
)


def param_groups(model: torch.nn.Module, weight_decay: float) -> list[dict]:
    """The reference split: no decay for 1-D tensors, biases, and position/level/scale parameters."""
    decay, no_decay = [], []
    for name, p in model.named_parameters():
        if not p.requires_grad:
            continue
        if p.ndim == 1 or name.endswith("bias") or any(k in name for k in NO_DECAY_NAMES):
            no_decay.append(p)
        else:
            decay.append(p)
    groups = [
        {"params": decay, "weight_decay": weight_decay, "wd_scale": 1.0},
        {"params": no_decay, "weight_decay": 0.0, "wd_scale": 0.0},
    ]
    return [g for g in groups if g["params"]]  # a frozen model part can empty one: DCP cannot save an empty group


def lr_factor(step: int, total: int, warmup: int, schedule: str = "lin0", wp0: float = 0.005, wpe: float = 0.01):
    """Multiplier of the peak LR: linear warm-up from `wp0`, then the reference's `lin0` (flat for 5% of the
    rest, then linear to `wpe`), `lin` (flat 15%), or `cos`."""
    if step < warmup:
        return wp0 + (1 - wp0) * step / warmup
    passed = (step - warmup) / max(1, total - 1 - warmup)
    if schedule == "cos":
        return wpe + (1 - wpe) * (0.5 + 0.5 * math.cos(math.pi * passed))
    flat = {"lin0": 0.05, "lin": 0.15}.get(schedule)  # the share of the decay phase that stays at the peak
    if flat is None:
        raise NextscaleError(f"unknown LR schedule {schedule!r}: use lin0, lin or cos")
    return 1.0 if passed < flat else wpe + (1 - wpe) * (1 - passed) / (1 - flat)


def weight_decay_at(step: int, total: int, wd: float, wd_end: float) -> float:
    """Cosine from `wd` to `wd_end` (the reference's d30/d36 recipes raise it from 0.05 to 0.08)."""
    return wd_end + (wd - wd_end) * (0.5 + 0.5 * math.cos(math.pi * step / max(1, total - 1)))


def apply_schedule(optimizer, step: int, cfg) -> float:
    lr = cfg.lr * lr_factor(step, cfg.steps, cfg.warmup_steps, cfg.schedule, wpe=cfg.lr_end_ratio)
    wd = weight_decay_at(step, cfg.steps, cfg.weight_decay, cfg.weight_decay_end)
    for group in optimizer.param_groups:
        group["lr"] = lr
        group["weight_decay"] = wd * group.get("wd_scale", 1.0)
    return lr


def steps_per_epoch(n: int, batch_size: int) -> int:
    """Global batches in one pass over `n` items (the last, partial batch is dropped); data smaller than one
    batch is refused."""
    if n < batch_size:
        raise NextscaleError(f"the dataset has {n} items, fewer than one batch of {batch_size}")
    return n // batch_size


def global_batch(step: int, n: int, batch_size: int, seed: int) -> tuple[int, torch.Tensor]:
    """(epoch, indices) of the global batch of `step`: epoch e walks a permutation seeded by (seed, e); the last
    partial batch is dropped. Rank r of a sharded run takes its contiguous slice of these indices."""
    epoch, pos = divmod(step, steps_per_epoch(n, batch_size))
    return epoch, epoch_order(seed, epoch, n)[pos * batch_size : (pos + 1) * batch_size]


@functools.lru_cache(maxsize=2)
def epoch_order(seed: int, epoch: int, n: int) -> torch.Tensor:
    """Epoch `epoch`'s permutation, drawn once per epoch (1.28 M items take tens of milliseconds)."""
    return torch.randperm(n, generator=derived_generator(seed, 1, epoch))


def batch_indices(step: int, n: int, batch_size: int, seed: int) -> torch.Tensor:
    return global_batch(step, n, batch_size, seed)[1]


def step_generator(seed: int, step: int) -> torch.Generator:
    """The CPU generator of a step's random draws (label dropout, drop path, code revival): drawn for the whole
    global batch on the CPU, then sliced and moved, so any device and any number of processes draw the same."""
    return derived_generator(seed, 3, step)


def progressive_scale(step: int, cfg, num_scales: int) -> int:
    """The last scale trained at `step` under the reference's progressive curriculum (section 3.3): `pg0` until
    the warm-up ends, then linearly up to the last scale at fraction `pg` of the run (all scales when pg = 0)."""
    last = num_scales - 1
    if cfg.pg <= 0:
        return last
    start = min(cfg.pg0, last)
    if step < cfg.warmup_steps:
        return start
    span = max(1, round(cfg.pg * cfg.steps) - cfg.warmup_steps)
    progress = min(1.0, (step - cfg.warmup_steps) / span)
    return start + round(progress * (last - start))


def newest_scale_weight(step: int, cfg, num_scales: int) -> float:
    """The loss weight of the scale the curriculum added last: it ramps from 0 to 1 over `pgwp` steps (no ramp
    for the first stage, nor without the curriculum)."""
    si = progressive_scale(step, cfg, num_scales)
    if cfg.pg <= 0 or si == min(cfg.pg0, num_scales - 1):
        return 1.0
    low, high = 0, step  # the first step that trained scale si (the curriculum never goes back): bisect
    while low < high:
        mid = (low + high) // 2
        low, high = (mid + 1, high) if progressive_scale(mid, cfg, num_scales) < si else (low, mid)
    return min(1.0, (step - low + 1) / max(1, cfg.pgwp))


def check_run_dir(run_dir: Path, resume: bool | None) -> Path | None:
    """The checkpoint a run in `run_dir` continues from (None: it starts at step 0), or an error that names why
    it may not: `resume=True` needs a run there, `False` needs none (a run's files are never overwritten by a
    run that did not load them), `None` continues one if there is one. A run stopped before its first checkpoint
    left nothing to lose: `resume` True or None starts it again."""
    found = run_contents(run_dir)
    if stopped_before_first_checkpoint(run_dir):
        if resume is False and found:
            raise NextscaleError(
                f"{run_dir} holds a run stopped before its first checkpoint ({', '.join(found)}): pass --resume to "
                "start it again from step 0, or pick a new --run-dir"
            )
        return None
    if resume is False and found:
        raise NextscaleError(
            f"{run_dir} already holds a run ({', '.join(found[:3])}): pass --resume to continue it, or pick a new "
            "--run-dir"
        )
    ckpt = latest_checkpoint(run_dir) if found else None
    if ckpt is None and resume is True:
        held = f"only {', '.join(found[:3])}" if found else "nothing of a run"
        raise NextscaleError(f"--resume: {run_dir} holds no complete checkpoint to continue ({held})")
    if ckpt is None and found:
        raise NextscaleError(
            f"{run_dir} holds {', '.join(found[:3])} but no complete checkpoint (one with .metadata and "
            f"{TRAINER_JSON}): pick a new --run-dir"
        )
    return ckpt


def stopped_before_first_checkpoint(run_dir: Path) -> bool:
    """Whether `run_dir` holds what a run writes before its first checkpoint (its log, its record of starts) and
    nothing of a checkpoint, not even a pointer or a folder."""
    return run_contents(run_dir) in ([], [LOG]) and any((run_dir / name).is_file() for name in (LOG, RUNS))


AUTOCAST_DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16}


def autocast_context(device: torch.device, precision: str):
    """bf16 or fp16 autocast on CUDA; fp32 elsewhere (refused up front by `check_training_device`)."""
    dtype = AUTOCAST_DTYPES.get(precision)
    return torch.autocast(device.type, dtype=dtype or torch.float32, enabled=dtype is not None)


def check_training_device(device: torch.device, precision: str) -> None:
    if precision != "fp32" and device.type != "cuda":
        raise SettingError(
            "precision",
            f"{precision} trains on a CUDA device only, not on {device}: use fp32 (a CPU's half-precision matrix "
            "work is about 100× slower)",
        )


def write_log(run_dir: Path, record: dict) -> None:
    with open(run_dir / LOG, "a") as fh:
        fh.write(json.dumps(record) + "\n")
