"""Encoder and decoder of the multi-scale VQ-VAE (reference layout: LDM vq-f16 with a fused-qkv attention)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .layers import AttnBlock, Downsample2x, Level, MidStack, ResnetBlock, Upsample2x, group_norm


class Encoder(nn.Module):
    def __init__(
        self,
        *,
        ch: int,
        ch_mult: tuple[int, ...],
        num_res_blocks: int,
        z_channels: int,
        in_channels: int = 3,
        using_sa: bool = True,
        using_mid_sa: bool = True,
        norm_groups: int = 32,
    ):
        super().__init__()
        self.conv_in = nn.Conv2d(in_channels, ch, 3, padding=1)
        in_mult = (1, *ch_mult)
        last = len(ch_mult) - 1
        levels = []
        for i, mult in enumerate(ch_mult):
            c_in, c_out = ch * in_mult[i], ch * mult
            blocks = [ResnetBlock(c_in if b == 0 else c_out, c_out, norm_groups) for b in range(num_res_blocks)]
            attns = [AttnBlock(c_out, norm_groups) for _ in range(num_res_blocks)] if i == last and using_sa else []
            levels.append(Level(blocks, attns, Downsample2x(c_out) if i != last else None, "downsample"))
        self.down = nn.ModuleList(levels)
        width = ch * ch_mult[-1]
        self.mid = MidStack(width, norm_groups, using_mid_sa)
        self.norm_out = group_norm(width, norm_groups)
        self.conv_out = nn.Conv2d(width, z_channels, 3, padding=1)

    def forward(self, img: torch.Tensor) -> torch.Tensor:
        h = self.conv_in(img)
        for level in self.down:
            h = level(h)
        return self.conv_out(F.silu(self.norm_out(self.mid(h)), inplace=True))


class Decoder(nn.Module):
    def __init__(
        self,
        *,
        ch: int,
        ch_mult: tuple[int, ...],
        num_res_blocks: int,
        z_channels: int,
        out_channels: int = 3,
        using_sa: bool = True,
        using_mid_sa: bool = True,
        norm_groups: int = 32,
    ):
        super().__init__()
        last = len(ch_mult) - 1
        width = ch * ch_mult[-1]
        self.conv_in = nn.Conv2d(z_channels, width, 3, padding=1)
        self.mid = MidStack(width, norm_groups, using_mid_sa)
        levels: list[Level] = []
        c_in = width
        for i in reversed(range(len(ch_mult))):
            c_out = ch * ch_mult[i]
            n = num_res_blocks + 1
            blocks = [ResnetBlock(c_in if b == 0 else c_out, c_out, norm_groups) for b in range(n)]
            attns = [AttnBlock(c_out, norm_groups) for _ in range(n)] if i == last and using_sa else []
            levels.insert(0, Level(blocks, attns, Upsample2x(c_out) if i != 0 else None, "upsample"))
            c_in = c_out
        self.up = nn.ModuleList(levels)  # indexed by level, as in the released keys; run from the last one down
        self.norm_out = group_norm(c_in, norm_groups)
        self.conv_out = nn.Conv2d(c_in, out_channels, 3, padding=1)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        h = self.mid(self.conv_in(z))
        for level in reversed(self.up):
            h = level(h)
        return self.conv_out(F.silu(self.norm_out(h), inplace=True))
