"""nextscale: VAR (Visual AutoRegressive modeling, next-scale prediction) in PyTorch."""

from .checkpoint import load_model, load_pair, load_vae, load_var, save_model
from .editing import scale_keep_masks
from .errors import CheckpointError, NextscaleError
from .runtime import reuse_freed_memory
from .sampling import SampleOutput, sample
from .tokenizer import VQVAE, VQVAEConfig
from .transformer import VAR, VARConfig

__version__ = "0.1.0"

__all__ = [
    "CheckpointError",
    "NextscaleError",
    "SampleOutput",
    "VAR",
    "VARConfig",
    "VQVAE",
    "VQVAEConfig",
    "load_model",
    "load_pair",
    "load_vae",
    "load_var",
    "reuse_freed_memory",
    "sample",
    "save_model",
    "scale_keep_masks",
]
