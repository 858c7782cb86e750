"""Evaluation: FID, IS, precision/recall and KID on any feature network (torch-fidelity's Inception by default),
tokenizer reconstruction metrics, and the built-in models judged on real data by independent classifiers (the
presets: digits, fashion). The preset table and the network names (`presets`) load without torch, for the command
line; everything else loads on first use."""

from __future__ import annotations

from typing import TYPE_CHECKING

from ..lazy import lazy_exports

_LAZY = {
    "DigitsJudge": "judge",
    "DigitsReport": "digits",
    "evaluate_digits": "digits",
    "EditReport": "edits",
    "evaluate_digit_edits": "edits",
    "evaluate_edits": "edits",
    "FashionNetwork": "fashion_network",
    "FeatureNetwork": "features",
    "load_network": "features",
    "ImageSet": "imagesets",
    "Statistics": "imagesets",
    "open_set": "imagesets",
    "frechet_distance": "metrics",
    "inception_score": "metrics",
    "kernel_distance": "metrics",
    "precision_recall": "metrics",
    "PRESETS": "presets",
    "Preset": "presets",
    "METRICS": "report",
    "evaluate": "report",
    "SampleReport": "samples",
    "evaluate_samples": "samples",
    "TokenizerReport": "tokenizer",
    "evaluate_tokenizer": "tokenizer",
}
__all__ = [
    "DigitsJudge",
    "DigitsReport",
    "EditReport",
    "FashionNetwork",
    "FeatureNetwork",
    "ImageSet",
    "METRICS",
    "PRESETS",
    "Preset",
    "SampleReport",
    "Statistics",
    "TokenizerReport",
    "evaluate",
    "evaluate_digit_edits",
    "evaluate_digits",
    "evaluate_edits",
    "evaluate_samples",
    "evaluate_tokenizer",
    "frechet_distance",
    "inception_score",
    "kernel_distance",
    "load_network",
    "open_set",
    "precision_recall",
]

if TYPE_CHECKING:
    from .digits import DigitsReport, evaluate_digits
    from .edits import EditReport, evaluate_digit_edits, evaluate_edits
    from .fashion_network import FashionNetwork
    from .features import FeatureNetwork, load_network
    from .imagesets import ImageSet, Statistics, open_set
    from .judge import DigitsJudge
    from .metrics import frechet_distance, inception_score, kernel_distance, precision_recall
    from .presets import PRESETS, Preset
    from .report import METRICS, evaluate
    from .samples import SampleReport, evaluate_samples
    from .tokenizer import TokenizerReport, evaluate_tokenizer


__getattr__ = lazy_exports(__name__, _LAZY)
