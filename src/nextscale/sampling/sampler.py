"""Class-conditional generation: the whole pyramid in K forward passes with a preallocated KV cache."""

from __future__ import annotations

import contextlib
import weakref
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch

from ..errors import NextscaleError, SettingError
from ..runtime import check_compile_backend, freed_memory_reused, is_int
from ..tokenizer import VQVAE
from ..transformer import VAR
from ..weights import check_compatible
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
    gumbel_softmax,
    is_raster,
    pair_device,
)
from .settings import SamplerConfig, ScaleSettings, sampler_config, with_settings_signature


@dataclass
class ForcedTokens:
    """Tokens to impose after each scale's draw (zero-shot editing): where `keep` is True, `tokens` win."""

    tokens: list[torch.Tensor]  # per scale, (B, pn²) token ids
    keep: list[torch.Tensor]  # per scale, bool, (B, pn²) or (1, pn²)


def check_sample_inputs(vae, var, generator, seed, config: SamplerConfig, fine_var=None, handoff=None):
    """Everything `sample` checks before it draws that `config` could not check alone: the pair, the devices,
    the hand-off, and the per-scale settings against the model. Returns the device and the resolved settings."""
    check_compatible(vae, var)
    settings = config.for_model(len(var.patch_nums))
    device = pair_device(vae, var, "VAR")
    check_handoff(vae, var, fine_var, handoff, device)
    check_generators(generator, seed, device)
    return device, settings


def check_sampling(vae, var, config: SamplerConfig, fine_var=None, handoff=None) -> torch.device:
    """What `sample` would refuse of these models and settings, for callers that must refuse them before they
    write anything (`sample_many`, `sample_per_class`). Returns the device."""
    if is_raster(var):
        from .raster import check_pair_sampling

        return check_pair_sampling(vae, var, config, fine_var=fine_var, handoff=handoff)
    return check_sample_inputs(vae, var, None, None, config, fine_var, handoff)[0]


def check_settings_for(config: SamplerConfig, model) -> None:
    """The settings against the model, once it is known: a VAR's per-scale lists and guidance weights, or what a
    raster-order model cannot do."""
    if is_raster(model):
        from .raster import check_raster_settings

        check_raster_settings(config)
    else:
        config.for_model(len(model.patch_nums))


def check_handoff(vae, var, fine_var, handoff, device) -> None:
    """The fine model takes over at scale `handoff`: it must read the same tokens as `var` (same tokenizer,
    scales and classes) and live on the same device."""
    if fine_var is None and handoff is None:
        return
    if fine_var is None or handoff is None:
        raise NextscaleError("a hand-off needs both fine_var and handoff (the first scale the fine model draws)")
    if not isinstance(fine_var, VAR):
        raise NextscaleError(f"fine_var must be a VAR transformer, not {type(fine_var).__name__}")
    K = len(var.patch_nums)
    if not is_int(handoff) or not 1 <= handoff < K:
        raise SettingError(
            "handoff", f"must be a scale in 1..{K - 1} (the first the fine model draws), got {handoff!r}"
        )
    if tuple(fine_var.patch_nums) != tuple(var.patch_nums) or fine_var.num_classes != var.num_classes:
        raise NextscaleError(
            f"the fine model has scales {tuple(fine_var.patch_nums)} and {fine_var.num_classes} "
            f"classes, the model {tuple(var.patch_nums)} and {var.num_classes}: they must share "
            "the tokenizer and the classes"
        )
    try:
        check_compatible(vae, fine_var)
    except NextscaleError as e:
        raise NextscaleError(f"the fine model does not fit the tokenizer: {e}") from None
    if fine_var.head.weight.device != device:
        raise NextscaleError(f"the fine model is on {fine_var.head.weight.device}, the model on {device}")


