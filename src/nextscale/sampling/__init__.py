"""Sampling: the reference's sampler with a preallocated KV cache, many images in batches to files, and N per
class for evaluation, split over processes and resumable."""

from .batches import RepeatedClasses, SampleRun, sample_many
from .per_class import image_seed, sample_per_class
from .sampler import (
    ForcedTokens,
    SampleOutput,
    cached_teacher_forcing,
    fhat_to_images,
    filter_top_k_top_p_,
    sample,
    step_function,
)

__all__ = [
    "ForcedTokens",
    "RepeatedClasses",
    "SampleOutput",
    "SampleRun",
    "cached_teacher_forcing",
    "fhat_to_images",
    "filter_top_k_top_p_",
    "image_seed",
    "sample",
    "sample_many",
    "sample_per_class",
    "step_function",
]
