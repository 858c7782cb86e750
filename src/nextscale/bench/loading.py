"""`nextscale bench --load`: how long loading takes and how much memory it holds, in a fresh process each time.

Weights of the architecture's shapes (random values: loading does not depend on them) are written once, in
the reference's `.pth` format (timed for the released architectures only) and the project's own, into a
scratch folder. Each format is then loaded by a
new Python process, which reports its import time, load time, peak resident memory right after loading, and
after touching every weight once (the first sample does that: memory-mapped pages are read in on first use).
"""

from __future__ import annotations

import json
import subprocess
import sys
from dataclasses import asdict, dataclass
from pathlib import Path

import torch

from ..errors import NextscaleError
from ..registry import RELEASED, build
from ..weights import save_model

PROBE = r"""
import json, sys, time
started = time.perf_counter()
import torch
from nextscale.weights import load_model, load_pair
from nextscale.runtime import resolve_device
imported = time.perf_counter()

def peak():
    try:  # Linux: the resident high-water mark
        with open("/proc/self/status") as fh:
            return next(int(line.split()[1]) * 1024 for line in fh if line.startswith("VmHWM:"))
    except (OSError, StopIteration):
        import resource
        scale = 1 if sys.platform == "darwin" else 1024  # ru_maxrss: bytes on macOS, KiB on Linux
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * scale

fmt, source, device = sys.argv[1], sys.argv[2:-1], resolve_device(sys.argv[-1])
before = peak()
vae, var = load_pair(*source, device=device) if fmt == "pth" else load_model(source[0], device=device)
if device.type == "cuda":
    torch.cuda.synchronize()
loaded = time.perf_counter()
after_load = peak()
with torch.no_grad():
    total = sum(float(t.float().sum()) for m in (vae, var) for t in m.state_dict().values())
print(json.dumps({"import_s": imported - started, "load_s": loaded - imported, "rss_before_load": before,
                  "peak_after_load": after_load, "peak_after_touching": peak()}))
"""


@dataclass
class LoadResult:
    preset: str
    format: str  # "pth" (the reference's files) or "safetensors" (the project's directory)
    device: str
    weights_bytes: int
    import_s: float
    load_s: float
    rss_before_load: int  # python + torch, before the model
    peak_after_load: int
    peak_after_touching: int

    def row(self) -> str:
        gib, w = 2**30, self.weights_bytes
        return (
            f"{self.format:<12}{self.load_s:>8.2f}{self.import_s:>9.2f}{self.rss_before_load / gib:>9.2f}"
            f"{self.peak_after_load / gib:>10.2f}{self.peak_after_load / w:>7.2f}"
            f"{self.peak_after_touching / gib:>10.2f}{self.peak_after_touching / w:>7.2f}"
        )


HEADER = f"{'format':<12}{'load s':>8}{'import s':>9}{'base GiB':>9}{'peak GiB':>10}{'×w':>7}{'touched':>10}{'×w':>7}"


def write_weights(preset: str, scratch: Path, seed: int = 0) -> dict[str, list[Path]]:
    """The preset's shapes with the reference's initialisation, in both formats, in `scratch/preset/` (written
    once: a later run reuses them)."""
    directory = scratch / preset
    directory.mkdir(parents=True, exist_ok=True)
    pth = [directory / "vae.pth", directory / "var.pth"]
    project = directory / "model"
    if not all(p.is_file() for p in pth) or not (project / "var" / "model.safetensors").is_file():
        torch.manual_seed(seed)
        vae, var = build(preset)
        torch.save(vae.state_dict(), pth[0])
        torch.save(var.state_dict(), pth[1])
        save_model(vae, var, project)
        del vae, var
    return {"pth": pth, "safetensors": [project]}


def bench_loading(preset: str, scratch: str | Path, device: str = "cpu") -> list[LoadResult]:
    files = write_weights(preset, Path(scratch))
    weights = sum(p.stat().st_size for p in files["pth"])
    if preset not in RELEASED:  # a reference .pth cannot say how many groups the tokenizer's norms use
        del files["pth"]
    results = []
    for fmt, paths in files.items():
        argv = [sys.executable, "-c", PROBE, fmt, *map(str, paths), device]
        probe = subprocess.run(argv, capture_output=True, text=True)
        if probe.returncode != 0:
            last = (probe.stderr.strip().splitlines() or ["(no output)"])[-1]
            raise NextscaleError(f"loading {fmt} weights in a fresh process failed: {last}")
        results.append(LoadResult(preset, fmt, device, weights, **json.loads(probe.stdout.splitlines()[-1])))
    return results


def table(results: list[LoadResult]) -> str:
    first = results[0]
    title = f"nextscale bench --load: {first.preset}, {first.weights_bytes / 2**30:.2f} GiB of weights, {first.device}"
    return "\n".join([title, HEADER, *(r.row() for r in results)])


def to_json(results: list[LoadResult]) -> str:
    return json.dumps([asdict(r) for r in results], indent=2)
