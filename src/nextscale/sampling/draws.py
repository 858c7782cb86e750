"""What both orders of generation share: the draw of tokens from filtered logits, the generators and labels a
call takes (checked at the boundary), the precision, and the images from the tokenizer's latent. The VAR sampler
(`sampler.py`) and the raster-order one (`raster.py`) are built on these."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch

from ..errors import NextscaleError
from ..runtime import check_precision, is_int
from ..seeding import seeded_generator
from ..transformer.raster import RasterAR


@dataclass
class SampleOutput:
    images: torch.Tensor  # (B, 3, H, W) in [0, 1]
    tokens: list[torch.Tensor]  # per scale, (B, pn²), as drawn (before any forced tokens replaced them)
    labels: torch.Tensor  # (B,), the null class where unconditional
    fhats: list[torch.Tensor] | None = None  # per scale, cumulative f̂ (only when asked for)


def filter_top_k_top_p_(logits_BlV: torch.Tensor, top_k: int = 0, top_p: float = 0.0) -> torch.Tensor:
    """Masks logits to −inf in place, exactly as the reference does.

    top-k removes what lies strictly below the k-th largest (ties survive); top-p sorts ascending and removes
    tokens whose ascending cumulative probability is ≤ 1 − top_p, never the most likely one.
    """
    V = logits_BlV.shape[-1]
    if 0 < top_k < V:
        kth = logits_BlV.topk(top_k, largest=True, sorted=False, dim=-1)[0].amin(dim=-1, keepdim=True)
        logits_BlV.masked_fill_(logits_BlV < kth, -torch.inf)
    if top_p > 0:
        sorted_logits, sorted_idx = logits_BlV.sort(dim=-1, descending=False)
        remove_sorted = sorted_logits.softmax(dim=-1).cumsum_(dim=-1) <= (1 - top_p)
        remove_sorted[..., -1:] = False
        logits_BlV.masked_fill_(remove_sorted.scatter(-1, sorted_idx, remove_sorted), -torch.inf)
    return logits_BlV


Generators = torch.Generator | Sequence[torch.Generator] | None  # one for the batch, or one per image


def draw_tokens(logits_BlV: torch.Tensor, generator: Generators) -> torch.Tensor:
    B, l, V = logits_BlV.shape
    probs = logits_BlV.softmax(dim=-1)
    if isinstance(generator, Sequence):  # each image's draws from its own stream: independent of the batch
        rows = [torch.multinomial(p, num_samples=1, replacement=True, generator=g) for p, g in zip(probs, generator)]
        return torch.stack(rows).view(B, l)
    return torch.multinomial(probs.view(-1, V), num_samples=1, replacement=True, generator=generator).view(B, l)


def gumbel_softmax(logits: torch.Tensor, tau: float, generator: Generators) -> torch.Tensor:
    if isinstance(generator, Sequence):
        noise = torch.stack([torch.empty_like(row).exponential_(generator=g) for row, g in zip(logits, generator)])
    else:
        noise = torch.empty_like(logits).exponential_(generator=generator)
    return ((logits - noise.log()) / tau).softmax(dim=-1)


def generator_and_labels(model, labels, batch_size, generator: Generators, seed, device):
    """The generator(s) the draws come from (one seeded with `seed` where given) and the labels, checked."""
    if generator is None and seed is not None:
        generator = seeded_generator(seed, device)
    if isinstance(generator, Sequence) and labels is None:
        raise NextscaleError("with one generator per image, give the labels (random labels need one generator)")
    labels = resolve_labels(model, labels, batch_size, generator, device)
    if isinstance(generator, Sequence) and len(generator) != len(labels):
        raise NextscaleError(f"{len(generator)} generators for {len(labels)} images: give one per image")
    return generator, labels


def resolve_labels(var, labels, batch_size: int | None, generator, device) -> torch.Tensor:
    """None: uniform random classes; int: all the same (negative = unconditional); sequence/tensor: as given.

    Checked at the boundary (on the host for lists, with one read-back for device tensors), so that a bad
    label names itself instead of failing inside an embedding lookup.
    """
    n = var.num_classes
    if labels is None or is_int(labels):
        if not is_int(batch_size) or batch_size < 1:
            why = "labels are drawn at random" if labels is None else "one label is given for all images"
            raise NextscaleError(f"batch_size must be a positive integer when {why}, got {batch_size!r}")
        if labels is None:
            uniform = torch.full((n,), 1.0 / n, device=device)
            return torch.multinomial(uniform, num_samples=batch_size, replacement=True, generator=generator)
        if labels > n:
            raise NextscaleError(f"class {labels} is out of range: this model has classes 0..{n - 1}")
        return torch.full((batch_size,), n if labels < 0 else int(labels), device=device)
    if torch.is_tensor(labels):
        if labels.is_floating_point() or labels.is_complex() or labels.dtype == torch.bool or labels.ndim != 1:
            raise NextscaleError(
                f"labels must be a 1-D integer tensor, got {labels.dtype} of shape {tuple(labels.shape)}"
            )
        if labels.numel() == 0:
            raise NextscaleError("labels is empty")
        values = torch.stack(torch.aminmax(labels)).tolist()  # one read-back where the tensor is on a device
    elif isinstance(labels, Sequence | np.ndarray):
        values = list(np.asarray(labels).ravel()) if isinstance(labels, np.ndarray) else list(labels)
        if isinstance(labels, np.ndarray) and labels.ndim != 1:
            raise NextscaleError(f"labels must be 1-D, got shape {labels.shape}")
        bad = [v for v in values if not is_int(v)]
        if bad:
            raise NextscaleError(f"labels must be integer class ids, got {bad[0]!r}")
    else:
        raise NextscaleError(
            f"labels must be None, an int, a sequence or a tensor of class ids, not {type(labels).__name__}"
        )
    if len(values) == 0:
        raise NextscaleError("labels is empty")
    bad = [v for v in values if not 0 <= v <= n]
    if bad:
        raise NextscaleError(
            f"class {bad[0]} is out of range: this model has classes 0..{n - 1} (and {n} = unconditional)"
        )
    return (labels if torch.is_tensor(labels) else torch.tensor([int(v) for v in values])).long().to(device)


def check_generators(generator: Generators, seed: int | None, device: torch.device) -> None:
    """A seed or generators (one, or one per image), on the model's device."""
    if generator is not None and seed is not None:
        raise NextscaleError("give a seed or a generator, not both")
    for g in generator if isinstance(generator, Sequence) else [generator]:
        if not isinstance(g, torch.Generator | None):
            raise NextscaleError(f"generator must be a torch.Generator or a list of them, got {type(g).__name__}")
        if g is not None and not same_device(g.device, device):
            raise NextscaleError(
                f"the generator lives on {g.device}, the model on {device}: create it with "
                f"torch.Generator(device={str(device)!r})"
            )


