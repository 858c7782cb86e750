"""The multi-scale VQ-VAE: encoder → quant_conv → multi-scale quantizer → post_quant_conv → decoder."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass, field

import torch
from torch import nn

from ..pretrained import PretrainedMixin
from .autoencoder import Decoder, Encoder
from .quantizer import MultiScaleQuantizer, QuantizerOutput

PATCH_NUMS_256 = (1, 2, 3, 4, 5, 6, 8, 10, 13, 16)
PATCH_NUMS_512 = (1, 2, 3, 4, 6, 9, 13, 18, 24, 32)


@dataclass
class VQVAEConfig:
    """Defaults are the released tokenizer `vae_ch160v4096z32.pth`."""

    vocab_size: int = 4096
    z_channels: int = 32
    ch: int = 160
    ch_mult: tuple[int, ...] = (1, 1, 2, 2, 4)  # len − 1 halvings: 16× downsampling
    num_res_blocks: int = 2
    using_sa: bool = True
    using_mid_sa: bool = True
    norm_groups: int = 32
    dropout: float = 0.0
    beta: float = 0.25  # commitment weight
    using_znorm: bool = False  # the released tokenizer uses Euclidean, not cosine, nearest neighbours
    quant_conv_ks: int = 3
    quant_resi: float = 0.5
    share_quant_resi: int = 4  # 0: one Φ per scale, 1: one Φ for all, K>1: K Φ's spread over the scales
    default_qresi_counts: int = 0
    patch_nums: tuple[int, ...] = field(default=PATCH_NUMS_256)
    in_channels: int = 3

    def __post_init__(self):
        self.ch_mult, self.patch_nums = tuple(self.ch_mult), tuple(self.patch_nums)
        if len(self.patch_nums) < 2:
            raise ValueError("patch_nums needs at least two scales")
        if list(self.patch_nums) != sorted(set(self.patch_nums)):
            raise ValueError(f"patch_nums must increase strictly, got {self.patch_nums}")
        widths = {self.ch * m for m in self.ch_mult}
        if any(w % self.norm_groups for w in widths):
            raise ValueError(f"every width {sorted(widths)} must be divisible by norm_groups={self.norm_groups}")

    @property
    def downsample(self) -> int:
        return 2 ** (len(self.ch_mult) - 1)

    @property
    def resolution(self) -> int:
        return self.patch_nums[-1] * self.downsample

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass
class VQVAEOutput:
    reconstruction: torch.Tensor  # decoder output, not clamped, (B, 3, H, W)
    vq_loss: torch.Tensor
    hits: list[torch.Tensor]


class VQVAE(PretrainedMixin, nn.Module):
    model_type = "vqvae"
    config_class = VQVAEConfig

    def __init__(self, config: VQVAEConfig | None = None):
        super().__init__()
        self.config = config = config or VQVAEConfig()
        coder = dict(
            ch=config.ch,
            ch_mult=config.ch_mult,
            num_res_blocks=config.num_res_blocks,
            z_channels=config.z_channels,
            dropout=config.dropout,
            using_sa=config.using_sa,
            using_mid_sa=config.using_mid_sa,
            norm_groups=config.norm_groups,
        )
        self.encoder = Encoder(in_channels=config.in_channels, **coder)
        self.decoder = Decoder(out_channels=config.in_channels, **coder)
        self.quantize = MultiScaleQuantizer(
            vocab_size=config.vocab_size,
            channels=config.z_channels,
            patch_nums=config.patch_nums,
            beta=config.beta,
            using_znorm=config.using_znorm,
            quant_resi=config.quant_resi,
            share_quant_resi=config.share_quant_resi,
            default_qresi_counts=config.default_qresi_counts,
        )
        ks = config.quant_conv_ks
        self.quant_conv = nn.Conv2d(config.z_channels, config.z_channels, ks, padding=ks // 2)
        self.post_quant_conv = nn.Conv2d(config.z_channels, config.z_channels, ks, padding=ks // 2)

    @property
    def patch_nums(self) -> tuple[int, ...]:
        return self.config.patch_nums

    def forward(self, img: torch.Tensor) -> VQVAEOutput:
        """Training forward on images in [−1, 1]."""
        q: QuantizerOutput = self.quantize(self.encode(img))
        return VQVAEOutput(self.decoder(self.post_quant_conv(q.f_hat)), q.vq_loss, q.hits)

    def encode(self, img: torch.Tensor) -> torch.Tensor:
        """Images in [−1, 1], (B, 3, H, W) → continuous latent f, (B, Cvae, H/16, W/16)."""
        return self.quant_conv(self.encoder(img))

    def fhat_to_img(self, f_hat: torch.Tensor, channels_last: bool = False) -> torch.Tensor:
        """Latent → image in [−1, 1].

        `channels_last` runs the decoder's convolutions on NHWC activations: faster with oneDNN and cuDNN,
        equal to the default up to float rounding (about 1e-6 relative).
        """
        if channels_last:
            f_hat = f_hat.contiguous(memory_format=torch.channels_last)
        return self.decoder(self.post_quant_conv(f_hat)).clamp_(-1, 1)

    @torch.no_grad()
    def img_to_idx(self, img: torch.Tensor, patch_nums: Sequence[int] | None = None) -> list[torch.Tensor]:
        """Images in [−1, 1] → one LongTensor (B, pn²) per scale, row-major."""
        return self.quantize.f_to_idx(self.encode(img), patch_nums)

    @torch.no_grad()
    def img_to_fhats(self, img: torch.Tensor, patch_nums: Sequence[int] | None = None) -> list[torch.Tensor]:
        return self.quantize.f_to_fhats(self.encode(img), patch_nums)

    @torch.no_grad()
    def idx_to_img(self, idx_Bl: Sequence[torch.Tensor], last_only: bool = True) -> torch.Tensor | list:
        """Token ids per scale → images in [−1, 1] (from the full pyramid, or one per scale)."""
        fhats = self.quantize.idx_to_fhats(idx_Bl, last_only=last_only)
        images = [self.fhat_to_img(f) for f in fhats]
        return images[-1] if last_only else images

    @torch.no_grad()
    def reconstruct(self, img: torch.Tensor, patch_nums: Sequence[int] | None = None) -> torch.Tensor:
        """Images in [−1, 1] → their reconstruction through the full token pyramid, in [−1, 1]."""
        return self.fhat_to_img(self.img_to_fhats(img, patch_nums)[-1])

    def idx_to_var_input(self, idx_Bl: Sequence[torch.Tensor]) -> torch.Tensor:
        return self.quantize.idx_to_var_input(idx_Bl)

    def load_state_dict(self, state_dict, strict: bool = True, assign: bool = False):
        # A checkpoint made for another schedule carries usage stats of another shape; they are only stats.
        key = "quantize.ema_vocab_hit_SV"
        if key in state_dict and state_dict[key].shape != self.quantize.ema_vocab_hit_SV.shape:
            state_dict = dict(state_dict)
            state_dict[key] = self.quantize.ema_vocab_hit_SV.clone()
        return super().load_state_dict(state_dict, strict=strict, assign=assign)
