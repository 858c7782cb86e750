"""The VAR transformer: predicts every token of scale k+1 at once from the class and scales ≤ k."""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field

import torch
from torch import nn

from ..pretrained import PretrainedMixin
from ..tokenizer.vqvae import PATCH_NUMS_256
from .layers import AdaLNBeforeHead, AdaLNSelfAttn, KVCache, SharedAdaLin


@dataclass
class VARConfig:
    """Defaults are var-d16; `VARConfig.from_depth` gives the released depth → width rule."""

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
    cond_drop_rate: float = 0.1  # label dropout during training, for classifier-free guidance
    drop_rate: float = 0.0
    attn_drop_rate: float = 0.0
    drop_path_rate: float = 0.0
    init_adaln: float = 0.5
    init_adaln_gamma: float = 1e-5
    init_head: float = 0.02
    init_std: float = -1.0  # < 0: sqrt(1 / (3 C))

    def __post_init__(self):
        self.patch_nums = tuple(self.patch_nums)
        if self.embed_dim % self.num_heads:
            raise ValueError(f"embed_dim {self.embed_dim} is not divisible by num_heads {self.num_heads}")

    @classmethod
    def from_depth(cls, depth: int, **overrides) -> VARConfig:
        # Released models: width 64·depth, head width 64, stochastic depth growing with depth.
        base = dict(depth=depth, embed_dim=64 * depth, num_heads=depth, drop_path_rate=0.1 * depth / 24)
        return cls(**{**base, **overrides})

    @property
    def num_tokens(self) -> int:
        return sum(pn * pn for pn in self.patch_nums)

    def to_dict(self) -> dict:
        return asdict(self)


