"""What several test modules share (no test module imports from another): the reference tensors, tiny random
models, the command run in real processes, alone or under torchrun, and Fashion-MNIST's files (tiny ones written
here, and the installed ones)."""

import gzip
import os
import subprocess
from pathlib import Path

import numpy as np
import pytest
import torch

from nextscale.data.fashion import FASHION_FILES, fashion_dir
from nextscale.distributed import nextscale_command
from nextscale.errors import NextscaleError
from nextscale.registry import build

# ../shared/golden beside the checkout; NEXTSCALE_GOLDEN_DIR points elsewhere (a machine without ../shared)
GOLDEN_DIR = Path(
    os.environ.get("NEXTSCALE_GOLDEN_DIR", Path(__file__).resolve().parents[1].parent / "shared" / "golden")
)
GOLDEN_FILES = sorted(GOLDEN_DIR.glob("*.safetensors"))
TEST_DEVICE = os.environ.get("NEXTSCALE_TEST_DEVICE", "cpu")
PROCESS_ENV = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONWARNINGS": "ignore"}  # 2 processes on 2 cores


def golden_files():
    """The reference-tensor files; CI sets NEXTSCALE_REQUIRE_GOLDEN=1 so that their absence fails, not skips."""
    if not GOLDEN_FILES:
        if os.environ.get("NEXTSCALE_REQUIRE_GOLDEN") == "1":
            raise FileNotFoundError(f"no reference tensors in {GOLDEN_DIR} (NEXTSCALE_REQUIRE_GOLDEN=1)")
        pytest.skip(f"reference tensors not found in {GOLDEN_DIR}: put ../shared beside the checkout")
    return GOLDEN_FILES


@torch.no_grad()
def randomize_(model: torch.nn.Module, seed: int = 0, std: float = 0.2) -> torch.nn.Module:
    """Replaces every parameter with noise: the reference init gates blocks near zero, which hides bugs."""
    g = torch.Generator().manual_seed(seed)
    for p in model.parameters():
        p.copy_(torch.randn(p.shape, generator=g) * std)
    return model


def tiny_pair():
    torch.manual_seed(0)
    vae, var = build("tiny")
    randomize_(vae, seed=1, std=0.1)
    randomize_(var, seed=2)
    return vae.eval(), var.eval()


def run_nextscale(args: list[str], nproc: int = 1, expect: int = 0, timeout: float = 300):
    done = subprocess.run(
        nextscale_command(args, nproc), env=PROCESS_ENV, capture_output=True, text=True, timeout=timeout
    )
    assert done.returncode == expect, done.stderr[-3000:]
    return done


def write_idx(path: Path, array: np.ndarray, magic: int | None = None) -> Path:
    """An IDX file of unsigned bytes (gzipped where the name ends in .gz); `magic` replaces the right one."""
    header = (magic if magic is not None else 0x800 + array.ndim).to_bytes(4, "big")
    header += b"".join(int(d).to_bytes(4, "big") for d in array.shape)
    with (gzip.open if path.suffix == ".gz" else open)(path, "wb") as f:
        f.write(header + np.ascontiguousarray(array, dtype=np.uint8).tobytes())
    return path


def write_fashion(folder: Path, counts=(12, 6), gz: bool = True, seed: int = 0) -> dict[str, tuple]:
    """A tiny Fashion-MNIST in `folder`: the four IDX files (train, test), random 28×28 images and labels 0–9;
    returns {split: (images, labels)}."""
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    written = {}
    for (split, (image_file, label_file)), n in zip(FASHION_FILES.items(), counts):
        images = rng.integers(0, 256, (n, 28, 28), dtype=np.uint8)
        labels = rng.integers(0, 10, n, dtype=np.uint8)
        for name, array in ((image_file, images), (label_file, labels)):
            write_idx(folder / (name if gz else name.removesuffix(".gz")), array)
        written[split] = (images, labels)
    return written


def fashion_data() -> Path:
    """The installed Fashion-MNIST's folder; CI sets NEXTSCALE_REQUIRE_FASHION=1 so that its absence fails, not
    skips (`make setup` installs it where it can)."""
    try:
        return fashion_dir()
    except NextscaleError as e:
        if os.environ.get("NEXTSCALE_REQUIRE_FASHION") == "1":
            pytest.fail(f"NEXTSCALE_REQUIRE_FASHION=1 but {e}")
        pytest.skip(f"real Fashion-MNIST files not found: {e}")
