"""What every nextscale transformer shares, whatever order it predicts tokens in: the class-conditioned AdaLN
blocks, the head, their initialisation, and the pieces a KV-cached sampler calls. VAR (next scale) and the
raster-order baseline (next token) are built from these, so that "the same size" means the same blocks."""

from __future__ import annotations

import math

import torch
from torch import nn
from torch.utils.checkpoint import checkpoint

from ..seeding import uniform
from .layers import AdaLNBeforeHead, AdaLNSelfAttn, KVCache, SharedAdaLin


def depth_rule(depth: int, width_per_depth: int = 64, head_dim: int | None = None) -> dict:
    """The released models' shape for a depth: width 64·depth and heads = depth; a sweep may take another width
    per depth, or a fixed number of channels per head (`head_dim`) instead."""
    width = width_per_depth * depth
    return dict(depth=depth, embed_dim=width, num_heads=depth if head_dim is None else width // head_dim)


class BlockStack:
    """A mixin for an `nn.Module` whose config has depth, embed_dim, num_heads, mlp_ratio, vocab_size, norm_eps,
    shared_aln, attn_l2_norm and num_tokens. `build_stack` (on the meta device) makes `shared_ada_lin`, `blocks`,
    `head_nm` and `head`; the model embeds its own inputs and positions."""

    def build_stack(self) -> None:
        cfg = self.config
        C = cfg.embed_dim
        self.shared_ada_lin = (
            nn.Sequential(nn.SiLU(inplace=False), SharedAdaLin(C, 6 * C)) if cfg.shared_aln else nn.Identity()
        )
        self.blocks = nn.ModuleList(
            AdaLNSelfAttn(
                embed_dim=C,
                cond_dim=C,
                num_heads=cfg.num_heads,
                mlp_ratio=cfg.mlp_ratio,
                norm_eps=cfg.norm_eps,
                shared_aln=cfg.shared_aln,
                attn_l2_norm=cfg.attn_l2_norm,
            )
            for _ in range(cfg.depth)
        )

    def build_head(self) -> None:
        C = self.config.embed_dim
        self.head_nm = AdaLNBeforeHead(C, C, self.config.norm_eps)
        self.head = nn.Linear(C, self.config.vocab_size)

    @torch.no_grad()
    def init_linears_and_embeddings(self, std: float) -> None:
        for m in self.modules():
            if isinstance(m, nn.Linear):
                nn.init.trunc_normal_(m.weight, std=std)
                if m.bias is not None:
                    m.bias.zero_()
            elif isinstance(m, nn.Embedding):
                nn.init.trunc_normal_(m.weight, std=std)

    @torch.no_grad()
    def init_stack(self, init_adaln: float, init_adaln_gamma: float, init_head: float) -> None:
        """The reference's scaling of the head, the AdaLN projections and the residual branches (after
        `init_linears_and_embeddings`; in shared mode the blocks' AdaLN offsets are drawn here)."""
        cfg = self.config
        C = cfg.embed_dim
        self.head.weight.mul_(init_head)
        self.head_nm.ada_lin[-1].weight.mul_(init_adaln)
        depth_scale = math.sqrt(2 * cfg.depth)
        for block in self.blocks:
            block.attn.init_constants()
            block.attn.proj.weight.div_(depth_scale)
            block.ffn.fc2.weight.div_(depth_scale)
            if cfg.shared_aln:
                block.ada_gss.normal_().div_(C**0.5)
                block.ada_gss[:, :, 2:].mul_(init_adaln)
                block.ada_gss[:, :, :2].mul_(init_adaln_gamma)
            else:
                lin = block.ada_lin[-1]
                lin.weight[2 * C :].mul_(init_adaln)  # scales and shifts
                lin.weight[: 2 * C].mul_(init_adaln_gamma)  # the residual gates start near zero

    def fsdp_units(self) -> list[nn.Module]:
        """What FSDP2 shards one by one (then the root): the blocks."""
        return list(self.blocks)

    def set_drop_path(self, rate: float) -> None:
        """Stochastic depth for training: block i drops its branches with probability rate·i/(depth − 1)."""
        for block, p in zip(self.blocks, torch.linspace(0, rate, len(self.blocks), device="cpu").tolist()):
            block.drop_path.drop_prob = p

    def condition(self, labels_B: torch.Tensor, cond_drop_rate: float, generator) -> torch.Tensor:
        """The class embedding (B, C), each label dropped to the null class with probability `cond_drop_rate`
        (for guidance), drawn from `generator` on its own device."""
        if cond_drop_rate > 0:
            drop = uniform((labels_B.shape[0],), generator, labels_B.device) < cond_drop_rate
            labels_B = torch.where(drop, self.num_classes, labels_B)
        return self.class_emb(labels_B)

    def teacher_forced_logits(self, x_BLC, cond_BD, attn_bias, path_keep=None) -> torch.Tensor:
        """The training forward through the blocks and the head (`path_keep` (depth, 2, B): drop-path keep masks
        drawn by the caller). Each block computes its own modulation inside its forward: under FSDP a block's
        weights exist only then."""
        block_cond = self.shared_ada_lin(cond_BD)
        for i, block in enumerate(self.blocks):
            keep = None if path_keep is None else path_keep[i]
            if self.grad_checkpointing and self.training:
                x_BLC = checkpoint(block, x_BLC, block_cond, attn_bias, None, None, keep, use_reentrant=False)
            else:
                x_BLC = block(x_BLC, block_cond, attn_bias, None, None, keep)
        return self.get_logits(x_BLC, cond_BD)

    def modulations(self, cond_BD: torch.Tensor) -> list:
        """Every AdaLN scale/shift/gate the condition implies: one entry per block, then the head's."""
        block_cond = self.shared_ada_lin(cond_BD)
        return [block.modulation(block_cond) for block in self.blocks] + [self.head_nm.modulation(cond_BD)]

    def run_blocks(self, x_BLC, cond_BD, attn_bias=None, kv_caches: list[KVCache] | None = None, modulations=None):
        """`modulations` (from `self.modulations(cond_BD)`) spares recomputing them at every step."""
        modulations = modulations or self.modulations(cond_BD)
        for i, block in enumerate(self.blocks):
            x_BLC = block(x_BLC, None, attn_bias, None if kv_caches is None else kv_caches[i], modulations[i])
        return x_BLC

    def get_logits(self, h_BLC: torch.Tensor, cond_BD: torch.Tensor, modulations=None) -> torch.Tensor:
        head_modulation = modulations[-1] if modulations else None
        return self.head(self.head_nm(h_BLC.float(), cond_BD, head_modulation).float()).float()

    def new_kv_caches(self, batch: int, *, device=None, dtype=None) -> list[KVCache]:
        p = self.head.weight
        cfg = self.config
        return [
            KVCache(
                batch,
                cfg.num_heads,
                cfg.num_tokens,
                cfg.embed_dim // cfg.num_heads,
                device=device or p.device,
                dtype=dtype or p.dtype,
            )
            for _ in self.blocks
        ]
