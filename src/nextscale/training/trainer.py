"""The trainer both stages share: the schedule, mixed precision, clipping, EMA, logging, and checkpoints that
resume exactly, in one process or under torchrun (DDP or FSDP2)."""

from __future__ import annotations

import json
import os
import signal
import sys
import time
from collections.abc import Iterator
from dataclasses import asdict
from pathlib import Path
from typing import Protocol

import torch
from tqdm.auto import tqdm

from ..errors import NextscaleError, SettingError
from ..pretrained import short_fingerprint
from . import checkpoint
from .common import (
    RUNS,
    apply_schedule,
    autocast_context,
    check_run_dir,
    param_groups,
    step_generator,
    steps_per_epoch,
    stopped_before_first_checkpoint,
)
from .config import RESUMABLE_CHANGES, TrainConfig
from .distributed import FSDP_NEEDS_TORCHRUN, Distributed, wrap
from .monitor import RunLogger, run_record, run_summary

# The signals that stop a run at the end of its step with a checkpoint, as the stop message names them; the exit
# code is the shell's for a process killed by the signal (128 + its number).
STOP_SIGNALS = {signal.SIGTERM: "SIGTERM", signal.SIGINT: "Ctrl-C"}


class Stage(Protocol):
    model: torch.nn.Module  # what is saved and exported (unwrapped)
    train_data: object  # a Dataset: its length sets the epochs
    net: torch.nn.Module  # what the training forward runs through (DDP/FSDP-wrapped); set by the trainer
    kind: str  # "tokenizer" or "var"
    supports_fsdp: bool

    def batches(self, start: int, end: int) -> Iterator: ...  # this rank's part of each global batch

    def train_step(self, batch, step: int, generator: torch.Generator) -> tuple[torch.Tensor, dict]: ...

    def after_backward(self, step: int) -> None: ...

    def after_step(self, step: int, generator: torch.Generator) -> None: ...

    def evaluate(self) -> dict[str, float]: ...

    def extra_tensors(self) -> dict: ...

    def load_extra_tensors(self, tensors: dict) -> None: ...

    def extra_record(self) -> dict: ...

    def load_extra_record(self, record: dict) -> None: ...


