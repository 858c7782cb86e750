"""A small trainer shared by both stages: schedule, clipping, progress, evaluation, exact resume."""

from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Protocol

import torch
from tqdm.auto import tqdm

from ..errors import CheckpointError, NextscaleError
from ..files import first_line, read_safetensors
from ..pretrained import WEIGHTS_NAME, load_strict
from ..registry import LR_SCHEDULES
from ..runtime import check_finite, check_precision
from ..seeding import check_seed
from .common import (
    TRAINER_STATE,
    RunState,
    apply_schedule,
    check_run_dir,
    load_trainer_state,
    save_checkpoint,
    seed_step,
    write_log,
)


@dataclass
class TrainConfig:
    steps: int = 2000
    batch_size: int = 64
    lr: float = 3e-4  # peak learning rate
    warmup_steps: int = 100
    schedule: str = "lin0"  # the reference's: flat for 5% after warm-up, then linear decay
    lr_end_ratio: float = 0.01  # the final LR as a fraction of the peak (reference `wpe`)
    weight_decay: float = 0.05
    weight_decay_end: float | None = None  # None: constant
    betas: tuple[float, float] = (0.9, 0.95)
    grad_clip: float = 2.0
    eval_every: int = 500
    save_every: int = 500
    seed: int = 0
    precision: str = "fp32"  # bf16 autocast on CUDA; CPUs run fp32
    extra: dict = field(default_factory=dict)  # stage options, saved with the run

    def __post_init__(self):
        self.betas = tuple(self.betas)
        if self.weight_decay_end is None:
            self.weight_decay_end = self.weight_decay
        for name in ("steps", "batch_size", "eval_every", "save_every"):
            if getattr(self, name) < 1:
                raise NextscaleError(f"{name.replace('_', '-')} must be at least 1, got {getattr(self, name)}")
        if self.warmup_steps < 0:
            raise NextscaleError(f"warmup-steps must be ≥ 0, got {self.warmup_steps}")
        check_finite(self.lr, "lr", 0.0)
        if self.lr == 0:
            raise NextscaleError("lr must be positive, got 0")
        check_finite(self.lr_end_ratio, "lr-end-ratio", 0.0, 1.0)
        check_finite(self.weight_decay, "weight-decay", 0.0)
        check_finite(self.weight_decay_end, "weight-decay-end", 0.0)
        check_finite(self.grad_clip, "grad-clip", 0.0)
        if self.grad_clip == 0:
            raise NextscaleError("grad-clip must be positive, got 0")
        if len(self.betas) != 2 or not all(0 <= b < 1 for b in self.betas):
            raise NextscaleError(f"betas must be two numbers in [0, 1), got {self.betas}")
        if self.schedule not in LR_SCHEDULES:
            raise NextscaleError(f"schedule must be one of {', '.join(LR_SCHEDULES)}, got {self.schedule!r}")
        check_precision(self.precision)
        check_seed(self.seed)


class Stage(Protocol):
    model: torch.nn.Module  # what is saved as the run's weights (save_pretrained)
    optimizer: torch.optim.Optimizer

    def train_step(self, step: int, generator: torch.Generator) -> dict[str, float]: ...  # forward + backward

    def evaluate(self) -> dict[str, float]: ...

    def extra_state(self) -> dict: ...

    def load_extra_state(self, state: dict) -> None: ...


class Trainer:
    def __init__(self, stage: Stage, config: TrainConfig, run_dir: str | Path, *, progress: bool = True):
        self.stage, self.config, self.run_dir, self.progress = stage, config, Path(run_dir), progress
        self.state = RunState(seed=config.seed)
        self.started = False  # `fit` first calls `start` (never writes into a directory it did not check)

    def start(self, resume: bool | None = None) -> bool:
        """Continues the run in `run_dir` or starts one there; returns whether it continued.

        `resume=True` requires a run to continue, `False` an empty directory (a run's files are never
        overwritten by a run that did not load them), `None` continues one if there is one.
        """
        ckpt = check_run_dir(self.run_dir, resume)
        self.started = True
        if ckpt is None:
            return False
        self._load(ckpt)
        return True

    def _load(self, ckpt: Path) -> None:
        """Loads a checkpoint; refuses one made with other settings."""
        opt_state, state, saved_config = load_trainer_state(ckpt)
        if saved_config != self._config_record():
            raise NextscaleError(f"{ckpt} was made with other training settings; use a new --run-dir")
        weights = ckpt / "model" / WEIGHTS_NAME
        load_strict(self.stage.model, read_safetensors(weights), str(weights))
        try:
            self.stage.optimizer.load_state_dict(opt_state)
        except (ValueError, KeyError, RuntimeError) as e:
            raise CheckpointError(
                f"{ckpt / TRAINER_STATE}: its optimizer state does not fit ({first_line(e)})"
            ) from None
        self.stage.load_extra_state(state.extra)
        self.state = state

    def _config_record(self) -> dict:
        record = {"train": asdict(self.config), "model": self.stage.model.config.to_dict()}
        return json.loads(json.dumps(record))  # tuples → lists, as they come back from disk

    def save(self) -> Path:
        self.state.extra = self.stage.extra_state()
        return save_checkpoint(self.run_dir, self.stage.model, self.stage.optimizer, self.state, self._config_record())

    def fit(self, stop_after: int | None = None) -> dict[str, float]:
        """Trains to `config.steps` (or stops, checkpointed, after `stop_after` more steps); returns the last
        evaluation."""
        cfg, stage = self.config, self.stage
        if not self.started:
            self.start(None)
        self.run_dir.mkdir(parents=True, exist_ok=True)
        params = [p for p in stage.model.parameters() if p.requires_grad]
        end = cfg.steps if stop_after is None else min(cfg.steps, self.state.step + stop_after)
        last_eval: dict[str, float] = {}
        bar = tqdm(total=end, initial=self.state.step, desc="training", unit="step", disable=not self.progress)
        started = time.time()
        while self.state.step < end:
            step = self.state.step
            lr = apply_schedule(stage.optimizer, step, cfg)
            generator = seed_step(cfg.seed, step)
            stage.model.train()
            stage.optimizer.zero_grad(set_to_none=True)
            metrics = stage.train_step(step, generator)
            grad_norm = torch.nn.utils.clip_grad_norm_(params, cfg.grad_clip)
            stage.optimizer.step()
            self.state.step = step + 1
            bar.update(1)
            bar.set_postfix(loss=f"{metrics['loss']:.4f}", lr=f"{lr:.2e}")
            done = self.state.step
            if done % cfg.eval_every == 0 or done == cfg.steps:
                stage.model.eval()
                last_eval = stage.evaluate()
                record = {"step": done, "lr": lr, "grad_norm": float(grad_norm), **metrics, **last_eval}
                record["elapsed_s"] = round(time.time() - started, 1)
                write_log(self.run_dir, record)
                bar.write(" ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in record.items()))
            if done % cfg.save_every == 0 or done == end:
                self.save()
        bar.close()
        stage.model.eval()
        return last_eval
