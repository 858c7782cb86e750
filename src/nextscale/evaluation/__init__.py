"""Evaluation: FID, IS, precision/recall and KID on any feature network (torch-fidelity's Inception by default),
tokenizer reconstruction metrics, and the digits model judged by an independent classifier."""

from .digits import DigitsReport, evaluate_digits
from .edits import EditReport, evaluate_digit_edits
from .features import FeatureNetwork, load_network
from .imagesets import ImageSet, Statistics, open_set
from .judge import DigitsJudge
from .metrics import frechet_distance, inception_score, kernel_distance, precision_recall
from .report import METRICS, evaluate
from .tokenizer import TokenizerReport, evaluate_tokenizer

__all__ = [
    "METRICS",
    "DigitsJudge",
    "DigitsReport",
    "EditReport",
    "FeatureNetwork",
    "ImageSet",
    "Statistics",
    "TokenizerReport",
    "evaluate",
    "evaluate_digit_edits",
    "evaluate_digits",
    "evaluate_tokenizer",
    "frechet_distance",
    "inception_score",
    "kernel_distance",
    "load_network",
    "open_set",
    "precision_recall",
]
