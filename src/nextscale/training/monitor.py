"""What a run reports: a summary line at its start, a JSONL record every `log_every` steps (losses and accuracies
per scale, grad norm, LR, throughput, memory), TensorBoard events when `tensorboard` is installed, and a record
of each start.

Metrics stay on the device as running sums; they are averaged over ranks and read back only when a record
is written, so no step waits for the host.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

import torch
import torch.distributed as dist

from ..runtime import peak_memory_bytes, versions
from .common import steps_per_epoch, write_log
from .distributed import Distributed

SHOWN_CLASSES = 6  # more class names than this are abbreviated in the summary


def metric_name(name: str, test_data, held_out: str = "val_") -> str:
    """An evaluation metric's name: `held_out` + name on held-out data; `train_` + name without any, so that a
    number measured on the training data never reads as a held-out one."""
    return f"{held_out}{name}" if test_data is not None else f"train_{name}"


def run_summary(kind: str, data, tokenizer_config, parameters: int, config, step: int, total: int | None = None) -> str:
    """The line a run starts with: what it trains on (images, classes, resolution) and for how long, so that a
    wrong folder, a wrong preset or a resize nobody meant shows before the first step. `total`: all the model's
    parameters, where some are frozen (`parameters` counts what trains)."""
    source = getattr(data, "source", data)  # the images an encoded dataset was made from
    n, batch = len(data), config.batch_size
    epochs = config.steps / steps_per_epoch(n, batch)
    epochs_text = f"{epochs:.2g}" if epochs < 10 else f"{epochs:,.0f}"  # 0.017, 2.9, 200
    parts = [
        f"training the {'tokenizer' if kind == 'tokenizer' else 'transformer'}: {n:,} images in {_classes(source)}",
        _resolution(source, tokenizer_config),
        f"{tokenizer_config.num_tokens:,} tokens per image",
        f"{parameters:,} parameters"
        if total in (None, parameters)
        else f"{parameters:,} of {total:,} parameters trained",
        f"{config.steps:,} steps of {batch:,} images = {epochs_text} epochs"
        + (f", from step {step:,}" if step else ""),
    ]
    return "; ".join(parts)


def _classes(data) -> str:
    from ..data import class_names

    names = class_names(data)
    if not names:
        return "no classes"
    shown = names if len(names) <= SHOWN_CLASSES else [*names[: SHOWN_CLASSES // 2], "…", names[-1]]
    return f"{len(names):,} {'class' if len(names) == 1 else 'classes'} ({', '.join(shown)})"


def _resolution(data, tokenizer_config) -> str:
    """The images' resolution on disk, the one they are read at, and the model's, saying who resized them."""
    from ..registry import ARCHITECTURES

    model = tokenizer_config.resolution
    preset = next((name for name, make in ARCHITECTURES.items() if make()[0] == tokenizer_config), None)
    by = f"preset {preset}" if preset else "the tokenizer"
    if hasattr(data, "vocab_size"):  # token shards: the pixels were read when they were made
        return f"tokens of {model} px images ({by})"
    read = data[(0, 0, 0)][0].shape[-1]  # a trainer's key: a seeded crop, no draw from the global generator
    size, which = _stored_size(data)
    text = f"{read} px images"
    if size is not None and size != (read, read):
        how = getattr(data, "rendering", None) or by  # a built-in dataset's own way to the model's size
        text = f"{_px(size)} images{which} read at {read} px by {how}"
    return text if read == model else f"{text}, but the model takes {model} px images"


def _stored_size(data) -> tuple[tuple[int, int] | None, str]:
    """(width, height) of the images as stored (None: unknown), and which images that is."""
    from PIL import Image

    from ..data import DigitsDataset
    from ..data.digits import DIGITS_RESOLUTION
    from ..data.fashion import FASHION_PIXELS, FashionMNISTDataset

    if isinstance(data, DigitsDataset):
        return (DIGITS_RESOLUTION, DIGITS_RESOLUTION), ""
    if isinstance(data, FashionMNISTDataset):
        return (FASHION_PIXELS, FASHION_PIXELS), ""
    samples = getattr(data, "samples", None)  # an image folder's files: its first stands for the others
    if not samples:
        return None, ""
    try:
        with Image.open(samples[0][0]) as image:
            return image.size, " (the first)"
    except Exception:  # PIL raises many types; a broken file is named when it is read, the summary says less
        return None, ""


def _px(size: tuple[int, int]) -> str:
    return f"{size[0]} px" if size[0] == size[1] else f"{size[0]}×{size[1]} px"


def run_record(settings: dict, world: int, device: torch.device, step: int) -> dict:
    """What `runs.jsonl` keeps of every start: the resolved settings, the world size, the versions."""
    return {
        "started": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "from_step": step,
        "world_size": world,
        "device": device.type,
        "command": sys.argv,
        "versions": versions(),
        **settings,
    }


class RunLogger:
    def __init__(self, run_dir: Path, dist_info: Distributed, device: torch.device, enabled: bool):
        self.run_dir, self.dist, self.device, self.enabled = Path(run_dir), dist_info, device, enabled
        self.sums: dict[str, torch.Tensor] = {}
        self.counts: dict[str, int] = {}
        self.steps, self.seconds, self.images, self.tokens, self.lr = 0, 0.0, 0, 0, 0.0
        self.board = None
        if enabled:
            try:
                from torch.utils.tensorboard import SummaryWriter

                self.board = SummaryWriter(str(self.run_dir / "tensorboard"))
            except ImportError:  # the optional `tensorboard` extra
                pass

    def add(self, metrics: dict, lr: float, tokens_per_image: int, batch: int, seconds: float) -> None:
        for k, v in metrics.items():
            self.sums[k] = self.sums[k] + v if k in self.sums else v.clone()
            self.counts[k] = self.counts.get(k, 0) + 1  # a metric can start mid-window (a new scale)
        self.steps, self.seconds, self.lr = self.steps + 1, self.seconds + seconds, lr
        self.images, self.tokens = self.images + batch, self.tokens + batch * tokens_per_image

    def flush(self, step: int) -> dict:
        """Averages the sums over steps and ranks, writes a record (rank 0), and returns the progress bar's
        postfix. Collective: every rank calls it at the same steps."""
        if not self.steps:
            return {}
        names = sorted(self.sums)
        stacked = torch.stack([self.sums[k].float() / self.counts[k] for k in names])
        if self.dist.enabled:
            dist.all_reduce(stacked, op=dist.ReduceOp.AVG if stacked.is_cuda else dist.ReduceOp.SUM)
            stacked = stacked if stacked.is_cuda else stacked / self.dist.world
        values = dict(zip(names, stacked.tolist()))
        rates = {"images_per_s": self.images / self.seconds, "tokens_per_s": self.tokens / self.seconds}
        record = {
            "step": step,
            "lr": self.lr,
            **values,
            **{k: round(v, 1) for k, v in rates.items()},
            "peak_memory_gib": round(peak_memory_bytes(self.device) / 2**30, 3),
        }
        self.write(record)
        self.sums, self.counts, self.steps, self.seconds, self.images, self.tokens = {}, {}, 0, 0.0, 0, 0
        return {
            "loss": f"{values['loss']:.4f}",
            "img/s": f"{rates['images_per_s']:.1f}",
            "tok/s": f"{rates['tokens_per_s']:.0f}",
        }

    def write(self, record: dict, bar=None) -> None:
        if not self.enabled:
            return
        write_log(self.run_dir, record)
        if self.board is not None:
            for k, v in record.items():
                if k != "step" and isinstance(v, (int, float)):
                    self.board.add_scalar(k, v, record["step"])
        if bar is not None:
            bar.write(" ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in record.items()))

    def close(self) -> None:
        if self.board is not None:
            self.board.close()
