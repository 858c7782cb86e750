"""Blocks of the VAR transformer (reference `basic_var.py` semantics and key names).

Shapes: B batch, L tokens, C width, D condition width, H heads, c head width (always C / H).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn


class DropPath(nn.Module):
    """Stochastic depth per sample, rescaled by the keep probability (timm semantics)."""

    def __init__(self, drop_prob: float):
        super().__init__()
        self.drop_prob = drop_prob

    def forward(self, x: torch.Tensor, keep_B: torch.Tensor | None = None) -> torch.Tensor:
        """`keep_B`: which samples keep the branch, drawn by the caller (the trainer draws them for the whole
        global batch, so any number of processes drops the same samples); None draws from the global RNG."""
        if self.drop_prob == 0.0 or not self.training:
            return x
        keep = 1 - self.drop_prob
        shape = (x.shape[0],) + (1,) * (x.ndim - 1)
        mask = x.new_empty(shape).bernoulli_(keep) if keep_B is None else keep_B.to(x.dtype).view(shape)
        return x * mask.div(keep)

    def extra_repr(self) -> str:
        return f"drop_prob={self.drop_prob:.4f}"


class KVCache:
    """Keys and values of one attention layer, allocated once for the whole pyramid and filled scale by scale."""

    def __init__(self, batch: int, heads: int, max_len: int, head_dim: int, *, device, dtype):
        self.k = torch.empty(batch, heads, max_len, head_dim, device=device, dtype=dtype)
        self.v = torch.empty_like(self.k)
        self.length = 0

    def append(self, k_BHlc: torch.Tensor, v_BHlc: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        end = self.length + k_BHlc.shape[2]
        self.k[:, :, self.length : end] = k_BHlc
        self.v[:, :, self.length : end] = v_BHlc
        self.length = end
        return self.k[:, :, :end], self.v[:, :, :end]


class SelfAttention(nn.Module):
    def __init__(self, embed_dim: int, num_heads: int, attn_l2_norm: bool):
        super().__init__()
        assert embed_dim % num_heads == 0
        self.num_heads, self.head_dim = num_heads, embed_dim // num_heads
        self.attn_l2_norm = attn_l2_norm
        if attn_l2_norm:
            # Cosine attention with a learnable per-head log-temperature, capped at 100.
            self.scale = 1.0
            self.scale_mul_1H11 = nn.Parameter(torch.empty(1, num_heads, 1, 1))
            self.max_scale_mul = math.log(100)
        else:
            self.scale = 0.25 / math.sqrt(self.head_dim)  # the reference's unusual 0.25 factor
        self.mat_qkv = nn.Linear(embed_dim, 3 * embed_dim, bias=False)
        self.q_bias = nn.Parameter(torch.empty(embed_dim))
        self.v_bias = nn.Parameter(torch.empty(embed_dim))
        self.register_buffer("zero_k_bias", torch.empty(embed_dim))  # keys carry no bias; kept for strict loading
        self.proj = nn.Linear(embed_dim, embed_dim)

    @torch.no_grad()
    def init_constants(self) -> None:
        """The parameters the reference sets at construction and its `init_weights` leaves alone."""
        if self.attn_l2_norm:
            self.scale_mul_1H11.fill_(math.log(4.0))
        self.q_bias.zero_()
        self.v_bias.zero_()
        self.zero_k_bias.zero_()

    def forward(self, x_BLC: torch.Tensor, attn_bias: torch.Tensor | None, kv_cache: KVCache | None = None):
        B, L, C = x_BLC.shape
        bias = torch.cat((self.q_bias, self.zero_k_bias, self.v_bias))
        if type(self.mat_qkv) is nn.Linear:  # the bias in the matmul, as the reference adds it (the same bits)
            qkv = F.linear(x_BLC, self.mat_qkv.weight, bias)
        else:  # adapted (LoRA): called as a module, so that the adapter applies
            qkv = self.mat_qkv(x_BLC) + bias
        qkv = qkv.view(B, L, 3, self.num_heads, self.head_dim)
        q, k, v = qkv.permute(2, 0, 3, 1, 4).unbind(0)  # each (B, H, L, c)
        if self.attn_l2_norm:
            q = F.normalize(q, dim=-1).mul(self.scale_mul_1H11.clamp_max(self.max_scale_mul).exp())
            k = F.normalize(k, dim=-1)
        if kv_cache is not None:
            k, v = kv_cache.append(k, v)
        if attn_bias is not None:
            attn_bias = attn_bias.to(q.dtype)
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=attn_bias, scale=self.scale)
        return self.proj(out.transpose(1, 2).reshape(B, L, C))


class FFN(nn.Module):
    def __init__(self, embed_dim: int, hidden_dim: int):
        super().__init__()
        self.fc1 = nn.Linear(embed_dim, hidden_dim)
        self.act = nn.GELU(approximate="tanh")
        self.fc2 = nn.Linear(hidden_dim, embed_dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(self.act(self.fc1(x)))


class SharedAdaLin(nn.Linear):
    """The one AdaLN projection that all blocks share (d36): returns (B, 1, 6, C)."""

    def forward(self, cond_BD: torch.Tensor) -> torch.Tensor:
        return super().forward(cond_BD).view(-1, 1, 6, self.weight.shape[0] // 6)


class AdaLNSelfAttn(nn.Module):
    """Pre-norm block whose LayerNorm scale/shift and residual gates come from the class condition."""

    def __init__(
        self,
        *,
        embed_dim: int,
        cond_dim: int,
        num_heads: int,
        mlp_ratio: float,
        norm_eps: float,
        shared_aln: bool,
        attn_l2_norm: bool,
    ):
        super().__init__()
        self.embed_dim, self.shared_aln = embed_dim, shared_aln
        self.drop_path = DropPath(0.0)  # a training setting: `VAR.set_drop_path`
        self.attn = SelfAttention(embed_dim, num_heads, attn_l2_norm)
        self.ffn = FFN(embed_dim, round(embed_dim * mlp_ratio))
        self.ln_wo_grad = nn.LayerNorm(embed_dim, eps=norm_eps, elementwise_affine=False)
        if shared_aln:
            self.ada_gss = nn.Parameter(torch.empty(1, 1, 6, embed_dim))
        else:
            self.ada_lin = nn.Sequential(nn.SiLU(inplace=False), nn.Linear(cond_dim, 6 * embed_dim))

    def modulation(self, cond_BD: torch.Tensor) -> tuple[torch.Tensor, ...]:
        """gamma1, gamma2, scale1, scale2, shift1, shift2, each (B, 1, C).

        `cond_BD` is the class condition, or in shared mode the shared projection (B, 1, 6, C). It depends on
        the class only, so the sampler computes it once for all scales.
        """
        if self.shared_aln:
            return (self.ada_gss + cond_BD).unbind(2)
        return self.ada_lin(cond_BD).view(-1, 1, 6, self.embed_dim).unbind(2)

    def forward(
        self,
        x_BLC,
        cond_BD,
        attn_bias,
        kv_cache: KVCache | None = None,
        modulation=None,
        path_keep_2B: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """`path_keep_2B`: the drop-path keep masks of the attention and FFN branches (training only)."""
        mods = modulation if modulation is not None else self.modulation(cond_BD)
        gamma1, gamma2, scale1, scale2, shift1, shift2 = mods  # gammas gate raw, not 1 + gamma
        keep_attn, keep_ffn = (None, None) if path_keep_2B is None else path_keep_2B.unbind(0)
        h = self.ln_wo_grad(x_BLC).mul(scale1.add(1)).add_(shift1)
        x_BLC = x_BLC + self.drop_path(self.attn(h, attn_bias, kv_cache).mul_(gamma1), keep_attn)
        h = self.ln_wo_grad(x_BLC).mul(scale2.add(1)).add_(shift2)
        return x_BLC + self.drop_path(self.ffn(h).mul(gamma2), keep_ffn)


class AdaLNBeforeHead(nn.Module):
    def __init__(self, embed_dim: int, cond_dim: int, norm_eps: float):
        super().__init__()
        self.embed_dim = embed_dim
        self.ln_wo_grad = nn.LayerNorm(embed_dim, eps=norm_eps, elementwise_affine=False)
        self.ada_lin = nn.Sequential(nn.SiLU(inplace=False), nn.Linear(cond_dim, 2 * embed_dim))

    def modulation(self, cond_BD: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self.ada_lin(cond_BD).view(-1, 1, 2, self.embed_dim).unbind(2)

    def forward(self, x_BLC: torch.Tensor, cond_BD: torch.Tensor, modulation=None) -> torch.Tensor:
        scale, shift = modulation if modulation is not None else self.modulation(cond_BD)
        return self.ln_wo_grad(x_BLC).mul(scale.add(1)).add_(shift)