class VAR(PretrainedMixin, nn.Module):
    model_type = "var"
    config_class = VARConfig

    def __init__(self, config: VARConfig | None = None):
        super().__init__()
        self.config = cfg = config or VARConfig()
        C, L = cfg.embed_dim, cfg.num_tokens
        self.num_classes, self.patch_nums = cfg.num_classes, cfg.patch_nums
        self.begin_ends = []
        start = 0
        for pn in cfg.patch_nums:
            self.begin_ends.append((start, start + pn * pn))
            start += pn * pn

        std = math.sqrt(1 / C / 3)
        self.word_embed = nn.Linear(cfg.latent_channels, C)
        self.class_emb = nn.Embedding(cfg.num_classes + 1, C)
        self.pos_start = nn.Parameter(torch.empty(1, 1, C))
        self.pos_1LC = nn.Parameter(torch.empty(1, L, C))
        self.lvl_embed = nn.Embedding(len(cfg.patch_nums), C)
        for p in (self.class_emb.weight, self.pos_start, self.pos_1LC, self.lvl_embed.weight):
            nn.init.trunc_normal_(p, mean=0, std=std)

        self.shared_ada_lin = (
            nn.Sequential(nn.SiLU(inplace=False), SharedAdaLin(C, 6 * C)) if cfg.shared_aln else nn.Identity()
        )
        drop_path = torch.linspace(0, cfg.drop_path_rate, cfg.depth, device="cpu").tolist()
        self.blocks = nn.ModuleList(
            AdaLNSelfAttn(
                embed_dim=C,
                cond_dim=C,
                num_heads=cfg.num_heads,
                mlp_ratio=cfg.mlp_ratio,
                norm_eps=cfg.norm_eps,
                shared_aln=cfg.shared_aln,
                attn_l2_norm=cfg.attn_l2_norm,
                drop=cfg.drop_rate,
                attn_drop=cfg.attn_drop_rate,
                drop_path=drop_path[i],
            )
            for i in range(cfg.depth)
        )

        level = torch.cat([torch.full((pn * pn,), si) for si, pn in enumerate(cfg.patch_nums)]).view(1, L)
        self.register_buffer("lvl_1L", level.contiguous())
        # Block-causal: a token sees its own scale and all coarser ones. Persistent: released files carry it.
        visible = level.view(L, 1) >= level.view(1, L)
        mask = torch.zeros(L, L).masked_fill_(~visible, -torch.inf).view(1, 1, L, L)
        self.register_buffer("attn_bias_for_masking", mask.contiguous())

        self.head_nm = AdaLNBeforeHead(C, C, cfg.norm_eps)
        self.head = nn.Linear(C, cfg.vocab_size)
        self.init_weights()

    @torch.no_grad()
    def init_weights(self) -> None:
        cfg = self.config
        C, std = cfg.embed_dim, cfg.init_std if cfg.init_std >= 0 else math.sqrt(1 / cfg.embed_dim / 3)
        for m in self.modules():
            if isinstance(m, nn.Linear):
                nn.init.trunc_normal_(m.weight, std=std)
                if m.bias is not None:
                    m.bias.zero_()
            elif isinstance(m, nn.Embedding):
                nn.init.trunc_normal_(m.weight, std=std)
        self.head.weight.mul_(cfg.init_head)
        self.head.bias.zero_()
        self.head_nm.ada_lin[-1].weight.mul_(cfg.init_adaln)
        self.head_nm.ada_lin[-1].bias.zero_()
        depth_scale = math.sqrt(2 * cfg.depth)
        for block in self.blocks:
            block.attn.proj.weight.div_(depth_scale)
            block.ffn.fc2.weight.div_(depth_scale)
            if cfg.shared_aln:
                block.ada_gss[:, :, 2:].mul_(cfg.init_adaln)
                block.ada_gss[:, :, :2].mul_(cfg.init_adaln_gamma)
            else:
                lin = block.ada_lin[-1]
                lin.weight[2 * C :].mul_(cfg.init_adaln)  # scales and shifts
                lin.weight[: 2 * C].mul_(cfg.init_adaln_gamma)  # the residual gates start near zero
                lin.bias.zero_()

    # ---- pieces the sampler and the training forward share ----------------------------------------------

    def level_position(self) -> torch.Tensor:
        """Level plus position embedding of every token, (1, L, C)."""
        return self.lvl_embed(self.lvl_1L) + self.pos_1LC

    def modulations(self, cond_BD: torch.Tensor) -> list:
        """Every AdaLN scale/shift/gate the condition implies: one entry per block, then the head's."""
        block_cond = self.shared_ada_lin(cond_BD)
        return [block.modulation(block_cond) for block in self.blocks] + [self.head_nm.modulation(cond_BD)]

    def run_blocks(self, x_BLC, cond_BD, attn_bias=None, kv_caches: list[KVCache] | None = None, modulations=None):
        """`modulations` (from `self.modulations(cond_BD)`) spares recomputing them at every scale."""
        modulations = modulations or self.modulations(cond_BD)
        for i, block in enumerate(self.blocks):
            x_BLC = block(x_BLC, None, attn_bias, None if kv_caches is None else kv_caches[i], modulations[i])
        return x_BLC

    def get_logits(self, h_BLC: torch.Tensor, cond_BD: torch.Tensor, modulations=None) -> torch.Tensor:
        head_modulation = modulations[-1] if modulations else None
        return self.head(self.head_nm(h_BLC.float(), cond_BD, head_modulation).float()).float()

    def new_kv_caches(self, batch: int, *, device=None, dtype=None) -> list[KVCache]:
        p = self.head.weight
        head_dim = self.config.embed_dim // self.config.num_heads
        return [
            KVCache(
                batch,
                self.config.num_heads,
                self.config.num_tokens,
                head_dim,
                device=device or p.device,
                dtype=dtype or p.dtype,
            )
            for _ in self.blocks
        ]

    # ---- training ----------------------------------------------------------------------------------------

    def forward(
        self,
        labels_B: torch.Tensor,
        x_BLCv_wo_first_l: torch.Tensor,
        *,
        generator: torch.Generator | None = None,
    ) -> torch.Tensor:
        """Teacher-forcing logits (B, L, V) for all scales at once.

        `x_BLCv_wo_first_l` is the tokenizer's `idx_to_var_input` (B, L − 1, Cvae). In training mode, labels are
        replaced by the null class with probability `cond_drop_rate` (drawn from `generator`).
        """
        B, L = labels_B.shape[0], self.config.num_tokens
        with torch.autocast(device_type=labels_B.device.type, enabled=False):
            if self.training and self.config.cond_drop_rate > 0:
                drop = torch.rand(B, generator=generator, device=labels_B.device) < self.config.cond_drop_rate
                labels_B = torch.where(drop, self.num_classes, labels_B)
            cond_BD = self.class_emb(labels_B)
            sos = cond_BD.unsqueeze(1) + self.pos_start.expand(B, 1, -1)
            x_BLC = torch.cat((sos, self.word_embed(x_BLCv_wo_first_l.float())), dim=1)
            x_BLC = x_BLC + self.level_position()[:, :L]
        h = self.run_blocks(x_BLC, cond_BD, self.attn_bias_for_masking[:, :, :L, :L])
        return self.get_logits(h, cond_BD)
