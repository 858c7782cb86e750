"""Masks for zero-shot editing: a region (an image, a box) → the keep mask of each scale, as the reference's
notebook builds them; and the soft paste of a result into the original pixels."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from ..data.folders import MASK_BACKGROUND, to_rgb
from ..errors import NextscaleError

Box = tuple[float, float, float, float]  # y0, x0, y1, x1 in [0, 1]
MODES = ("inpaint", "outpaint")


def scale_keep_masks(keep_hw: torch.Tensor, patch_nums: Sequence[int]) -> list[torch.Tensor]:
    """A keep mask (1 = keep the input's token), (h, w) or (B, h, w) → one bool mask (B or 1, pn²) per scale.

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


def box_region(box: Box, size: int) -> torch.Tensor:
    """A box in relative coordinates → a (size, size) region mask, rounded like the reference's notebook."""
    y0, x0, y1, x1 = box
    if not all(0.0 <= v <= 1.0 for v in box):
        raise NextscaleError(f"box {box} has coordinates outside [0, 1]")
    if y0 >= y1 or x0 >= x1:
        raise NextscaleError(f"box {box} is empty: it needs y0 < y1 and x0 < x1")
    region = torch.zeros(size, size)
    region[round(y0 * size) : round(y1 * size), round(x0 * size) : round(x1 * size)] = 1
    return region


def region_on_token_grid(region: torch.Tensor | Image.Image, pn_last: int) -> torch.Tensor:
    """A region mask of any size ((h, w) or (B, h, w); PIL: white = 1) → its cover of each last-scale token.

    Area averaging first, so a full-resolution mask is not aliased by the per-scale bilinear resize. A mask
    that is not square is centre-cropped to a square first, as images are, so that a mask drawn on a whole
    photo covers the same part of the picture the model sees.
    """
    if isinstance(region, Image.Image):
        region = torch.from_numpy(np.asarray(to_rgb(region, MASK_BACKGROUND).convert("L"), dtype=np.float32) / 255.0)
    if not torch.is_tensor(region) or region.ndim not in (2, 3) or min(region.shape[-2:]) < 1:
        what = f"shape {tuple(region.shape)}" if torch.is_tensor(region) else type(region).__name__
        raise NextscaleError(f"a region mask must be an image or an (h, w) / (B, h, w) tensor, got {what}")
    h, w = region.shape[-2:]
    side = min(h, w)
    top, left = int(round((h - side) / 2.0)), int(round((w - side) / 2.0))
    region = region[..., top : top + side, left : left + side].float()
    flat = region.reshape(-1, 1, side, side)
    return F.adaptive_avg_pool2d(flat, (pn_last, pn_last)).view(*region.shape[:-2], pn_last, pn_last)


def feathered_blend(original: torch.Tensor, generated: torch.Tensor, region: torch.Tensor, feather: float):
    """Original pixels outside the generated region, with a soft edge `feather` pixels wide."""
    H, W = generated.shape[-2:]
    soft = F.interpolate(region.float().view(-1, 1, *region.shape[-2:]), size=(H, W), mode="nearest")
    if feather > 0:
        radius = max(1, int(round(2 * feather)))
        x = torch.arange(-radius, radius + 1, dtype=torch.float32)
        kernel = torch.exp(-0.5 * (x / feather) ** 2)
        kernel = (kernel / kernel.sum()).to(soft)
        soft = F.conv2d(F.pad(soft, (radius, radius, 0, 0), mode="replicate"), kernel.view(1, 1, 1, -1))
        soft = F.conv2d(F.pad(soft, (0, 0, radius, radius), mode="replicate"), kernel.view(1, 1, -1, 1))
    return original * (1 - soft) + generated * soft


def keep_masks_for(mask, mode: str, patch_nums: Sequence[int], keep_coarse_scales: int = 0, device="cpu"):
    """The per-scale keep masks for a mask argument of `edit`, and the region on the token grid (None when
    per-scale masks were given). Raises on a mask that keeps nothing or generates nothing."""
    if mask is None:
        raise NextscaleError("give a mask: a region image, a box (y0, x0, y1, x1) or per-scale keep masks")
    if isinstance(mask, list | tuple) and mask and torch.is_tensor(mask[0]):
        shapes_ok = len(mask) == len(patch_nums) and all(
            torch.is_tensor(m) and m.ndim == 2 and m.shape[1] == pn * pn for m, pn in zip(mask, patch_nums)
        )
        if not shapes_ok:
            raise NextscaleError(
                f"per-scale keep masks must be {len(patch_nums)} (B or 1, pn²) tensors for the "
                f"scales {tuple(patch_nums)}"
            )
        keep = [m.to(device).bool() for m in mask]
        region = None
    else:
        pn_last = patch_nums[-1]
        if isinstance(mask, tuple | list):
            if len(mask) != 4 or not all(isinstance(v, int | float) for v in mask):
                raise NextscaleError(f"a box is four numbers (y0, x0, y1, x1) in [0, 1], got {mask!r}")
            region = box_region(tuple(float(v) for v in mask), pn_last)
        else:
            region = region_on_token_grid(mask, pn_last)
        region = region.to(device)
        generated = region.gt(0.5) if mode == "inpaint" else region.le(0.5)
        if not generated.any():
            raise NextscaleError(
                "the mask is empty: nothing to generate"
                if mode == "inpaint"
                else "the region covers the whole image: out-painting would generate nothing"
            )
        if generated.all() and keep_coarse_scales == 0:
            raise NextscaleError(
                "the mask covers everything: nothing of the image would be kept"
                if mode == "inpaint"
                else "the region is empty: out-painting would keep nothing of the image"
            )
        keep = scale_keep_masks((1 - region) if mode == "inpaint" else region, patch_nums)
    for si in range(min(keep_coarse_scales, len(keep))):
        keep[si] = torch.ones_like(keep[si])
    return keep, region
