"""Shared fixtures. `NEXTSCALE_TEST_DEVICE=cuda` runs the device-sensitive tests (those taking the `device`
fixture) on that device and skips the ones marked `cpu_only`; everything else runs on the CPU as usual."""

import os
from pathlib import Path

import pytest
import torch

from nextscale.registry import build

# ../shared/golden beside the checkout; NEXTSCALE_GOLDEN_DIR points elsewhere (a machine without ../shared)
GOLDEN_DIR = Path(
    os.environ.get("NEXTSCALE_GOLDEN_DIR", Path(__file__).resolve().parents[1].parent / "shared" / "golden")
)
GOLDEN_FILES = sorted(GOLDEN_DIR.glob("*.safetensors"))
TEST_DEVICE = os.environ.get("NEXTSCALE_TEST_DEVICE", "cpu")


def pytest_configure(config):
    config.addinivalue_line(
        "markers",
        "cpu_only: checks that only mean something on the CPU (skipped when "
        "NEXTSCALE_TEST_DEVICE names another device)",
    )


def pytest_collection_modifyitems(config, items):
    if TEST_DEVICE == "cpu":
        return
    skip = pytest.mark.skip(reason=f"CPU-only check; NEXTSCALE_TEST_DEVICE={TEST_DEVICE}")
    for item in items:
        if "cpu_only" in item.keywords:
            item.add_marker(skip)


@pytest.fixture(scope="session")
def device() -> torch.device:
    """Where device-sensitive tests run: NEXTSCALE_TEST_DEVICE (default cpu); fails if it is not here."""
    if TEST_DEVICE.startswith("cuda") and not torch.cuda.is_available():
        pytest.fail(f"NEXTSCALE_TEST_DEVICE={TEST_DEVICE} but CUDA is not available")
    return torch.device(TEST_DEVICE)


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


@pytest.fixture
def tiny_models():
    return tiny_pair()


@pytest.fixture
def tiny_models_on_device(device):
    vae, var = tiny_pair()
    return vae.to(device), var.to(device)
