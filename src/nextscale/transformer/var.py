"""The VAR transformer: predicts every token of scale k+1 at once from the class and scales ≤ k."""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field

import torch
from torch import nn

from ..errors import NextscaleError
from ..pretrained import PretrainedMixin, check_config, shapes_only_embedding
from ..tokenizer.vqvae import PATCH_NUMS_256, pyramid_tokens
from .stack import BlockStack, depth_rule


@dataclass
class VARConfig:
    """The transformer's architecture; defaults are var-d16, and `VARConfig.from_depth` gives the released
    depth → width rule. Training settings (label dropout, drop path, initial scales) live in `VAROptions`."""

    depth: int = 16
    embed_dim: int = 1024
    num_heads: int = 16
    mlp_ratio: float = 4.0
    num_classes: int = 1000  # the class embedding has one more row: the null class for guidance
    vocab_size: int = 4096  # must match the tokenizer's codebook
    latent_channels: int = 32  # must match the tokenizer's z_channels
    patch_nums: tuple[int, ...] = field(default=PATCH_NUMS_256)
    norm_eps: float = 1e-6
    shared_aln: bool = False
    attn_l2_norm: bool = True

    def __post_init__(self):
        self.patch_nums = tuple(self.patch_nums)
        for name in ("depth", "embed_dim", "num_heads", "num_classes", "vocab_size", "latent_channels"):
            check_config(getattr(self, name) >= 1, f"{name} must be at least 1, got {getattr(self, name)}")
        check_config(
            self.embed_dim % self.num_heads == 0,
            f"embed_dim {self.embed_dim} is not divisible by num_heads {self.num_heads}",
        )
        check_config(self.mlp_ratio > 0 and self.norm_eps > 0, "mlp_ratio and norm_eps must be positive")
        increasing = list(self.patch_nums) == sorted(set(self.patch_nums))
        check_config(
            len(self.patch_nums) >= 2 and self.patch_nums[0] >= 1 and increasing,
            f"patch_nums must be two or more positive, increasing sizes, got {self.patch_nums}",
        )

    @classmethod
    def from_depth(cls, depth: int, width_per_depth: int = 64, head_dim: int | None = None, **overrides) -> VARConfig:
        """The released models' rule, width 64·depth and heads = depth; a sweep may take another width per depth,
        or a fixed number of channels per head (`head_dim`) instead."""
        return cls(**{**depth_rule(depth, width_per_depth, head_dim), **overrides})

    @property
    def num_tokens(self) -> int:
        return pyramid_tokens(self.patch_nums)

    def to_dict(self) -> dict:
        return asdict(self)


def scale_levels(patch_nums) -> torch.Tensor:
    """The scale index of every token, (1, L) int64."""
    return torch.cat([torch.full((pn * pn,), si) for si, pn in enumerate(patch_nums)]).view(1, -1)


def block_causal_bias(levels_1L: torch.Tensor) -> torch.Tensor:
    """(1, 1, L, L): 0 where a token may see another (its own scale and every coarser one), −inf elsewhere."""
    L = levels_1L.shape[1]
    visible = levels_1L.view(L, 1) >= levels_1L.view(1, L)
    return torch.zeros(L, L).masked_fill_(~visible, -torch.inf).view(1, 1, L, L)


