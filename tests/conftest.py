"""Shared fixtures and markers. `NEXTSCALE_TEST_DEVICE=cuda` runs the device-sensitive tests (those taking the
`device` fixture) on that device and skips the ones marked `cpu_only`; everything else runs on the CPU as usual.
Tests marked `distributed` (several processes) or `browser` (a real Chromium) are `slow` too: `make test-fast`
leaves out everything slow."""

import pytest
import torch

from tests.helpers import TEST_DEVICE, tiny_pair

MARKERS = {
    "cpu_only": "checks that only mean something on the CPU (skipped when NEXTSCALE_TEST_DEVICE names another device)",
    "slow": "takes seconds or more: left out by `make test-fast`, run by `make test` and CI",
    "distributed": "runs several processes (torchrun with gloo); slow",
    "browser": "drives a real browser against `nextscale serve`; slow",
}


def pytest_configure(config):
    for name, text in MARKERS.items():
        config.addinivalue_line("markers", f"{name}: {text}")


def pytest_collection_modifyitems(config, items):
    for item in items:
        if "distributed" in item.keywords or "browser" in item.keywords:
            item.add_marker(pytest.mark.slow)
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


@pytest.fixture
def tiny_models():
    return tiny_pair()


@pytest.fixture
def tiny_models_on_device(device):
    vae, var = tiny_pair()
    return vae.to(device), var.to(device)
