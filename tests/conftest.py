import os
from pathlib import Path

import pytest
import torch

from nextscale.presets import build

GOLDEN_DIR = Path(__file__).resolve().parents[1].parent / "shared" / "golden"
GOLDEN_FILES = sorted(GOLDEN_DIR.glob("*.safetensors"))


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


@pytest.fixture
def tiny_models():
    torch.manual_seed(0)
    vae, var = build("tiny")
    randomize_(vae, seed=1, std=0.1)
    randomize_(var, seed=2)
    return vae.eval(), var.eval()
