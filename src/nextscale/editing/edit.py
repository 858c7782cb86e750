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
from PIL import Image

from ..data import to_rgb
from ..errors import NextscaleError, SettingError
from ..runtime import check_finite, is_int
from ..sampling import ForcedTokens, sample
from ..tokenizer import VQVAE
from ..transformer import VAR
from ..weights.load import check_pair
from .masks import MODES, Box, feathered_blend, keep_masks_for


@dataclass
class EditOutput:
    images: torch.Tensor  # (B, 3, H, W) in [0, 1]
    tokens: list[torch.Tensor]  # per scale, as drawn
    final_tokens: list[torch.Tensor]  # per scale, after the input's tokens replaced the drawn ones where kept
    keep_masks: list[torch.Tensor]  # per scale, bool (B or 1, pn²): where the input's tokens were forced
    labels: torch.Tensor


def prepare_images(images, resolution: int) -> torch.Tensor:
    """PIL images or a float (B, 3, H, W) tensor in [0, 1] → (B, 3, R, R) in [0, 1], resized (shorter side)
    and centre-cropped where the size differs."""
    if isinstance(images, Image.Image):
        images = [images]
    if isinstance(images, list | tuple) and images and all(isinstance(im, Image.Image) for im in images):
        pixels = [np.asarray(fit_square(to_rgb(im), resolution), dtype=np.float32) / 255 for im in images]
        return torch.from_numpy(np.stack(pixels)).permute(0, 3, 1, 2).contiguous()
    if not torch.is_tensor(images) or not images.is_floating_point() or images.ndim != 4 or images.shape[1] != 3:
        what = (
            f"{images.dtype} tensor of shape {tuple(images.shape)}"
            if torch.is_tensor(images)
            else type(images).__name__
        )
        raise NextscaleError(f"images must be PIL images or a float (B, 3, H, W) tensor in [0, 1], got a {what}")
    low, high = torch.stack(torch.aminmax(images.detach())).tolist()
    if not (-1e-3 <= low and high <= 1.001):  # also false for NaN
        raise NextscaleError(f"image tensors must lie in [0, 1], got values in [{low:.3g}, {high:.3g}]")
    if images.shape[-2:] != (resolution, resolution):
        from torchvision.transforms import functional as TF

        images = TF.center_crop(TF.resize(images, resolution, antialias=True), resolution)
    return images.float()


def fit_square(image: Image.Image, side: int) -> Image.Image:
    """Shorter side to `side` (bilinear, as torchvision's resize), then the centre `side`×`side` crop."""
    w, h = image.size
    if (w, h) == (side, side):
        return image
    size = (side, int(side * h / w)) if w <= h else (int(side * w / h), side)
    image = image.resize(size, Image.BILINEAR)
    left, top = int(round((size[0] - side) / 2.0)), int(round((size[1] - side) / 2.0))
    return image.crop((left, top, left + side, top + side))


def check_edit_settings(mode: str, keep_coarse_scales: int, feather: float | None, num_scales: int, side: int):
    if mode not in MODES:
        raise SettingError("mode", f"must be one of {', '.join(MODES)}, got {mode!r}")
    if not is_int(keep_coarse_scales) or not 0 <= keep_coarse_scales < num_scales:
        raise SettingError(
            "keep_coarse_scales",
            f"must be an integer in [0, {num_scales - 1}] (this model has {num_scales} scales; all of them would "
            f"only reconstruct the input), got {keep_coarse_scales!r}",
        )
    if feather is not None:
        try:
            check_finite(feather, "feather", 0.0, side / 4)
        except SettingError as e:
            raise SettingError("feather", f"{e.problem} (pixels, at most a quarter of the {side}-pixel side)") from None


@torch.no_grad()
def edit(
    vae: VQVAE,
    var: VAR,
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
    check_pair(vae, var)
    patch_nums, device = var.patch_nums, var.head.weight.device
    check_edit_settings(mode, keep_coarse_scales, feather, len(patch_nums), vae.config.resolution)
    keep, region = keep_masks_for(mask, mode, patch_nums, keep_coarse_scales, device)
    pixels = None
    if input_tokens is None:
        if images is None:
            raise NextscaleError("give images (or input_tokens) to edit")
        pixels = prepare_images(images, vae.config.resolution).to(device)
        input_tokens = vae.img_to_idx(pixels * 2 - 1)
    else:
        vae.check_tokens(input_tokens)
        input_tokens = [t.to(device) for t in input_tokens]
    B = input_tokens[0].shape[0]
    labels = -1 if labels is None else labels  # the null class: what the paper in-/out-paints with
    if not is_int(labels) and len(labels) != B:
        raise NextscaleError(f"{len(labels)} labels for {B} images: give one label per image, or one int for all")
    forced = ForcedTokens(list(input_tokens), keep)
    result = sample(vae, var, labels, batch_size=B if is_int(labels) else None, forced=forced, **sample_kwargs)
    images_out = result.images
    if feather is not None and pixels is not None and region is not None:
        generated = region if mode == "inpaint" else 1 - region
        images_out = feathered_blend(pixels, images_out, generated, feather)
    final = [torch.where(k, given, drawn) for k, given, drawn in zip(keep, input_tokens, result.tokens)]
    return EditOutput(images_out, result.tokens, final, keep, result.labels)
