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

from ..errors import NextscaleError
from ..pretrained import atomic_write, atomic_write_text
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
    flat = {"lin0": 0.05, "lin": 0.15}.get(schedule)
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
    """Seeds the global RNG (drop path, augmentation) for this step; returns a generator for label dropout."""
    torch.manual_seed(derive_seed(seed, 2, step))
    return derived_generator(seed, 3, step)


@dataclass
class RunState:
    step: int = 0
    seed: int = 0
    extra: dict = field(default_factory=dict)  # stage-specific counters (e.g. the quantizer's hit count)


def save_checkpoint(run_dir: Path, model, optimizer, state: RunState, config: dict, keep: int = 2) -> Path:
    """Writes `ckpt-STEP/` (weights in the project format, trainer state apart), then points `latest` at it.

    A crash at any moment leaves `latest` naming a complete checkpoint.
    """
    ckpt = run_dir / f"ckpt-{state.step:08d}"
    model.save_pretrained(ckpt / "model")
    blob = {"optimizer": optimizer.state_dict(), "state": asdict(state), "config": json.dumps(config)}
    atomic_write(ckpt / "trainer_state.pt", lambda tmp: torch.save(blob, tmp))
    atomic_write_text(run_dir / "latest", ckpt.name + "\n")
    for old in sorted(run_dir.glob("ckpt-*"))[:-keep]:
        shutil.rmtree(old, ignore_errors=True)
    return ckpt


def latest_checkpoint(run_dir: Path) -> Path | None:
    pointer = run_dir / "latest"
    if not pointer.is_file():
        return None
    ckpt = run_dir / pointer.read_text().strip()
    return ckpt if ckpt.is_dir() else None


def load_trainer_state(ckpt: Path) -> tuple[dict, RunState, dict]:
    blob = torch.load(ckpt / "trainer_state.pt", map_location="cpu", weights_only=True)
    return blob["optimizer"], RunState(**blob["state"]), json.loads(blob["config"])


def autocast_context(device: torch.device, precision: str):
    if precision == "bf16" and device.type == "cuda":
        return torch.autocast("cuda", dtype=torch.bfloat16)
    if precision not in ("fp32", "bf16"):
        raise NextscaleError(f"precision must be fp32 or bf16, got {precision!r}")
    return torch.autocast(device.type, enabled=False)


def write_log(run_dir: Path, record: dict) -> None:
    with open(run_dir / "log.jsonl", "a") as fh:
        fh.write(json.dumps(record) + "\n")