class Trainer:
    def __init__(
        self,
        stage: Stage,
        config: TrainConfig,
        run_dir: str | Path,
        *,
        dist: Distributed | None = None,
        device="cpu",
        progress: bool = True,
    ):
        self.stage, self.config, self.run_dir = stage, config, Path(run_dir)
        self.dist, self.device = dist or Distributed(), torch.device(device)
        self.progress = progress and self.dist.is_main
        self.step, self.started = 0, False
        self.flops = 0  # training FLOPs so far, all processes together (config.count_flops)
        self._step_flops: dict = {}  # a global step's FLOPs by the stage's `flops_key` (the shapes it trains)
        self.stop_signal: signal.Signals | None = None  # the stop signal this process received
        if config.fsdp and not stage.supports_fsdp:
            raise SettingError("fsdp", "shards the transformer; the tokenizer fits one device: train it with DDP")
        if config.fsdp and not torch.distributed.is_initialized():
            raise SettingError("fsdp", FSDP_NEEDS_TORCHRUN)
        model = stage.model
        model.grad_checkpointing = config.grad_checkpointing
        if config.compile:
            model.compile(backend=config.compile)
        if config.fsdp:
            stage.net = self._shard(model)
        else:
            stage.net = wrap(model.to(self.device), self.dist, self.device, fsdp=False)
        cuda = self.device.type == "cuda"
        self.optimizer = torch.optim.AdamW(
            param_groups(model, config.weight_decay),
            lr=config.lr,
            betas=config.betas,
            fused=cuda,
            foreach=None if cuda else True,
        )
        self.scaler = torch.amp.GradScaler(
            "cuda", init_scale=2.0**11, growth_interval=1000, enabled=config.precision == "fp16"
        )
        self.trained = checkpoint.ModuleAndOptimizer(stage.net, self.optimizer)
        self.params = [p for p in model.parameters() if p.requires_grad]
        self.ema = [p.detach().float().clone() for p in self.params] if config.ema > 0 else None

    def _shard(self, model: torch.nn.Module) -> torch.nn.Module:
        """FSDP2: the model is sharded while still on the meta device, materialised shard by shard on this
        rank's device, then given rank 0's initial weights (the same as one process would draw)."""
        from torch.distributed.checkpoint.state_dict import StateDictOptions, set_model_state_dict

        full = {k: v.detach().cpu() for k, v in model.state_dict().items()} if self.dist.is_main else {}
        model.to_empty(device="meta")
        wrap(model, self.dist, self.device, fsdp=True)
        model.to_empty(device=self.device)
        options = StateDictOptions(full_state_dict=True, broadcast_from_rank0=True)
        set_model_state_dict(model, full, options=options)
        return model

    # ---- start and resume ------------------------------------------------------------------------------

    def start(self, resume: bool | None = None) -> bool:
        """Continues the run in `run_dir` or starts one there; returns whether it continued.

        `resume=True` requires a run to continue, `False` an empty directory (a run's files are never
        overwritten by a run that did not load them), `None` continues one if there is one. Nothing is written
        before the settings, the data and the run directory are known good.
        """
        steps_per_epoch(len(self.stage.train_data), self.config.batch_size)  # the data holds a batch
        ckpt = check_run_dir(self.run_dir, resume)
        restart = ckpt is None and stopped_before_first_checkpoint(self.run_dir)
        self.started = True
        if ckpt is not None:
            self._load(ckpt)
        if self.progress:
            print(self.summary(), file=sys.stderr, flush=True)
        if restart and self.dist.is_main:
            print(
                f"{self.run_dir} holds a run stopped before its first checkpoint: starting it again from step 0",
                file=sys.stderr,
                flush=True,
            )
        if self.dist.is_main:
            self.run_dir.mkdir(parents=True, exist_ok=True)
            record = run_record(self.settings(), self.dist.world, self.device, self.step)
            with open(self.run_dir / RUNS, "a") as fh:
                fh.write(json.dumps(record) + "\n")
        self.dist.barrier()
        return ckpt is not None

    def summary(self) -> str:
        """The line a run starts with (`run_summary`)."""
        tokenizer = getattr(self.stage, "vae", self.stage.model)  # the transformer's stage keeps its tokenizer
        parameters, total = (sum(p.numel() for p in ps) for ps in (self.params, self.stage.model.parameters()))
        data = self.stage.train_data
        return run_summary(self.stage.kind, data, tokenizer.config, parameters, self.config, self.step, total)

    def settings(self) -> dict:
        record = {"train": asdict(self.config), "model": self.stage.model.config.to_dict()}
        return json.loads(json.dumps(record))  # tuples → lists, as they come back from disk

    def _check_settings(self, saved: dict, ckpt: Path) -> None:
        import warnings

        now = self.settings()
        saved = _with_later_defaults(saved, self.stage)
        changed = [
            f"model.{k}"
            for k in sorted(set(saved["model"]) | set(now["model"]))
            if saved["model"].get(k) != now["model"].get(k)
        ]
        for k in sorted(set(saved["train"]) | set(now["train"])):
            if k in RESUMABLE_CHANGES or saved["train"].get(k) == now["train"].get(k):
                continue
            if k == "extra":
                from .export import TRAINED_ON, records_what_it_trained_on

                extra_old, extra_new = saved["train"].get(k) or {}, now["train"].get(k) or {}
                notes = ("tokenizer_path", "init_path")  # where models were read: the same (by content) may move
                if not records_what_it_trained_on(extra_old):  # an older run: refusing would strand it
                    notes += TRAINED_ON
                    warnings.warn(
                        f"{ckpt} does not record its data and tokenizer: they cannot be checked", stacklevel=2
                    )

                def shown(value):  # fingerprints by their start, long lists by their length
                    if isinstance(value, str) and len(value) > 40:
                        return short_fingerprint(value)
                    return f"{len(value)} items" if isinstance(value, list) and len(str(value)) > 40 else value

                for e in sorted(set(extra_old) | set(extra_new)):
                    old, new = extra_old.get(e), extra_new.get(e)
                    if e in notes or old == new:
                        continue
                    if isinstance(old, dict) and isinstance(new, dict):  # the stage's options: the ones that differ
                        keys = sorted(o for o in set(old) | set(new) if old.get(o) != new.get(o))
                        changed += [f"{e}.{o} ({shown(old.get(o))} → {shown(new.get(o))})" for o in keys]
                    else:
                        changed.append(f"{e} ({shown(old)} → {shown(new)})")
            else:
                changed.append(f"{k} ({saved['train'].get(k)} → {now['train'].get(k)})")
        if changed:
            raise NextscaleError(
                f"{ckpt} was made with other training settings: {', '.join(changed)} differ; resume with the run's "
                "settings or start a new run directory"
            )

    def _load(self, ckpt: Path) -> None:
        record = checkpoint.read_record(ckpt)
        self._check_settings(record["settings"], ckpt)
        tensors = self.state_tensors()
        checkpoint.load(ckpt, tensors)
        self._set_state(tensors)
        if record.get("optimizer_fresh"):
            self.trained.forget_steps()
        if record.get("scaler"):
            self.scaler.load_state_dict(record["scaler"])
        self.stage.load_extra_record(record.get("extra", {}))
        self.step, self.flops = record["step"], record.get("flops", 0)

    # ---- state -------------------------------------------------------------------------------------------

    def state_tensors(self) -> dict:
        """Every tensor of the training state, keyed by name (DTensor shards under FSDP): what DCP saves."""
        model_sd, optim_sd = self.trained.tensors()
        tensors = {"model": model_sd, "optim": optim_sd}
        if self.ema is not None:
            names = [n for n, p in self.stage.model.named_parameters() if p.requires_grad]
            tensors["ema"] = dict(zip(names, self.ema))
        tensors.update(self.stage.extra_tensors())
        return tensors

    def _set_state(self, tensors: dict) -> None:
        self.trained.load(tensors["model"], tensors["optim"])
        self.stage.load_extra_tensors(tensors)

    def save(self) -> Path:
        tensors = self.state_tensors()  # first: the stage's record says what these tensors hold
        scaler = self.scaler.state_dict() if self.scaler.is_enabled() else None
        record = {
            "step": self.step,
            "stage": self.stage.kind,
            "world_size": self.dist.world,
            "settings": self.settings(),
            "scaler": scaler,
            "optimizer_fresh": self.trained.fresh,
            "flops": self.flops,
            "extra": self.stage.extra_record(),
        }
        return checkpoint.save(self.run_dir, self.step, tensors, record, self.dist, self.config.keep)

    # ---- the loop ----------------------------------------------------------------------------------------

    def fit(self, stop_after: int | None = None) -> dict[str, float]:
        """Trains to `config.steps` (or stops, checkpointed, after `stop_after` more steps); returns the last
        evaluation. SIGTERM (a cluster's pre-emption) or Ctrl-C stops the run with a checkpoint at the end of the
        current step (SystemExit 143 or 130); a second Ctrl-C raises KeyboardInterrupt at once."""
        cfg, stage = self.config, self.stage
        if not self.started:
            self.start(None)
        end = cfg.steps if stop_after is None else min(cfg.steps, self.step + stop_after)
        logger = RunLogger(self.run_dir, self.dist, self.device, enabled=self.dist.is_main)
        bar = tqdm(total=cfg.steps, initial=self.step, desc="training", unit="step", disable=not self.progress)
        last_eval: dict[str, float] = {}
        previous = {sig: signal.signal(sig, self._on_stop_signal) for sig in STOP_SIGNALS} if _main_thread() else {}
        try:
            tick = time.perf_counter()
            for batch in stage.batches(self.step, end):
                step = self.step
                lr = apply_schedule(self.optimizer, step, cfg)
                metrics = self._counted_step(batch, step) if cfg.count_flops else self._train_step(batch, step)
                self.step = step + 1
                # Host time of the step, data loading included (evaluations and checkpoints are not).
                now = time.perf_counter()
                logger.add(metrics, lr, stage.tokens_per_step, cfg.batch_size, now - tick)
                bar.update(1)
                if self.step % cfg.log_every == 0 or self.step == end:
                    bar.set_postfix(logger.flush(self.step), refresh=False)
                if self.step % cfg.eval_every == 0 or self.step == cfg.steps:
                    last_eval = self.evaluate()
                    counted = {"flops": self.flops} if cfg.count_flops else {}
                    logger.write({"step": self.step, **last_eval, **counted}, bar)
                stop = self.dist.any(self.stop_signal is not None)
                if self.step % cfg.save_every == 0 or self.step == end or stop:
                    self.save()
                if stop:
                    self._stopped()
                tick = time.perf_counter()
        finally:
            bar.close()
            logger.close()
            for sig, handler in previous.items():
                signal.signal(sig, handler)
        stage.model.eval()
        return last_eval

    def _train_step(self, batch, step: int) -> dict:
        cfg, stage = self.config, self.stage
        generator = step_generator(cfg.seed, step)
        stage.net.train()
        self.optimizer.zero_grad(set_to_none=True)
        with autocast_context(self.device, cfg.precision):
            loss, metrics = stage.train_step(batch, step, generator)
        self.scaler.scale(loss).backward()
        stage.after_backward(step)
        self.scaler.unscale_(self.optimizer)
        grad_norm = torch.nn.utils.clip_grad_norm_(self.params, cfg.grad_clip)
        if hasattr(grad_norm, "full_tensor"):
            grad_norm = grad_norm.full_tensor()
        self.scaler.step(self.optimizer)
        self.scaler.update()
        if self.scaler.is_enabled():  # the reference caps the fp16 loss scale at 2^15
            self.scaler._scale.clamp_(max=2.0**15)
        if self.ema is not None:
            _lerp_(self.ema, [p.detach().float() for p in self.params], 1 - cfg.ema)
        stage.after_step(step, generator)
        return {"loss": loss.detach().float(), "grad_norm": grad_norm.detach().float(), **metrics}

    def _counted_step(self, batch, step: int) -> dict:
        """The step, its FLOPs added to the total. Each new shape of step (a scale the curriculum adds) is counted
        once, with torch's FlopCounterMode on the real step (attention included), and summed over the ranks."""
        key = getattr(self.stage, "flops_key", lambda step: 0)(step)
        if key in self._step_flops:
            metrics = self._train_step(batch, step)
        else:
            from ..runtime import count_flops

            metrics = {}
            local = count_flops(lambda: metrics.update(self._train_step(batch, step)))
            total = torch.tensor([float(local)], device=self.device)
            if self.dist.enabled:
                torch.distributed.all_reduce(total)
            self._step_flops[key] = int(total.item())
        self.flops += self._step_flops[key]
        return metrics

    def _on_stop_signal(self, signum, frame) -> None:
        """Asks the loop to stop after this step; a second Ctrl-C stops at once. Under torchrun every rank gets
        the signal (torchrun passes it on), and the ranks agree on the step to stop at."""
        if signum == signal.SIGINT and self.stop_signal == signal.SIGINT:
            raise KeyboardInterrupt
        self.stop_signal = signal.Signals(signum)
        if signum == signal.SIGINT and self.dist.is_main:  # os.write: a handler may land inside a print
            os.write(2, b"\nCtrl-C: stopping with a checkpoint at the end of this step (Ctrl-C again: at once)\n")

    def _stopped(self) -> None:
        sig = self.stop_signal or signal.SIGTERM  # a signal another rank received: the usual one
        if self.dist.is_main:
            print(
                f"stopped by {STOP_SIGNALS[sig]} at step {self.step}; checkpoint saved: rerun with --resume",
                file=sys.stderr,
                flush=True,
            )
        raise SystemExit(128 + sig)

    @torch.no_grad()
    def evaluate(self) -> dict[str, float]:
        """The stage's evaluation, with the EMA weights when there are some."""
        self.stage.net.eval()
        if self.ema is None:
            return self.stage.evaluate()
        raw = [p.detach().clone() for p in self.params]
        self._reshard()
        _copy_(self.params, self.ema)
        try:
            return self.stage.evaluate()
        finally:
            self._reshard()  # FSDP2 keeps the root's weights gathered after a no-grad forward: the EMA's, here
            _copy_(self.params, raw)

    def _reshard(self) -> None:
        if self.config.fsdp:
            from torch.distributed.fsdp import FSDPModule

            for module in self.stage.model.modules():
                if isinstance(module, FSDPModule):
                    module.reshard()


