"""Zero-shot in-painting, out-painting and class-conditional editing (reference section 6).

The input image's tokens are forced wherever the keep mask says so, at every scale, and the model draws the
rest; the forced tokens enter f̂ (and so every later scale's input and KV cache) before the next scale.
Masks here mark the *region to generate* (1 / white); `mode="outpaint"` generates outside it instead.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from .errors import NextscaleError
from .sampling import ForcedTokens, sample
from .tokenizer import VQVAE
from .transformer import VAR

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

    Area averaging first, so a full-resolution mask is not aliased by the per-scale bilinear resize.
    """
    if isinstance(region, Image.Image):
        region = torch.from_numpy(np.asarray(region.convert("L"), dtype=np.float32) / 255.0)
    region = region.float()
    flat = region.view(-1, 1, *region.shape[-2:])
    return F.adaptive_avg_pool2d(flat, (pn_last, pn_last)).view(*region.shape[:-2], pn_last, pn_last)


@dataclass
class EditOutput:
    images: torch.Tensor  # (B, 3, H, W) in [0, 1]
    tokens: list[torch.Tensor]  # per scale, as drawn
    final_tokens: list[torch.Tensor]  # per scale, after the input's tokens replaced the drawn ones where kept
    keep_masks: list[torch.Tensor]  # per scale, bool (B or 1, pn²): where the input's tokens were forced
    labels: torch.Tensor


def prepare_images(images, resolution: int) -> torch.Tensor:
    """PIL images or a (B, 3, H, W) tensor in [0, 1] → (B, 3, R, R) in [0, 1], resized and centre-cropped."""
    from torchvision.transforms import functional as TF

    if isinstance(images, Image.Image):
        images = [images]
    if isinstance(images, list | tuple):
        tensors = []
        for im in images:
            if im.size != (resolution, resolution):
                im = TF.center_crop(TF.resize(im.convert("RGB"), resolution), resolution)
            tensors.append(TF.to_tensor(im.convert("RGB")))
        return torch.stack(tensors)
    if not torch.is_tensor(images) or images.ndim != 4 or images.shape[1] != 3:
        raise NextscaleError("images must be PIL images or a (B, 3, H, W) tensor in [0, 1]")
    if images.shape[-2:] != (resolution, resolution):
        images = TF.center_crop(TF.resize(images, resolution, antialias=True), resolution)
    return images.float()


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
    if isinstance(mask, list | tuple) and len(mask) == len(patch_nums) and torch.is_tensor(mask[0]):
        keep = [m.to(device).bool() for m in mask]
        region = None
    else:
        pn_last = patch_nums[-1]
        region = box_region(tuple(mask), pn_last) if isinstance(mask, tuple) else region_on_token_grid(mask, pn_last)
        region = region.to(device)
        binary = region.gt(0.5)
        if not binary.any():
            raise NextscaleError("the mask is empty: nothing to generate")
        if binary.all() and keep_coarse_scales == 0:
            raise NextscaleError("the mask covers everything: nothing of the image would be kept")
        keep = scale_keep_masks((1 - region) if mode == "inpaint" else region, patch_nums)
    for si in range(min(keep_coarse_scales, len(keep))):
        keep[si] = torch.ones_like(keep[si])
    return keep, region


@torch.no_grad()
def edit(
    var: VAR,
    vae: VQVAE,
    images=None,
    mask: torch.Tensor | Image.Image | Box | Sequence[torch.Tensor] | None = None,
    *,
    mode: str = "inpaint",
    labels: int | Sequence[int] | torch.Tensor | None = None,
    input_tokens: Sequence[torch.Tensor] | None = None,
    keep_coarse_scales: int = 0,
    feather: float | None = None,
    **sample_kwargs,
) -> EditOutput:
    """Edits images with the model: generates the masked region (`inpaint`) or everything else (`outpaint`).

    `mask`: a region image of any size (1 / white = region), a box `(y0, x0, y1, x1)` in [0, 1], or a list of
    per-scale bool keep masks (used as they are). `labels`: None for unconditional (the null class), else
    the class(es) to paint. `keep_coarse_scales=k` forces the input's first k scales everywhere: with a
    whole-image region this gives variations; with a class it keeps the layout. `feather` (pixels) pastes the
    result into the original with a soft edge. `input_tokens` replaces `images` with a token pyramid.
    Sampler settings (`cfg`, `top_k`, `top_p`, `more_smooth`, `generator`/`seed`) pass through.
    """
    if mode not in MODES:
        raise NextscaleError(f"mode must be one of {MODES}, got {mode!r}")
    patch_nums, device = var.patch_nums, var.head.weight.device
    keep, region = keep_masks_for(mask, mode, patch_nums, keep_coarse_scales, device)
    pixels = None
    if input_tokens is None:
        if images is None:
            raise NextscaleError("give images (or input_tokens) to edit")
        pixels = prepare_images(images, vae.config.resolution).to(device)
        input_tokens = vae.img_to_idx(pixels * 2 - 1)
    B = input_tokens[0].shape[0]
    if labels is None:
        labels = -1
    if isinstance(labels, int):
        labels = [var.num_classes if labels < 0 else labels] * B
    result = sample(var, vae, labels, forced=ForcedTokens(list(input_tokens), keep), **sample_kwargs)
    images_out = result.images
    if feather is not None and pixels is not None and region is not None:
        generated = region if mode == "inpaint" else 1 - region
        images_out = feathered_blend(pixels, images_out, generated, feather)
    final = [torch.where(k, given, drawn) for k, given, drawn in zip(keep, input_tokens, result.tokens)]
    return EditOutput(images_out, result.tokens, final, keep, result.labels)
