"""Sampling the raster-order baseline: one token per forward pass, through a KV cache, with the VAR sampler's
settings where they apply (guidance as one weight or a schedule over the token index, top-k, top-p,
temperature, seeds and per-image generators). Settings that only make sense for scales are refused."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, fields

import torch

from ..errors import NextscaleError, SettingError
from ..transformer.raster import RasterAR
from ..weights.load import check_raster_tokenizer
from .draws import (
    Generators,
    SampleOutput,
    autocast_for,
    cache_dtype,
    check_generators,
    draw_tokens,
    fhat_to_images,
    filter_top_k_top_p_,
    generator_and_labels,
    pair_device,
)
from .guidance import Interval, PerScale
from .settings import SamplerConfig, sampler_config

SCALE_ONLY = ("guidance_scales", "more_smooth")  # hand-off and editing are `sample()` arguments


@dataclass
class RasterOutput:
    tokens: torch.Tensor  # (B, N) token ids, raster order
    labels: torch.Tensor  # (B,), the null class where unconditional
    images: torch.Tensor | None = None  # (B, 3, H, W) in [0, 1], when a tokenizer was given


def check_raster_settings(config: SamplerConfig) -> None:
    """Refuses, naming the setting, what a raster-order model cannot do: per-scale values, guided scales, a
    per-scale guidance list, Gumbel smoothing, and (not yet) compiling its step."""
    by_name = {f.name: f for f in fields(config)}
    for name in SCALE_ONLY:
        if getattr(config, name) != by_name[name].default:
            raise SettingError(name, "applies to VAR's scales: a raster-order model draws one token at a time")
    if config.compile is not None:
        raise SettingError("compile", "is not offered for a raster-order model's token step yet")
    for name, f in by_name.items():
        if f.metadata["per_scale"] and isinstance(getattr(config, name), tuple):
            raise SettingError(name, "takes one value for a raster-order model (a list gives one per VAR scale)")
    inner = config.guidance
    while isinstance(inner, Interval):
        inner = inner.inner
    if isinstance(inner, PerScale):
        raise SettingError("cfg_schedule", "list: is one weight per VAR scale; use linear, constant or power:P")


@torch.no_grad()
def sample_raster(
    model: RasterAR,
    labels: int | Sequence[int] | torch.Tensor | None = None,
    *,
    batch_size: int | None = None,
    generator: Generators = None,
    seed: int | None = None,
    vae=None,
    config: SamplerConfig | None = None,
    **settings,
) -> RasterOutput:
    """Draws `model.config.num_tokens` tokens per image in raster order. Labels, seeds and generators behave as
    `nextscale.sampling.sample`'s. Guidance weighs token i with `cfg_schedule`'s weight at step i of N (linear:
    0 at the first token up to `cfg` at the last; constant: `cfg` throughout), on a batch doubled with the null
    class. `vae`, a single-scale tokenizer whose map is the model's grid, decodes the tokens to images."""
    config = sampler_config(config, **settings)
    check_raster_settings(config)
    device = model.head.weight.device
    if vae is not None:
        check_raster_tokenizer(vae, model)
    check_generators(generator, seed, device)
    generator, labels = generator_and_labels(model, labels, batch_size, generator, seed, device)
    with autocast_for(device, config.precision):
        tokens = _draw(model, labels, generator, config)
    images = None
    if vae is not None:
        (f_hat,) = vae.quantize.idx_to_fhats([tokens], last_only=True)
        images = fhat_to_images(vae, f_hat)  # as VAR's samples: float32 in [0, 1]
    return RasterOutput(tokens=tokens, labels=labels, images=images)


def _draw(model: RasterAR, labels: torch.Tensor, generator: Generators, config: SamplerConfig) -> torch.Tensor:
    B, N = labels.shape[0], model.config.num_tokens
    guidance = config.guidance
    weights = [guidance.weight(i, N) if N > 1 else guidance.weight(1, 2) for i in range(N)]
    guided = any(w != 0 for w in weights)
    rows = torch.cat((labels, torch.full_like(labels, model.num_classes))) if guided else labels
    cond_BD = model.class_emb(rows)
    modulations = model.modulations(cond_BD)
    kv_caches = model.new_kv_caches(len(rows), dtype=cache_dtype(labels.device))
    x_B1C = model.start_input(cond_BD)
    tokens = torch.empty(B, N, dtype=torch.long, device=labels.device)
    for i in range(N):
        h = model.run_blocks(x_B1C, cond_BD, None, kv_caches, modulations)
        logits_B1V = model.get_logits(h, cond_BD, modulations)
        if guided:
            t = weights[i]
            logits_B1V = (1 + t) * logits_B1V[:B] - t * logits_B1V[B:]
        if config.temperature != 1:
            logits_B1V = logits_B1V / config.temperature
        filtered = filter_top_k_top_p_(logits_B1V, config.top_k, config.top_p)
        tokens[:, i : i + 1] = draw_tokens(filtered, generator)
        if i + 1 < N:
            x_B1C = model.token_input(tokens[:, i : i + 1], i)
            x_B1C = x_B1C.repeat(2, 1, 1) if guided else x_B1C
    return tokens


@torch.no_grad()
def cached_teacher_forcing_raster(model: RasterAR, labels_B: torch.Tensor, tokens_BN: torch.Tensor) -> torch.Tensor:
    """The training forward's logits (B, N, V) for these tokens, one position at a time through the sampler's
    KV cache (what `_draw` computes, with the tokens given instead of drawn)."""
    cond_BD = model.class_emb(labels_B)
    modulations = model.modulations(cond_BD)
    kv_caches = model.new_kv_caches(labels_B.shape[0])
    x = torch.cat((model.start_input(cond_BD), model.token_input(tokens_BN[:, :-1], 0)), dim=1)
    steps = [
        model.get_logits(model.run_blocks(x[:, i : i + 1], cond_BD, None, kv_caches, modulations), cond_BD, modulations)
        for i in range(x.shape[1])
    ]
    return torch.cat(steps, dim=1)


SCALE_ONLY_ARGUMENTS = {
    "fine_var": "a hand-off to a second model",
    "handoff": "a hand-off to a second model",
    "forced": "editing",
    "return_fhats": "the pyramid's f̂",
    "on_scale": "a per-scale hook",
}


def check_pair_sampling(vae, model: RasterAR, config: SamplerConfig, **scale_only) -> torch.device:
    """What `sample(vae, model, …)` refuses for a raster-order model, before any work. Returns the device."""
    for name, value in scale_only.items():
        if value is not None and value is not False:
            raise NextscaleError(f"{SCALE_ONLY_ARGUMENTS[name]} applies to VAR's scales, not to a raster-order model")
    check_raster_settings(config)
    check_raster_tokenizer(vae, model)
    return pair_device(vae, model, "model")


def sample_pair(vae, model: RasterAR, labels, batch_size, generator, seed, config: SamplerConfig, **scale_only):
    """`nextscale.sampling.sample` for a raster-order model: its `SampleOutput`, the map's tokens as one scale."""
    check_pair_sampling(vae, model, config, **scale_only)
    out = sample_raster(model, labels, batch_size=batch_size, generator=generator, seed=seed, vae=vae, config=config)
    return SampleOutput(images=out.images, tokens=[out.tokens], labels=out.labels)