def is_raster(model) -> bool:
    return getattr(model, "model_type", None) == RasterAR.model_type


def pair_device(vae, model, name: str) -> torch.device:
    """The device both models of a sampling call are on (refused, naming both, where they differ)."""
    device, vae_device = model.head.weight.device, vae.quantize.embedding.weight.device
    if vae_device != device:
        raise NextscaleError(f"the VAE is on {vae_device} and the {name} on {device}: move both to one device")
    return device


def same_device(a: torch.device, b: torch.device) -> bool:
    """Equal devices, where an index left out means the current one of that type."""
    if a.type != b.type:
        return False
    current = torch.cuda.current_device() if a.type == "cuda" else 0
    return (a.index if a.index is not None else current) == (b.index if b.index is not None else current)


def autocast_for(device: torch.device, precision: str):
    return torch.autocast(device.type, dtype=torch.bfloat16, enabled=check_precision(precision) == "bf16")


def cache_dtype(device: torch.device) -> torch.dtype | None:
    return torch.get_autocast_dtype(device.type) if torch.is_autocast_enabled(device.type) else None


def fhat_to_images(vae, f_hat: torch.Tensor, channels_last: bool = True) -> torch.Tensor:
    """f̂ → float32 images in [0, 1], as the sampler returns them (also for an `on_scale` hook's partial f̂)."""
    return vae.fhat_to_img(f_hat, channels_last=channels_last).float().add_(1).mul_(0.5).contiguous()
