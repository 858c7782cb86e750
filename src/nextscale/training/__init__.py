"""Training both stages: `train_tokenizer` and `train_var` (what `nextscale train-tokenizer` / `train` call), with
their settings (`TrainConfig`, `TokenizerOptions`, `VAROptions`) and recipes. The settings and recipes load without
torch (the command line lists them); everything else loads on first use."""

from __future__ import annotations

from typing import TYPE_CHECKING

from ..lazy import lazy_exports

_LAZY = {
    "TrainConfig": "config",
    "TokenizerOptions": "config",
    "VAROptions": "config",
    "Trainer": "trainer",
    "initial_var": "run",
    "train_tokenizer": "run",
    "train_var": "run",
    "train_builtin_model": "run",
}
__all__ = [
    "TokenizerOptions",
    "TrainConfig",
    "Trainer",
    "VAROptions",
    "initial_var",
    "train_builtin_model",
    "train_tokenizer",
    "train_var",
]

if TYPE_CHECKING:
    from .config import TokenizerOptions, TrainConfig, VAROptions
    from .run import initial_var, train_builtin_model, train_tokenizer, train_var
    from .trainer import Trainer


__getattr__ = lazy_exports(__name__, _LAZY)
