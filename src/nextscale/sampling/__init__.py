"""Sampling: the reference's sampler with a preallocated KV cache, and many images in batches to files."""

from .batches import RepeatedClasses, SampleRun, sample_many
from .sampler import ForcedTokens, SampleOutput, cached_teacher_forcing, filter_top_k_top_p_, sample, step_function

__all__ = [
    "ForcedTokens",
    "RepeatedClasses",
    "SampleOutput",
    "SampleRun",
    "cached_teacher_forcing",
    "filter_top_k_top_p_",
    "sample",
    "sample_many",
    "step_function",
]
