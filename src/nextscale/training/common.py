"""What both training stages share: the reference LR/WD schedule, parameter groups, data order, run state
and checkpoints that resume exactly.

Every random draw of step s comes from seeds derived from (seed, s), and the data order of epoch e from
(seed, e): a run resumed at step s replays exactly what an uninterrupted run would have done.
"""

from __future__ import annotations

import json
import math
import shutil
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch

from ..errors import CheckpointError, NextscaleError
from ..files import atomic_write, atomic_write_text, first_line, read_torch_weights
from ..seeding import derive_seed, derived_generator

NO_DECAY_NAMES = (
    "cls_token", "start_token", "task_token", "cfg_uncond", "pos_embed", "pos_1LC", "pos_start", "start_pos",
    "lvl_embed", "gamma", "beta", "ada_gss", "moe_bias", "scale_mul",
)  # fmt: skip


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
    return [
        {"params": decay, "weight_decay": weight_decay, "wd_scale": 1.0},
        {"params": no_decay, "weight_decay": 0.0, "wd_scale": 0.0},
    ]


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


def batch_indices(step: int, n: int, batch_size: int, seed: int) -> torch.Tensor:
    """The global batch of `step`: epoch e walks a permutation seeded by (seed, e); the last partial batch is
    dropped. A later sharded run can give rank r the slice [r::world] of this same batch."""
    per_epoch = n // batch_size
    if per_epoch == 0:
        raise NextscaleError(f"the dataset has {n} items, fewer than one batch of {batch_size}")
    epoch, pos = divmod(step, per_epoch)
    order = torch.randperm(n, generator=derived_generator(seed, 1, epoch))
    return order[pos * batch_size : (pos + 1) * batch_size]


def seed_step(seed: int, step: int) -> torch.Generator:
    """Seeds the global RNGs of every device (drop path draws on the activations' device) for this step, and
    returns a CPU generator for the step's other draws, which happen on the CPU and then move (label dropout,
    code revival): the same numbers on any device."""
    torch.manual_seed(derive_seed(seed, 2, step))
    return derived_generator(seed, 3, step)


@dataclass
class RunState:
    step: int = 0
    seed: int = 0
    extra: dict = field(default_factory=dict)  # stage-specific counters (e.g. the quantizer's hit count)


LATEST, LOG, TRAINER_STATE = "latest", "log.jsonl", "trainer_state.pt"


def checkpoint_step(path: Path) -> int | None:
    name = path.name
    return int(name[5:]) if name.startswith("ckpt-") and name[5:].isdigit() else None


def run_contents(run_dir: Path) -> list[str]:
    """What marks `run_dir` as holding a run: its `latest` pointer, checkpoints, or log."""
    if not run_dir.is_dir():
        return []
    marks = [p.name for p in run_dir.iterdir() if p.name in (LATEST, LOG) or checkpoint_step(p) is not None]
    return sorted(marks)


def save_checkpoint(run_dir: Path, model, optimizer, state: RunState, config: dict, keep: int = 2) -> Path:
    """Writes `ckpt-STEP/` (weights in the project format, trainer state apart), then points `latest` at it,
    then removes this run's checkpoints older than the `keep` newest up to this step.

    A crash at any moment leaves `latest` naming a complete checkpoint. Only a run that loaded the directory's
    latest checkpoint (or found the directory empty) ever saves here, so every checkpoint pruned is its own.
    """
    ckpt = run_dir / f"ckpt-{state.step:08d}"
    model.save_pretrained(ckpt / "model")
    blob = {"optimizer": optimizer.state_dict(), "state": asdict(state), "config": json.dumps(config)}
    atomic_write(ckpt / TRAINER_STATE, lambda tmp: torch.save(blob, tmp))
    atomic_write_text(run_dir / LATEST, ckpt.name + "\n")
    earlier = sorted((s, p) for p in run_dir.iterdir() if (s := checkpoint_step(p)) is not None and s <= state.step)
    for _, old in earlier[:-keep]:
        shutil.rmtree(old, ignore_errors=True)
    return ckpt


def latest_checkpoint(run_dir: Path) -> Path | None:
    """The checkpoint `latest` names; None where there is no `latest`. A pointer to nothing is an error that
    names it: resuming must never fall back to step 0 over a run's files."""
    pointer = run_dir / LATEST
    if not pointer.is_file():
        return None
    try:
        name = pointer.read_text().strip()
    except (OSError, UnicodeDecodeError) as e:
        raise CheckpointError(f"{pointer} is unreadable: {e}") from None
    ckpt = run_dir / name
    if not name or checkpoint_step(ckpt) is None or not ckpt.is_dir():
        raise CheckpointError(f"{pointer} names {name!r}, which is not a checkpoint in {run_dir}")
    return ckpt


def check_run_dir(run_dir: Path, resume: bool | None) -> Path | None:
    """The checkpoint a run in `run_dir` continues from (None: it starts afresh), or an error that names why
    it may not: `resume=True` needs a run there, `False` needs none (a run's files are never overwritten by a
    run that did not load them), `None` continues one if there is one."""
    found = run_contents(run_dir)
    if resume is False and found:
        raise NextscaleError(f"{run_dir} already holds a run ({', '.join(found[:3])}): pass --resume to continue "
                             "it, or pick a new --run-dir")  # fmt: skip
    ckpt = latest_checkpoint(run_dir) if found else None
    if ckpt is None and resume is True:
        raise NextscaleError(f"--resume: {run_dir} holds no run to continue (no {LATEST} file)")
    if ckpt is None and found:
        raise NextscaleError(f"{run_dir} holds {', '.join(found[:3])} but no {LATEST} checkpoint pointer: pick "
                             "a new --run-dir")  # fmt: skip
    return ckpt


def load_trainer_state(ckpt: Path) -> tuple[dict, RunState, dict]:
    path = ckpt / TRAINER_STATE
    blob = read_torch_weights(path)
    try:
        return blob["optimizer"], RunState(**blob["state"]), json.loads(blob["config"])
    except (KeyError, TypeError, ValueError) as e:
        raise CheckpointError(f"{path} is not a nextscale trainer state ({first_line(e)})") from None


def autocast_context(device: torch.device, precision: str):
    """bf16 autocast on CUDA; fp32 elsewhere (refused up front by `check_training_device`)."""
    return torch.autocast(device.type, dtype=torch.bfloat16, enabled=precision == "bf16" and device.type == "cuda")


def check_training_device(device: torch.device, precision: str) -> None:
    if precision == "bf16" and device.type != "cuda":
        raise NextscaleError(f"bf16 training needs a CUDA device, not {device}: CPUs train in fp32 (their bf16 "
                             "matrix work is about 100× slower)")  # fmt: skip


def write_log(run_dir: Path, record: dict) -> None:
    with open(run_dir / "log.jsonl", "a") as fh:
        fh.write(json.dumps(record) + "\n")
