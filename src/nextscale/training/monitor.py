"""What a run reports: a JSONL record every `log_every` steps (losses and accuracies per scale, grad norm, LR,
throughput, memory), TensorBoard events when `tensorboard` is installed, and a record of each start.

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
from .common import write_log
from .distributed import Distributed


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