_compiled_steps: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def step_function(var: VAR, backend: str | None):
    """`scale_step`, or its `torch.compile`d twin (made once per model and backend)."""
    if check_compile_backend(backend) is None:
        return scale_step
    per_model = _compiled_steps.setdefault(var, {})
    if backend not in per_model:
        compiled = torch.compile(scale_step, backend=backend, dynamic=False)
        # One graph per scale: dynamo's default limit (8) would send the finest scales of a 10-scale pyramid,
        # the costliest, back to eager. (A number, not `var`: the cache holds the model weakly.)
        # Guided and trimmed batches, a hand-off's second model and a short last batch each add graphs.
        limit = max(64, 8 * len(var.patch_nums))

        def step(*args):
            with torch._dynamo.config.patch(recompile_limit=limit):
                return compiled(*args)

        per_model[backend] = step
    return per_model[backend]


def scale_step(var: VAR, x_BlC: torch.Tensor, cond_BD: torch.Tensor, kv_caches, modulations) -> torch.Tensor:
    """Logits of one scale's tokens; the caches hold every coarser scale, so no mask is needed."""
    return var.get_logits(var.run_blocks(x_BlC, cond_BD, None, kv_caches, modulations), cond_BD, modulations)


@torch.no_grad()
def cached_teacher_forcing(var: VAR, labels_B: torch.Tensor, x_BLCv_wo_first_l: torch.Tensor) -> torch.Tensor:
    """The training forward's logits (B, L, V), computed scale by scale through the sampler's KV cache."""
    B = labels_B.shape[0]
    cond_BD = var.class_emb(labels_B)
    lvl_pos = var.level_position()
    kv_caches = var.new_kv_caches(B)
    x_BLC = torch.cat((cond_BD.unsqueeze(1) + var.pos_start, var.word_embed(x_BLCv_wo_first_l)), dim=1) + lvl_pos
    modulations = var.modulations(cond_BD)
    steps = [scale_step(var, x_BLC[:, b:e], cond_BD, kv_caches, modulations) for b, e in var.begin_ends]
    return torch.cat(steps, dim=1)


@with_settings_signature
@torch.no_grad()
def sample(
    vae: VQVAE,
    var: VAR,
    labels: int | Sequence[int] | torch.Tensor | None = None,
    *,
    batch_size: int | None = None,
    generator: Generators = None,
    seed: int | None = None,
    config: SamplerConfig | None = None,
    fine_var: VAR | None = None,
    handoff: int | None = None,
    forced: ForcedTokens | None = None,
    return_fhats: bool = False,
    channels_last_decode: bool = True,
    on_scale: Callable[[int, torch.Tensor], None] | None = None,
    reuse_memory: bool = True,
    **settings,
) -> SampleOutput:
    """Generates images with classifier-free guidance.

    The random draws (labels when not given, one multinomial per scale, then the Gumbel noise with
    `more_smooth`) come from `generator` (or one on the model's device seeded with `seed`, as the reference's
    `g_seed`) in the reference's order, so the same weights, seed and settings give the reference's token ids.
    A list of generators, one per image, gives each image its own stream (its draws then do not depend on the
    rest of the batch; the labels must then be given).
    The sampler settings (`cfg`, `cfg_schedule`, `guidance_scales`, `temperature`, `top_k`, `top_p`,
    `more_smooth`, `precision`, `compile`) are defined once in `nextscale.sampling.SamplerConfig`: pass them as
    keywords, or a `config=SamplerConfig(...)` (checked once when made) with keywords replacing some of its
    values. Defaults are the reference README's FID settings; `cfg`≈4 for looks. `more_smooth`
    (Gumbel-softmax embeddings) is for visualisation only.

    Guidance: `cfg_schedule` is `linear` (the reference), `constant`, `power:P`, `list:w0,w1,…` or a
    `nextscale.sampling.guidance.Guidance` object; `guidance_scales=slice(A, B)` keeps guidance on scales
    A ≤ si < B only. From the first scale after which no scale needs guidance, the unconditional half of the
    batch and its KV cache are dropped; with no guidance at all (`cfg=0`) the batch is B rows from the start.
    `temperature`, `top_k` and `top_p` take a number or one entry per scale. `fine_var` with `handoff=k` draws
    scales ≥ k with `fine_var` (coarse-to-fine hand-off), whose KV cache is first filled by teacher forcing
    through the tokens of scales < k; both models must share the tokenizer.

    Speed: `precision="bf16"` runs under bf16 autocast (for GPUs; CPUs are fast only in fp32); `compile`
    names a `torch.compile` backend ("inductor", …) for the transformer step, compiled once per model and
    specialised per scale (shapes are static within a scale). `channels_last_decode` decodes on NHWC
    activations (faster; images equal to the reference's up to ~1e-6 relative, tokens unaffected; False gives
    the reference's bits). On a CPU the call keeps freed memory for reuse while it runs
    (`nextscale.runtime.freed_memory_reused`; `reuse_memory=False` leaves the allocator alone) and hands it
    back when it returns. `on_scale(si, f_hat)` is called after each scale with f̂ so far (B, Cvae, h, w):
    `fhat_to_images(vae, f_hat)` is the image the scales up to si make (the pyramid as it grows).
    """
    config = sampler_config(config, **settings)
    if is_raster(var):
        from .raster import sample_pair

        scale_only = dict(
            fine_var=fine_var, handoff=handoff, forced=forced, return_fhats=return_fhats, on_scale=on_scale
        )
        return sample_pair(vae, var, labels, batch_size, generator, seed, config, **scale_only)
    device, resolved = check_sample_inputs(vae, var, generator, seed, config, fine_var, handoff)
    generator, labels = generator_and_labels(var, labels, batch_size, generator, seed, device)
    steps = {id(m): step_function(m, config.compile) for m in (var, fine_var) if m is not None}
    memory = freed_memory_reused() if device.type == "cpu" and reuse_memory else contextlib.nullcontext()
    with memory, autocast_for(device, config.precision):
        return _sample(
            vae,
            var,
            labels,
            generator,
            resolved,
            config.more_smooth,
            forced,
            return_fhats,
            steps,
            channels_last_decode,
            on_scale,
            fine_var,
            handoff,
        )


