"""A small trainer shared by both stages: schedule, clipping, progress, evaluation, exact resume."""

from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Protocol

import torch
from safetensors.torch import load_file
from tqdm.auto import tqdm

from ..errors import NextscaleError
from ..pretrained import load_strict
from .common import (
    RunState,
    apply_schedule,
    latest_checkpoint,
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
        if self.lr <= 0:
            raise NextscaleError(f"lr must be positive, got {self.lr}")


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

    def resume(self) -> bool:
        """Loads the run's latest checkpoint, if any; refuses one made with other settings."""
        ckpt = latest_checkpoint(self.run_dir)
        if ckpt is None:
            return False
        opt_state, state, saved_config = load_trainer_state(ckpt)
        if saved_config != self._config_record():
            raise NextscaleError(f"{ckpt} was made with other training settings; use a new --run-dir")
        load_strict(self.stage.model, load_file(str(ckpt / "model" / "model.safetensors")), str(ckpt))
        self.stage.optimizer.load_state_dict(opt_state)
        self.stage.load_extra_state(state.extra)
        self.state = state
        return True

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
