"""Multi-scale residual vector quantizer (reference `VectorQuantizer2`, with its key names).

One codebook serves every scale. Scale k quantizes an area-downsampled view of what the coarser scales left
unexplained; its code embeddings are upsampled bicubically to the full latent size and refined by a
convolution Φ before being added to the running reconstruction f̂.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ..errors import NextscaleError
from ..pretrained import shapes_only_embedding


class Phi(nn.Conv2d):
    """`h·(1−r) + conv(h)·r`: a residual 3×3 convolution applied to each scale's upsampled embeddings."""

    def __init__(self, channels: int, resi_ratio: float):
        super().__init__(channels, channels, 3, padding=1)
        self.resi_ratio = abs(resi_ratio)

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        return h.mul(1 - self.resi_ratio) + super().forward(h).mul_(self.resi_ratio)


def phi_ticks(count: int) -> np.ndarray:
    # The reference spreads 4 shared Φ's with 1/3 margins and any other count with 1/2 margins.
    margin = 1 / 3 / count if count == 4 else 1 / 2 / count
    return np.linspace(margin, 1 - margin, count)


def nearest_tick(ticks: np.ndarray, position: float) -> int:
    # float64 numpy on purpose: position 2/9 is equidistant from two ticks, and the reference's tie-break
    # (first minimum of numpy's rounding) decides it.
    return int(np.argmin(np.abs(ticks - position)))


def make_phi(channels: int, resi_ratio: float) -> nn.Module:
    return Phi(channels, resi_ratio) if abs(resi_ratio) > 1e-6 else nn.Identity()


class PhiShared(nn.Module):
    def __init__(self, phi: nn.Module):
        super().__init__()
        self.qresi = phi

    def at(self, position: float) -> nn.Module:
        return self.qresi


class PhiPartiallyShared(nn.Module):
    def __init__(self, phis: list[nn.Module]):
        super().__init__()
        self.qresi_ls = nn.ModuleList(phis)
        self.ticks = phi_ticks(len(phis))

    def at(self, position: float) -> nn.Module:
        return self.qresi_ls[nearest_tick(self.ticks, position)]


class PhiNonShared(nn.ModuleList):
    def __init__(self, phis: list[nn.Module]):
        super().__init__(phis)
        self.ticks = phi_ticks(len(phis))

    def at(self, position: float) -> nn.Module:
        return self[nearest_tick(self.ticks, position)]


@dataclass
class QuantizerOutput:
    f_hat: torch.Tensor  # straight-through reconstruction of the latent, (B, C, H, W)
    vq_loss: torch.Tensor  # scalar: codebook + beta * commitment, averaged over scales
    hits: list[torch.Tensor]  # per scale: how often each code was chosen in this batch, (V,)