class VAR(BlockStack, PretrainedMixin, nn.Module):
    model_type = "var"
    config_class = VARConfig
    # training settings that format version 1 kept in the config
    legacy_config_keys = (
        "cond_drop_rate",
        "drop_rate",
        "attn_drop_rate",
        "drop_path_rate",
        "init_adaln",
        "init_adaln_gamma",
        "init_head",
        "init_std",
    )

    def __init__(self, config: VARConfig | None = None, *, device: str | torch.device | None = None):
        """`device="meta"` builds shapes only (for loading weights); elsewhere `init_weights()` runs."""
        super().__init__()
        self.config = cfg = config or VARConfig()
        C, L = cfg.embed_dim, cfg.num_tokens
        self.num_classes, self.patch_nums = cfg.num_classes, cfg.patch_nums
        self.begin_ends = []
        start = 0
        for pn in cfg.patch_nums:
            self.begin_ends.append((start, start + pn * pn))
            start += pn * pn
        with torch.device("meta"):  # nothing is allocated or initialised twice
            self.word_embed = nn.Linear(cfg.latent_channels, C)
            self.class_emb = shapes_only_embedding(cfg.num_classes + 1, C)
            self.pos_start = nn.Parameter(torch.empty(1, 1, C))
            self.pos_1LC = nn.Parameter(torch.empty(1, L, C))
            self.lvl_embed = shapes_only_embedding(len(cfg.patch_nums), C)
            self.build_stack()
            # Persistent, as in the reference: released files carry both.
            self.register_buffer("lvl_1L", torch.empty(1, L, dtype=torch.long))
            self.register_buffer("attn_bias_for_masking", torch.empty(1, 1, L, L))
            self.build_head()
        self.grad_checkpointing = False  # training: recompute each block's activations in the backward
        device = torch.get_default_device() if device is None else torch.device(device)
        if device.type != "meta":
            self.to_empty(device=device)
            self.init_weights()

    @torch.no_grad()
    def init_weights(
        self, init_adaln: float = 0.5, init_adaln_gamma: float = 1e-5, init_head: float = 0.02, init_std: float = -1.0
    ) -> None:
        """The reference's initialisation (its defaults; recipes change `init_adaln_gamma`), over every parameter
        and buffer: each is drawn or set afresh, never scaled in place, so calling it again (say on a model
        built on the meta device) gives the same distribution, and the same weights from the same RNG state.
        """
        cfg = self.config
        C = cfg.embed_dim
        construction_std = math.sqrt(1 / C / 3)  # the reference's, whatever init_std says
        std = init_std if init_std >= 0 else construction_std
        self.init_linears_and_embeddings(std)
        for p in (self.pos_start, self.pos_1LC):
            nn.init.trunc_normal_(p, mean=0, std=construction_std)
        self.init_stack(init_adaln, init_adaln_gamma, init_head)
        levels = scale_levels(cfg.patch_nums)
        self.lvl_1L.copy_(levels)
        self.attn_bias_for_masking.copy_(block_causal_bias(levels))

    # ---- pieces the sampler and the training forward share ----------------------------------------------

    def level_position(self) -> torch.Tensor:
        """Level plus position embedding of every token, (1, L, C)."""
        return self.lvl_embed(self.lvl_1L) + self.pos_1LC

    # ---- training ----------------------------------------------------------------------------------------

    def forward(
        self,
        labels_B: torch.Tensor,
        x_BLCv_wo_first_l: torch.Tensor,
        *,
        cond_drop_rate: float = 0.0,
        generator: torch.Generator | None = None,
        path_keep: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Teacher-forcing logits (B, L, V) for the scales `x_BLCv_wo_first_l` covers.

        `x_BLCv_wo_first_l` is the tokenizer's `idx_to_var_input` (B, L − 1, Cvae), or its first
        `begin_ends[k][1] − 1` tokens for the first k + 1 scales (progressive training). Labels are replaced by
        the null class with probability `cond_drop_rate` (for guidance; the reference trains with 0.1), drawn
        from `generator` on its own device (the trainer's lives on the CPU, so any device draws the same labels).
        `path_keep` (depth, 2, B): drop-path keep masks drawn by the caller (None: the global RNG draws them).
        """
        B, L = labels_B.shape[0], x_BLCv_wo_first_l.shape[1] + 1
        if L > self.config.num_tokens:
            limit = self.config.num_tokens - 1
            raise NextscaleError(f"the input holds {L - 1} tokens; the model takes {limit} at most")
        with torch.autocast(device_type=labels_B.device.type, enabled=False):
            cond_BD = self.condition(labels_B, cond_drop_rate, generator)
            sos = cond_BD.unsqueeze(1) + self.pos_start.expand(B, 1, -1)
            x_BLC = torch.cat((sos, self.word_embed(x_BLCv_wo_first_l.float())), dim=1)
            x_BLC = x_BLC + self.level_position()[:, :L]
        return self.teacher_forced_logits(x_BLC, cond_BD, self.attn_bias_for_masking[:, :, :L, :L], path_keep)
