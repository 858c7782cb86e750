"""nextscale: VAR (Visual AutoRegressive modeling, next-scale prediction) in PyTorch.

The public API loads on first use, so `nextscale --version` and `--help` answer without importing torch.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING

from . import registry
from .errors import CheckpointError, NextscaleError

__version__ = "0.2.0"

_LAZY = {
    "SampleOutput": "sampling",
    "sample": "sampling",
    "sample_many": "sampling",
    "edit": "editing",
    "scale_keep_masks": "editing",
    "VQVAE": "tokenizer",
    "VQVAEConfig": "tokenizer",
    "VAR": "transformer",
    "VARConfig": "transformer",
    "load_model": "weights",
    "load_pair": "weights",
    "load_vae": "weights",
    "load_var": "weights",
    "save_model": "weights",
    "reuse_freed_memory": "runtime",
    "build": "registry",
}
_SUBPACKAGES = ("data", "tokenizer", "transformer", "weights", "sampling", "editing", "training", "evaluation", "cli")

__all__ = [
    "CheckpointError",
    "NextscaleError",
    "SampleOutput",
    "VAR",
    "VARConfig",
    "VQVAE",
    "VQVAEConfig",
    "__version__",
    "build",
    "edit",
    "load_model",
    "load_pair",
    "load_vae",
    "load_var",
    "registry",
    "reuse_freed_memory",
    "sample",
    "sample_many",
    "save_model",
    "scale_keep_masks",
]

if TYPE_CHECKING:
    from .editing import edit, scale_keep_masks
    from .registry import build
    from .runtime import reuse_freed_memory
    from .sampling import SampleOutput, sample, sample_many
    from .tokenizer import VQVAE, VQVAEConfig
    from .transformer import VAR, VARConfig
    from .weights import load_model, load_pair, load_vae, load_var, save_model


def __getattr__(name: str):
    if name in _LAZY:
        value = getattr(importlib.import_module(f".{_LAZY[name]}", __name__), name)
        globals()[name] = value
        return value
    if name in _SUBPACKAGES:
        return importlib.import_module(f".{name}", __name__)
    raise AttributeError(f"module 'nextscale' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted({*globals(), *_LAZY, *_SUBPACKAGES})
