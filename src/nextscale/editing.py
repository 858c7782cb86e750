"""Zero-shot in-painting, out-painting and class-conditional editing (reference section 6)."""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F

from .sampling import ForcedTokens, SampleOutput, sample
from .tokenizer import VQVAE
from .transformer import VAR


def scale_keep_masks(keep_hw: torch.Tensor, patch_nums: Sequence[int]) -> list[torch.Tensor]:
    """A keep mask (1 = keep the input's token) → one bool mask (B or 1, pn²) per scale.

    As in the reference: bilinear resize (align_corners=False), threshold 0.5, and every token kept at scales
    of at most 3 tokens.
    """
    m = keep_hw.float()
    m = m.view(1, 1, *m.shape) if m.ndim == 2 else m.view(m.shape[0], 1, *m.shape[-2:])
    masks = []
    for pn in patch_nums:
        if pn * pn <= 3:
            masks.append(torch.ones(m.shape[0], pn * pn, dtype=torch.bool, device=m.device))
        else:
            resized = F.interpolate(m, size=(pn, pn), mode="bilinear", align_corners=False)
            masks.append(resized.gt(0.5).flatten(1))
    return masks


@torch.no_grad()
def edit_tokens(
    var: VAR,
    vae: VQVAE,
    input_tokens: Sequence[torch.Tensor],
    keep_masks: Sequence[torch.Tensor],
    labels,
    **sample_kwargs,
) -> SampleOutput:
    """Samples while forcing `input_tokens` wherever `keep_masks` is True, at every scale."""
    forced = ForcedTokens(tokens=list(input_tokens), keep=list(keep_masks))
    return sample(var, vae, labels, batch_size=input_tokens[0].shape[0], forced=forced, **sample_kwargs)
