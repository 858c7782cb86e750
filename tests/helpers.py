"""What several test modules share (no test module imports from another): the reference tensors, tiny random
models, and the command run in real processes, alone or under torchrun."""

import os
import subprocess
from pathlib import Path

import pytest
import torch

from nextscale.distributed import nextscale_command
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
