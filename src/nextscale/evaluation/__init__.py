"""Evaluation: the Fréchet distance, and the digits model's quality judged by an independent classifier."""

from .digits import DigitsJudge, DigitsReport, EditReport, evaluate_digit_edits, evaluate_digits
from .frechet import frechet_distance

__all__ = ["DigitsJudge", "DigitsReport", "EditReport", "evaluate_digit_edits", "evaluate_digits", "frechet_distance"]
