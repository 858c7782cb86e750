"""Sampling: the reference's sampler with a preallocated KV cache, many images in batches to files, and N per
class for evaluation, split over processes and resumable. The settings (`SamplerConfig`) load without torch, so the
command line can build its flags from them; everything else loads on first use."""

from __future__ import annotations

from typing import TYPE_CHECKING

from ..lazy import lazy_exports

_LAZY = {
    "ForcedTokens": "sampler",
    "SampleOutput": "draws",
    "cached_teacher_forcing": "sampler",
    "fhat_to_images": "draws",
    "filter_top_k_top_p_": "draws",
    "sample": "sampler",
    "step_function": "sampler",
    "RepeatedClasses": "batches",
    "SampleRun": "batches",
    "sample_many": "batches",
    "image_seed": "per_class",
    "sample_per_class": "per_class",
    "SamplerConfig": "settings",
    "sampler_config": "settings",
}
__all__ = [
    "ForcedTokens",
    "RepeatedClasses",
    "SampleOutput",
    "SampleRun",
    "SamplerConfig",
    "cached_teacher_forcing",
    "fhat_to_images",
    "filter_top_k_top_p_",
    "image_seed",
    "sample",
    "sample_many",
    "sample_per_class",
    "sampler_config",
    "step_function",
]

if TYPE_CHECKING:
    from .batches import RepeatedClasses, SampleRun, sample_many
    from .draws import SampleOutput, fhat_to_images, filter_top_k_top_p_
    from .per_class import image_seed, sample_per_class
    from .sampler import ForcedTokens, cached_teacher_forcing, sample, step_function
    from .settings import SamplerConfig, sampler_config


__getattr__ = lazy_exports(__name__, _LAZY)
