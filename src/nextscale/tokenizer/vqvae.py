"""The multi-scale VQ-VAE: encoder → quant_conv → multi-scale quantizer → post_quant_conv → decoder."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field

import torch
from torch import nn

from ..errors import NextscaleError
from ..pretrained import PretrainedMixin, check_config, weights_fingerprint
from .autoencoder import Decoder, Encoder
from .quantizer import MultiScaleQuantizer, QuantizerOutput

PATCH_NUMS_256 = (1, 2, 3, 4, 5, 6, 8, 10, 13, 16)
PATCH_NUMS_512 = (1, 2, 3, 4, 6, 9, 13, 18, 24, 32)


def pyramid_tokens(patch_nums: Sequence[int]) -> int:
    """The tokens of an image in a pyramid of pn×pn scales (680 for `PATCH_NUMS_256`)."""
    return sum(pn * pn for pn in patch_nums)


# The codebook's usage statistics (hits per code and scale): kept with the weights, but statistics, not weights.
USAGE_STATS = "quantize.ema_vocab_hit_SV"


@dataclass
class VQVAEConfig:
    """The tokenizer's architecture; defaults are the released `vae_ch160v4096z32.pth`. (Loss weights such as the
    commitment weight β are training settings: `TokenizerOptions`.)"""

    vocab_size: int = 4096
    z_channels: int = 32
    ch: int = 160
    ch_mult: tuple[int, ...] = (1, 1, 2, 2, 4)  # len − 1 halvings: 16× downsampling
    num_res_blocks: int = 2
    using_sa: bool = True
    using_mid_sa: bool = True
    norm_groups: int = 32
    using_znorm: bool = False  # the released tokenizer uses Euclidean, not cosine, nearest neighbours
    quant_conv_ks: int = 3
    quant_resi: float = 0.5
    share_quant_resi: int = 4  # 0: one Φ per scale, 1: one Φ for all, K>1: K Φ's spread over the scales
    default_qresi_counts: int = 0
    patch_nums: tuple[int, ...] = field(default=PATCH_NUMS_256)
    in_channels: int = 3

    def __post_init__(self):
        self.ch_mult, self.patch_nums = tuple(self.ch_mult), tuple(self.patch_nums)
        for name in ("vocab_size", "z_channels", "ch", "num_res_blocks", "norm_groups", "quant_conv_ks", "in_channels"):
            check_config(getattr(self, name) >= 1, f"{name} must be at least 1, got {getattr(self, name)}")
        check_config(self.quant_conv_ks % 2 == 1, f"quant_conv_ks must be odd, got {self.quant_conv_ks}")
        check_config(
            len(self.ch_mult) >= 1 and all(m >= 1 for m in self.ch_mult),
            f"ch_mult needs positive channel multipliers, got {self.ch_mult}",
        )
        check_config(len(self.patch_nums) >= 1, "patch_nums needs at least one scale")
        check_config(
            self.patch_nums[0] >= 1 and list(self.patch_nums) == sorted(set(self.patch_nums)),
            f"patch_nums must be positive and increase strictly, got {self.patch_nums}",
        )
        check_config(self.share_quant_resi >= 0, f"share_quant_resi must be ≥ 0, got {self.share_quant_resi}")
        widths = {self.ch * m for m in self.ch_mult}
        check_config(
            all(w % self.norm_groups == 0 for w in widths),
            f"every width {sorted(widths)} must be divisible by norm_groups={self.norm_groups}",
        )

    @property
    def downsample(self) -> int:
        return 2 ** (len(self.ch_mult) - 1)

    @property
    def resolution(self) -> int:
        return self.patch_nums[-1] * self.downsample

    @property
    def num_tokens(self) -> int:
        return pyramid_tokens(self.patch_nums)

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
    legacy_config_keys = ("dropout", "beta")  # training settings that format version 1 kept in the config
    shape_lenient_keys = (USAGE_STATS,)  # their shape follows the schedule

    def __init__(self, config: VQVAEConfig | None = None, *, device: str | torch.device | None = None):
        """`device="meta"` builds shapes only (for loading weights); elsewhere the weights are initialised."""
        super().__init__()
        self.config = config = config or VQVAEConfig()
        with torch.device("meta"):  # nothing is allocated or initialised twice
            coder = dict(
                ch=config.ch,
                ch_mult=config.ch_mult,
                num_res_blocks=config.num_res_blocks,
                z_channels=config.z_channels,
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
                using_znorm=config.using_znorm,
                quant_resi=config.quant_resi,
                share_quant_resi=config.share_quant_resi,
                default_qresi_counts=config.default_qresi_counts,
            )
            ks = config.quant_conv_ks
            self.quant_conv = nn.Conv2d(config.z_channels, config.z_channels, ks, padding=ks // 2)
            self.post_quant_conv = nn.Conv2d(config.z_channels, config.z_channels, ks, padding=ks // 2)
        device = torch.get_default_device() if device is None else torch.device(device)
        if device.type != "meta":
            self.to_empty(device=device)
            self.init_weights()

    @torch.no_grad()
    def init_weights(self) -> None:
        """PyTorch's default initialisation of every layer, zero usage statistics. Covers every parameter and
        buffer, so a model built on the meta device and moved with `to_empty` is complete after it."""
        for module in self.modules():
            if module is not self and hasattr(module, "reset_parameters"):
                module.reset_parameters()
        self.quantize.ema_vocab_hit_SV.zero_()
        self.quantize.record_hit = 0

    @property
    def patch_nums(self) -> tuple[int, ...]:
        return self.config.patch_nums

    def forward(self, img: torch.Tensor, beta: float = 0.25) -> VQVAEOutput:
        """Training forward on images in [−1, 1]; `beta` weighs the commitment loss."""
        q: QuantizerOutput = self.quantize(self.encode(img), beta)
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

    def check_images(self, img, patch_nums: Sequence[int] | None = None) -> None:
        """Raises a `NextscaleError` that names the problem unless `img` is a float (B, 3, H, W) batch in
        [−1, 1] at the size the schedule's last scale needs. (Reads two numbers back from the device.)"""
        side = (patch_nums or self.patch_nums)[-1] * self.config.downsample
        C = self.config.in_channels
        if not torch.is_tensor(img):
            raise NextscaleError(f"images must be a torch.Tensor, got {type(img).__name__}")
        if not img.is_floating_point():
            hint = " (uint8 pixels: use img.float() / 127.5 - 1)" if img.dtype == torch.uint8 else ""
            raise NextscaleError(f"images must be floating point in [-1, 1], got dtype {img.dtype}{hint}")
        if img.ndim != 4 or img.shape[1] != C or tuple(img.shape[-2:]) != (side, side):
            hint = " (channels last? use img.permute(0, 3, 1, 2))" if img.ndim == 4 and img.shape[-1] == C else ""
            raise NextscaleError(f"images must be (B, {C}, {side}, {side}), got shape {tuple(img.shape)}{hint}")
        low, high = torch.stack(torch.aminmax(img.detach())).tolist()  # one read-back
        if not (math.isfinite(low) and math.isfinite(high)):
            raise NextscaleError("images contain NaN or infinite values")
        if low < -1.001 or high > 1.001:
            hint = " (pixels in [0, 255]? use img / 127.5 - 1)" if high > 2 else ""
            raise NextscaleError(f"images must lie in [-1, 1], got values in [{low:.3g}, {high:.3g}]{hint}")

    def check_tokens(self, idx_Bl: Sequence[torch.Tensor]) -> None:
        """Raises unless `idx_Bl` is one integer (B, pn²) tensor of codebook ids per scale of the schedule."""
        pns = self.patch_nums
        if not isinstance(idx_Bl, list | tuple) or len(idx_Bl) != len(pns):
            raise NextscaleError(f"tokens must be a list of {len(pns)} tensors, one per scale {pns}")
        B = idx_Bl[0].shape[0] if torch.is_tensor(idx_Bl[0]) and idx_Bl[0].ndim == 2 else None
        for si, (idx, pn) in enumerate(zip(idx_Bl, pns)):
            if not torch.is_tensor(idx) or idx.is_floating_point() or tuple(idx.shape) != (B, pn * pn):
                shape = tuple(idx.shape) if torch.is_tensor(idx) else type(idx).__name__
                raise NextscaleError(f"tokens of scale {si} must be an integer (B, {pn * pn}) tensor, got {shape}")
        bounds = torch.stack([torch.stack(torch.aminmax(t)) for t in idx_Bl])  # (K, 2): per-scale min and max
        low, high = torch.stack([bounds[:, 0].min(), bounds[:, 1].max()]).tolist()  # one read-back
        if low < 0 or high >= self.config.vocab_size:
            raise NextscaleError(f"token ids must lie in [0, {self.config.vocab_size - 1}], got [{low}, {high}]")

    @torch.no_grad()
    def img_to_idx(self, img: torch.Tensor, patch_nums: Sequence[int] | None = None, *, check: bool = True):
        """Images in [−1, 1], (B, 3, H, W) → one LongTensor (B, pn²) per scale, row-major."""
        if check:
            self.check_images(img, patch_nums)
        return self.quantize.f_to_idx(self.encode(img), patch_nums)

    @torch.no_grad()
    def img_to_fhats(self, img: torch.Tensor, patch_nums: Sequence[int] | None = None) -> list[torch.Tensor]:
        self.check_images(img, patch_nums)
        return self.quantize.f_to_fhats(self.encode(img), patch_nums)

    @torch.no_grad()
    def idx_to_img(self, idx_Bl: Sequence[torch.Tensor], last_only: bool = True) -> torch.Tensor | list:
        """Token ids per scale → images in [−1, 1] (from the full pyramid, or one per scale)."""
        self.check_tokens(idx_Bl)
        fhats = self.quantize.idx_to_fhats(idx_Bl, last_only=last_only)
        images = [self.fhat_to_img(f) for f in fhats]
        return images[-1] if last_only else images

    @torch.no_grad()
    def reconstruct(self, img: torch.Tensor, patch_nums: Sequence[int] | None = None) -> torch.Tensor:
        """Images in [−1, 1] → their reconstruction through the full token pyramid, in [−1, 1]."""
        return self.fhat_to_img(self.img_to_fhats(img, patch_nums)[-1])

    def idx_to_var_input(self, idx_Bl: Sequence[torch.Tensor]) -> torch.Tensor:
        return self.quantize.idx_to_var_input(idx_Bl)

    # The parts that make tokens and the transformer's inputs; the rest (post_quant_conv, decoder) only reads them.
    TOKEN_PARTS = ("encoder", "quant_conv", "quantize")

    def train_decoder_only(self) -> VQVAE:
        """Freezes the parts that make tokens, so that training moves the decoder alone (`--trainable decoder`)."""
        for name in self.TOKEN_PARTS:
            getattr(self, name).requires_grad_(False)
        return self

    def token_parts_fingerprint(self) -> str:
        """The weights that make tokens, by content; not the codebook's usage statistics, which training updates
        even where the codebook is frozen."""
        parts = (getattr(self, name) for name in self.TOKEN_PARTS)
        return weights_fingerprint(*parts, skip=(USAGE_STATS.removeprefix("quantize."),))

    def tokens_fingerprint(self) -> str:
        """What its tokens are recorded by (token shards, a transformer's provenance): the fingerprint of the
        tokenizer whose encoder and codebook made them. One whose decoder alone was trained on
        (`train-tokenizer --trainable decoder`) records its initial tokenizer's (`provenance["tokens_of"]`) with
        the fingerprint of the parts that make tokens; while those parts are still the ones recorded, the two make
        the same tokens, so data and transformers of either serve both."""
        recorded = self.provenance.get("tokens_of")
        if recorded is not None and self.provenance.get("token_parts") == self.token_parts_fingerprint():
            return recorded
        return self.fingerprint()

    def load_state_dict(self, state_dict, strict: bool = True, assign: bool = False):
        # A checkpoint made for another schedule carries usage stats of another shape; they are only stats.
        key = USAGE_STATS
        own = self.quantize.ema_vocab_hit_SV
        if key in state_dict and state_dict[key].shape != own.shape:
            state_dict = dict(state_dict)
            device = "cpu" if own.is_meta else own.device
            state_dict[key] = torch.zeros(own.shape, dtype=own.dtype, device=device)
        return super().load_state_dict(state_dict, strict=strict, assign=assign)