class _Rows:
    """One transformer's view of the batch: its condition, AdaLN modulations and KV caches, for the B
    conditional rows and, while guidance needs them, the B unconditional rows after them."""

    def __init__(self, var: VAR, labels: torch.Tensor, guided: bool):
        self.var, self.B = var, labels.shape[0]
        rows = torch.cat((labels, torch.full_like(labels, var.num_classes))) if guided else labels
        self.cond_BD = var.class_emb(rows)  # conditional rows first
        self.modulations = var.modulations(self.cond_BD)  # the condition is the same at every scale
        self.kv_caches = var.new_kv_caches(len(rows), dtype=cache_dtype(labels.device))
        self.lvl_pos = var.level_position()

    @property
    def guided(self) -> bool:
        return self.cond_BD.shape[0] == 2 * self.B

    def drop_unconditional(self) -> None:
        """Keeps the conditional rows only: the rest of the pyramid costs half."""
        B = self.B
        self.cond_BD = self.cond_BD[:B]
        self.modulations = [tuple(t[:B] for t in m) for m in self.modulations]
        for cache in self.kv_caches:  # copies, so that the unconditional half's memory goes
            cache.k, cache.v = cache.k[:B].clone(), cache.v[:B].clone()

    def first_input(self) -> torch.Tensor:
        var = self.var
        return self.cond_BD.unsqueeze(1) + var.pos_start.expand(self.cond_BD.shape[0], 1, -1) + self.lvl_pos[:, :1]

    def scale_input(self, si: int, next_map_BlC: torch.Tensor) -> torch.Tensor:
        """Scale si's input (si ≥ 1) from the tokenizer's map after scale si − 1, (B, l, Cvae)."""
        begin, end = self.var.begin_ends[si]
        x = self.var.word_embed(next_map_BlC) + self.lvl_pos[:, begin:end]
        return x.repeat(2, 1, 1) if self.guided else x


