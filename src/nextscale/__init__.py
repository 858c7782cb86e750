"""nextscale: VAR (Visual AutoRegressive modeling, next-scale prediction) in PyTorch.

The public API loads on first use, so `nextscale --version` and `--help` answer without importing torch.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from . import registry
from .errors import CheckpointError, NextscaleError
from .lazy import lazy_exports

__version__ = "0.2.0"

_LAZY = {
    "SampleOutput": "sampling",
    "sample": "sampling",
    "sample_many": "sampling",
    "SamplerConfig": "sampling",
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
    "SamplerConfig",
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
    from .sampling import SampleOutput, SamplerConfig, sample, sample_many
    from .tokenizer import VQVAE, VQVAEConfig
    from .transformer import VAR, VARConfig
    from .weights import load_model, load_pair, load_vae, load_var, save_model


__getattr__ = lazy_exports(__name__, _LAZY, _SUBPACKAGES)


def __dir__() -> list[str]:
    return sorted({*globals(), *_LAZY, *_SUBPACKAGES})