def _sharded(tensors: list[torch.Tensor]) -> bool:
    return any(type(t).__name__ == "DTensor" for t in tensors)  # FSDP2's: foreach kernels are not sharded


@torch.no_grad()
def _lerp_(ema: list[torch.Tensor], params: list[torch.Tensor], weight: float) -> None:
    if _sharded(ema):
        for e, p in zip(ema, params):
            e.lerp_(p, weight)
    else:
        torch._foreach_lerp_(ema, params, weight)


@torch.no_grad()
def _copy_(dst: list[torch.Tensor], src: list[torch.Tensor]) -> None:
    if _sharded(dst):
        for d, s in zip(dst, src):
            d.copy_(s)
    else:
        torch._foreach_copy_(dst, src)


def _main_thread() -> bool:
    import threading

    return threading.current_thread() is threading.main_thread()


def _with_later_defaults(saved: dict, stage) -> dict:
    """The saved settings with every setting nextscale added after the run was made at its default: a run made by
    an older version resumes, as its settings then meant the same (a setting with no default stays missing)."""
    from dataclasses import MISSING, fields

    def defaults(cls) -> dict:
        known = {f.name: f.default for f in fields(cls) if f.default is not MISSING}
        known.update({f.name: f.default_factory() for f in fields(cls) if f.default_factory is not MISSING})
        return json.loads(json.dumps(known, default=str))

    saved = json.loads(json.dumps(saved))
    saved["train"] = {**defaults(TrainConfig), **saved["train"]}
    saved["model"] = {**defaults(type(stage.model.config)), **saved["model"]}
    extra = saved["train"].get("extra")
    options = getattr(stage, "options", None)
    if isinstance(extra, dict) and isinstance(extra.get("options"), dict) and options is not None:
        extra["options"] = {**defaults(type(options)), **extra["options"]}
    return saved