class MultiScaleQuantizer(nn.Module):
    def __init__(
        self,
        *,
        vocab_size: int,
        channels: int,
        patch_nums: Sequence[int],
        using_znorm: bool = False,
        quant_resi: float = 0.5,
        share_quant_resi: int = 4,
        default_qresi_counts: int = 0,
    ):
        super().__init__()
        self.vocab_size, self.channels = vocab_size, channels
        self.patch_nums = tuple(patch_nums)
        self.using_znorm = using_znorm
        if share_quant_resi == 0:
            count = default_qresi_counts or len(self.patch_nums)
            self.quant_resi = PhiNonShared([make_phi(channels, quant_resi) for _ in range(count)])
        elif share_quant_resi == 1:
            self.quant_resi = PhiShared(make_phi(channels, quant_resi))
        else:
            self.quant_resi = PhiPartiallyShared([make_phi(channels, quant_resi) for _ in range(share_quant_resi)])
        # Usage statistics only; saved in released checkpoints, so it stays a persistent buffer.
        self.register_buffer("ema_vocab_hit_SV", torch.zeros(len(self.patch_nums), vocab_size))
        self.record_hit = 0
        self.embedding = shapes_only_embedding(vocab_size, channels)

    @property
    def num_scales(self) -> int:
        return len(self.patch_nums)

    def phi(self, si: int, num_scales: int | None = None) -> nn.Module:
        num_scales = num_scales or self.num_scales
        # A single-scale tokenizer (the raster baseline's) is its own finest scale.
        return self.quant_resi.at(si / (num_scales - 1) if num_scales > 1 else 1.0)

    def nearest_codes(self, z_NC: torch.Tensor) -> torch.Tensor:
        codebook = self.embedding.weight.detach()
        if self.using_znorm:
            return (F.normalize(z_NC, dim=-1) @ F.normalize(codebook.T, dim=0)).argmax(dim=1)
        # ||z||² + ||e||² − 2 z·e in this exact form: near-ties must resolve as in the reference.
        dist = z_NC.square().sum(dim=1, keepdim=True) + codebook.square().sum(dim=1)
        dist.addmm_(z_NC, codebook.T, alpha=-2, beta=1)
        return dist.argmin(dim=1)

    def _scale_contribution(self, idx_Bhw, si: int, size: tuple[int, int], num_scales: int, contiguous: bool):
        h = self.embedding(idx_Bhw).permute(0, 3, 1, 2)  # a channels-last view, as in the reference
        if si != num_scales - 1:
            h = F.interpolate(h, size=size, mode="bicubic")
        # The reference makes the map contiguous only while encoding; the conv's memory format changes its bits.
        return self.phi(si, num_scales)(h.contiguous() if contiguous else h)

    def _residual_quantize(self, f: torch.Tensor, patch_nums: Sequence[int]):
        """Yields (si, idx (B, pn²), contribution h at full size) for each scale of the pyramid."""
        B, C, H, W = f.shape
        if patch_nums[-1] != H or patch_nums[-1] != W:
            raise NextscaleError(f"the last patch number {patch_nums[-1]} must equal the latent size {H}x{W}")
        f_rest = f.detach().clone()
        for si, pn in enumerate(patch_nums):
            z = f_rest if si == len(patch_nums) - 1 else F.interpolate(f_rest, size=(pn, pn), mode="area")
            idx = self.nearest_codes(z.permute(0, 2, 3, 1).reshape(-1, C))
            h = self._scale_contribution(idx.view(B, pn, pn), si, (H, W), len(patch_nums), contiguous=True)
            f_rest = f_rest - h.detach()
            yield si, idx.view(B, pn * pn), h

    @torch.no_grad()
    def f_to_idx(self, f: torch.Tensor, patch_nums: Sequence[int] | None = None) -> list[torch.Tensor]:
        return [idx for _, idx, _ in self._residual_quantize(f.float(), patch_nums or self.patch_nums)]

    @torch.no_grad()
    def f_to_fhats(self, f: torch.Tensor, patch_nums: Sequence[int] | None = None) -> list[torch.Tensor]:
        f_hat, out = torch.zeros_like(f, dtype=torch.float32), []
        for _, _, h in self._residual_quantize(f.float(), patch_nums or self.patch_nums):
            f_hat.add_(h)
            out.append(f_hat.clone())
        return out

    def forward(self, f: torch.Tensor, beta: float = 0.25) -> QuantizerOutput:
        """Training-mode quantization, in fp32 whatever the autocast state; `beta` weighs the commitment loss."""
        with torch.autocast(device_type=f.device.type, enabled=False):
            f = f.float()
            f_no_grad = f.detach()
            f_hat = torch.zeros_like(f_no_grad)
            vq_loss = f.new_zeros(())
            hits = []
            for _, idx, h in self._residual_quantize(f, self.patch_nums):
                f_hat = f_hat + h
                hits.append(idx.flatten().bincount(minlength=self.vocab_size).float())
                vq_loss = vq_loss + F.mse_loss(f_hat.detach(), f).mul_(beta) + F.mse_loss(f_hat, f_no_grad)
            vq_loss = vq_loss * (1.0 / self.num_scales)
            if self.training:
                self._record_hits(hits)
            f_hat = (f_hat.detach() - f_no_grad).add_(f)  # straight-through
        return QuantizerOutput(f_hat=f_hat, vq_loss=vq_loss, hits=hits)

    @torch.no_grad()
    def _record_hits(self, hits: list[torch.Tensor]) -> None:
        if torch.distributed.is_available() and torch.distributed.is_initialized():
            for hit in hits:
                torch.distributed.all_reduce(hit)
        momentum = 0.0 if self.record_hit == 0 else (0.9 if self.record_hit < 100 else 0.99)
        for si, hit in enumerate(hits):
            self.ema_vocab_hit_SV[si].mul_(momentum).add_(hit.mul(1 - momentum))
        self.record_hit += 1

    def usage(self, tokens_per_scale: Sequence[int]) -> list[float]:
        """Share of the codebook (in %) each scale uses, from the EMA hit counts.

        A code counts as used when its EMA hit count reaches 8% of what a uniform spread would give it.
        """
        out = []
        for si, n_tokens in enumerate(tokens_per_scale):
            margin = n_tokens / self.vocab_size * 0.08
            out.append((self.ema_vocab_hit_SV[si] >= margin).float().mean().item() * 100)
        return out

    # ---- from token ids -------------------------------------------------------------------------------------

    def idx_to_fhats(self, idx_Bl: Sequence[torch.Tensor], last_only: bool = False) -> list[torch.Tensor]:
        """Cumulative f̂ after each scale (or only the last), at the last scale's size."""
        B, pn_last = idx_Bl[0].shape[0], self.patch_nums[-1]
        f_hat = self.embedding.weight.new_zeros(B, self.channels, pn_last, pn_last)
        out = []
        for si, idx in enumerate(idx_Bl):
            pn = round(idx.shape[1] ** 0.5)
            size = (pn_last, pn_last)
            f_hat.add_(self._scale_contribution(idx.view(B, pn, pn), si, size, len(idx_Bl), contiguous=False))
            if not last_only or si == len(idx_Bl) - 1:
                out.append(f_hat.clone())
        return out

    def idx_to_var_input(self, idx_Bl: Sequence[torch.Tensor]) -> torch.Tensor:
        """Teacher-forcing input: for scales 2..K, the area-downsampled cumulative f̂ of the coarser scales.

        Returns (B, L − first_l, C) float32.
        """
        B, pn_last = idx_Bl[0].shape[0], self.patch_nums[-1]
        f_hat = self.embedding.weight.new_zeros(B, self.channels, pn_last, pn_last)
        num_scales = len(self.patch_nums)
        inputs = []
        for si in range(num_scales - 1):
            pn = self.patch_nums[si]
            size = (pn_last, pn_last)
            f_hat.add_(self._scale_contribution(idx_Bl[si].view(B, pn, pn), si, size, num_scales, contiguous=False))
            pn_next = self.patch_nums[si + 1]
            nxt = F.interpolate(f_hat, size=(pn_next, pn_next), mode="area")
            inputs.append(nxt.view(B, self.channels, -1).transpose(1, 2))
        return torch.cat(inputs, dim=1) if inputs else f_hat.new_zeros(B, 0, self.channels)

    def next_autoregressive_input(self, si: int, f_hat: torch.Tensor, h_BChw: torch.Tensor):
        """Adds scale si's embeddings to f̂ in place; returns (f̂, the next scale's input map)."""
        num_scales, pn_last = self.num_scales, self.patch_nums[-1]
        if si != num_scales - 1:
            f_hat.add_(self.phi(si)(F.interpolate(h_BChw, size=(pn_last, pn_last), mode="bicubic")))
            pn_next = self.patch_nums[si + 1]
            return f_hat, F.interpolate(f_hat, size=(pn_next, pn_next), mode="area")
        f_hat.add_(self.phi(si)(h_BChw))
        return f_hat, f_hat
