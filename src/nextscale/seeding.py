"""Seeds and generators.

Seeds derive from (seed, keys…), so any step or batch can be replayed anywhere, in any order. Every draw
happens on a generator of the device it draws on (a CPU generator cannot draw on a GPU): either the generator
lives where the tensor will (the sampler's, as in the reference) or the draw happens on the CPU and the result
moves (the trainer's label dropout and code revival, which then draw the same numbers on any device).
"""

from __future__ import annotations

import numpy as np
import torch

from .errors import NextscaleError
from .runtime import is_int

MAX_SEED = 2**63 - 1  # torch.Generator.manual_seed takes a 64-bit integer; negative seeds are refused


def check_seed(seed: int, what: str = "seed") -> int:
    if not is_int(seed) or not 0 <= seed <= MAX_SEED:
        raise NextscaleError(f"{what} must be an integer in [0, 2**63 - 1], got {seed!r}")
    return int(seed)


def derive_seed(seed: int, *keys: int) -> int:
    return int(np.random.SeedSequence([check_seed(seed), *keys]).generate_state(1, dtype=np.uint64)[0] >> 1)


def seeded_generator(seed: int, device: str | torch.device = "cpu") -> torch.Generator:
    """A generator on `device`, seeded with `seed` itself: the reference sampler's `g_seed`."""
    return torch.Generator(device=device).manual_seed(check_seed(seed))


def derived_generator(seed: int, *keys: int, device: str | torch.device = "cpu") -> torch.Generator:
    return torch.Generator(device=device).manual_seed(derive_seed(seed, *keys))


def batch_generator(seed: int, index: int, device: str | torch.device) -> torch.Generator:
    """Batch (or image) `index` of a command run with `--seed seed`: the first uses the seed itself, so one batch
    reproduces the reference's `g_seed=seed`; later ones use seeds derived from (seed, index)."""
    return seeded_generator(seed, device) if index == 0 else derived_generator(seed, index, device=device)


def uniform(shape: tuple[int, ...], generator: torch.Generator | None, device: torch.device) -> torch.Tensor:
    """U[0, 1) numbers drawn on the generator's own device and moved to `device` (no generator: the global RNG
    of `device`)."""
    if generator is None:
        return torch.rand(shape, device=device)
    return torch.rand(shape, generator=generator, device=generator.device).to(device, non_blocking=True)
