"""The raster-order baseline: a GPT that predicts one token map's tokens one at a time, row by row, from the
class. It is VAR's comparison in the paper (Table 3's first row), built from the same blocks (`BlockStack`)
and the same width rule, so that a depth means the same size for both."""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import torch
from torch import nn

from ..errors import NextscaleError
from ..pretrained import PretrainedMixin, check_config, shapes_only_embedding
from .stack import BlockStack, depth_rule


@dataclass
class RasterConfig:
    """The raster model's architecture: VARConfig's block fields, and one `grid` × `grid` token map in place of
    the pyramid (the finest scale of the VAR tokenizer it is compared with)."""

    depth: int = 16
    embed_dim: int = 1024
    num_heads: int = 16
    mlp_ratio: float = 4.0
    num_classes: int = 1000  # the class embedding has one more row: the null class for guidance
    vocab_size: int = 4096
    grid: int = 16
    norm_eps: float = 1e-6
    shared_aln: bool = False
    attn_l2_norm: bool = True

    def __post_init__(self):
        for name in ("depth", "embed_dim", "num_heads", "num_classes", "vocab_size", "grid"):
            check_config(getattr(self, name) >= 1, f"{name} must be at least 1, got {getattr(self, name)}")
        check_config(
            self.embed_dim % self.num_heads == 0,
            f"embed_dim {self.embed_dim} is not divisible by num_heads {self.num_heads}",
        )
        check_config(self.mlp_ratio > 0 and self.norm_eps > 0, "mlp_ratio and norm_eps must be positive")

    @classmethod
    def from_depth(cls, depth: int, width_per_depth: int = 64, head_dim: int | None = None, **overrides):
        """VAR's rule (`depth_rule`): width 64·depth, heads = depth, unless told otherwise."""
        return cls(**{**depth_rule(depth, width_per_depth, head_dim), **overrides})

    @property
    def num_tokens(self) -> int:
        return self.grid * self.grid

    def to_dict(self) -> dict:
        return asdict(self)


def causal_bias(length: int) -> torch.Tensor:
    """(1, 1, L, L): 0 where a token may see another (itself and every earlier one), −inf elsewhere."""
    visible = torch.ones(length, length, dtype=torch.bool).tril_()
    return torch.zeros(length, length).masked_fill_(~visible, -torch.inf).view(1, 1, length, length)


class RasterAR(BlockStack, PretrainedMixin, nn.Module):
    """Input: the class token (class embedding + start position), then the map's tokens but the last, each as a
    learned token embedding plus a learned position; output: logits of every token of the map, (B, N, V).
    The class also conditions every block through AdaLN, as in VAR."""

    model_type = "raster-ar"
    config_class = RasterConfig
    legacy_config_keys = ()

    def __init__(self, config: RasterConfig | None = None, *, device: str | torch.device | None = None):
        """`device="meta"` builds shapes only (for loading weights); elsewhere `init_weights()` runs."""
        super().__init__()
        self.config = cfg = config or RasterConfig()
        C, N = cfg.embed_dim, cfg.num_tokens
        self.num_classes = cfg.num_classes
        with torch.device("meta"):
            self.token_emb = shapes_only_embedding(cfg.vocab_size, C)
            self.class_emb = shapes_only_embedding(cfg.num_classes + 1, C)
            self.pos_start = nn.Parameter(torch.empty(1, 1, C))
            self.pos_1LC = nn.Parameter(torch.empty(1, N, C))
            self.build_stack()
            self.build_head()
        # Derived from the config alone, so not saved: the files hold weights only.
        self.register_buffer("attn_bias", causal_bias(N), persistent=False)
        self.grad_checkpointing = False
        device = torch.get_default_device() if device is None else torch.device(device)
        if device.type != "meta":
            self.to_empty(device=device)
            self.init_weights()

    def to_empty(self, *, device, recurse: bool = True):
        super().to_empty(device=device, recurse=recurse)
        self.attn_bias = causal_bias(self.config.num_tokens).to(device)  # to_empty left it unset
        return self

    @torch.no_grad()
    def init_weights(
        self, init_adaln: float = 0.5, init_adaln_gamma: float = 1e-5, init_head: float = 0.02, init_std: float = -1.0
    ) -> None:
        """VAR's initialisation (`VAR.init_weights`), with the token embedding in place of the word projection."""
        construction_std = math.sqrt(1 / self.config.embed_dim / 3)
        self.init_linears_and_embeddings(init_std if init_std >= 0 else construction_std)
        for p in (self.pos_start, self.pos_1LC):
            nn.init.trunc_normal_(p, mean=0, std=construction_std)
        self.init_stack(init_adaln, init_adaln_gamma, init_head)

    @property
    def patch_nums(self) -> tuple[int]:
        """The map as a one-scale pyramid: what the trainer's per-scale metrics and a tokenizer check read."""
        return (self.config.grid,)

    @property
    def begin_ends(self) -> list[tuple[int, int]]:
        return [(0, self.config.num_tokens)]

    # ---- pieces the sampler and the training forward share ----------------------------------------------

    def start_input(self, cond_BD: torch.Tensor) -> torch.Tensor:
        """The first position's input, (B, 1, C): the class token."""
        return cond_BD.unsqueeze(1) + self.pos_start.expand(cond_BD.shape[0], 1, -1)

    def token_input(self, tokens_Bl: torch.Tensor, start: int) -> torch.Tensor:
        """Inputs (B, l, C) of tokens `start … start + l − 1` of the map, which sit at positions start + 1 …"""
        end = start + tokens_Bl.shape[1]
        return self.token_emb(tokens_Bl) + self.pos_1LC[:, start + 1 : end + 1]

    # ---- training ----------------------------------------------------------------------------------------

    def forward(
        self,
        labels_B: torch.Tensor,
        tokens_wo_last: torch.Tensor,
        *,
        cond_drop_rate: float = 0.0,
        generator: torch.Generator | None = None,
        path_keep: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Teacher-forcing logits (B, l + 1, V) from the map's first l tokens (B, l), raster order, l < N.
        Labels are dropped to the null class with probability `cond_drop_rate`, drawn from `generator`;
        `path_keep` (depth, 2, B): drop-path keep masks, as `VAR.forward`."""
        L = tokens_wo_last.shape[1] + 1
        if tokens_wo_last.ndim != 2 or L > self.config.num_tokens:
            raise NextscaleError(
                f"the input must be (batch, up to {self.config.num_tokens - 1}) token ids, got "
                f"{tuple(tokens_wo_last.shape)}"
            )
        with torch.autocast(device_type=labels_B.device.type, enabled=False):
            cond_BD = self.condition(labels_B, cond_drop_rate, generator)
            x_BLC = torch.cat((self.start_input(cond_BD), self.token_input(tokens_wo_last, 0)), dim=1)
        return self.teacher_forced_logits(x_BLC, cond_BD, self.attn_bias[:, :, :L, :L], path_keep)