def _sample(
    vae,
    var,
    labels,
    generator,
    settings: ScaleSettings,
    more_smooth,
    forced,
    return_fhats,
    steps,
    channels_last_decode,
    on_scale,
    fine_var,
    handoff,
) -> SampleOutput:
    B, patch_nums, K = labels.shape[0], var.patch_nums, len(var.patch_nums)
    guidance, quantize = settings.guidance, vae.quantize
    needs_uncond = [guidance.needs_unconditional(si, K) for si in range(K)]
    rows = _Rows(var, labels, guided=any(needs_uncond))
    x_BLC = rows.first_input()
    pn_last = patch_nums[-1]
    f_hat = rows.cond_BD.new_zeros(B, vae.config.z_channels, pn_last, pn_last)
    tokens, fhats, inputs = [], [], []  # inputs: each scale's tokenizer map, for a hand-off's teacher forcing
    for si, pn in enumerate(patch_nums):
        guided = any(needs_uncond[si:])
        if fine_var is not None and si == handoff:
            rows = _handoff(fine_var, labels, guided, inputs)
            x_BLC = rows.scale_input(si, inputs[-1])
        elif rows.guided and not guided:
            rows.drop_unconditional()
            x_BLC = x_BLC[:B]
        ratio = si / (K - 1)
        logits_BlV = steps[id(rows.var)](rows.var, x_BLC, rows.cond_BD, rows.kv_caches, rows.modulations)
        if rows.guided:
            t = guidance.weight(si, K)
            logits_BlV = (1 + t) * logits_BlV[:B] - t * logits_BlV[B:]
        if settings.temperature[si] != 1:  # exactly the reference's logits at temperature 1
            logits_BlV = logits_BlV / settings.temperature[si]
        filtered = filter_top_k_top_p_(logits_BlV, settings.top_k[si], settings.top_p[si])
        idx_Bl = draw_tokens(filtered, generator)
        tokens.append(idx_Bl)
        if more_smooth:
            tau = max(0.27 * (1 - ratio * 0.95), 0.005)  # MaskGIT-style temperature, sharper at fine scales
            emb_BlC = gumbel_softmax(logits_BlV.mul(1 + ratio), tau, generator) @ quantize.embedding.weight
        else:
            emb_BlC = quantize.embedding(idx_Bl)
        h_BChw = emb_BlC.transpose(1, 2).reshape(B, -1, pn, pn)
        if forced is not None:
            # Blended in (B, C, h, w) layout like the reference, whose memory layout fixes the later bits.
            keep = forced.keep[si].to(h_BChw.dtype).view(-1, 1, pn, pn)
            given = quantize.embedding(forced.tokens[si]).transpose(1, 2).reshape(B, -1, pn, pn)
            h_BChw = given * keep + h_BChw * (1 - keep)
        f_hat, next_map = quantize.next_autoregressive_input(si, f_hat, h_BChw)
        if return_fhats:
            fhats.append(f_hat.clone())
        if si != K - 1:
            inputs.append(next_map.flatten(2).transpose(1, 2))
            x_BLC = rows.scale_input(si + 1, inputs[-1])
        if on_scale is not None:
            on_scale(si, f_hat)
    images = fhat_to_images(vae, f_hat, channels_last_decode)
    return SampleOutput(images=images, tokens=tokens, labels=labels, fhats=fhats if return_fhats else None)


def _handoff(fine_var: VAR, labels: torch.Tensor, guided: bool, inputs: list) -> _Rows:
    """The fine model's view of the batch, its KV cache filled by teacher forcing through the coarse scales'
    tokens, scale by scale as sampling fills it (so `fine_var` = the model reproduces plain sampling exactly);
    only the blocks run: the coarse scales' logits are not needed."""
    rows = _Rows(fine_var, labels, guided)
    fine_var.run_blocks(rows.first_input(), rows.cond_BD, None, rows.kv_caches, rows.modulations)
    for si, next_map in enumerate(inputs[:-1], start=1):
        fine_var.run_blocks(rows.scale_input(si, next_map), rows.cond_BD, None, rows.kv_caches, rows.modulations)
    return rows
