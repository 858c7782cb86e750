"""Named architectures: the released models, the built-in digits model and a tiny one for tests."""

from __future__ import annotations

from collections.abc import Callable

import torch

from .errors import NextscaleError
from .tokenizer import PATCH_NUMS_256, PATCH_NUMS_512, VQVAE, VQVAEConfig
from .transformer import VAR, VARConfig

DIGITS_PATCH_NUMS = (1, 2, 3, 4, 6, 8)


def _released(depth: int, patch_nums=PATCH_NUMS_256, shared_aln: bool = False) -> tuple[VQVAEConfig, VARConfig]:
    vae = VQVAEConfig(patch_nums=patch_nums)  # one released tokenizer serves both resolutions
    return vae, VARConfig.from_depth(depth, patch_nums=patch_nums, shared_aln=shared_aln)


def _digits() -> tuple[VQVAEConfig, VARConfig]:
    # 32×32 images, 4× downsampling → 8×8 latents; a 256-code book is plenty for ten kinds of strokes.
    # Sized to train in minutes on a 2-core CPU and to ship under 20 MB.
    vae = VQVAEConfig(vocab_size=256, z_channels=16, ch=16, ch_mult=(1, 2, 4), num_res_blocks=1,
                      using_sa=False, using_mid_sa=True, norm_groups=8, patch_nums=DIGITS_PATCH_NUMS)  # fmt: skip
    var = VARConfig(depth=4, embed_dim=128, num_heads=4, num_classes=10, vocab_size=256, latent_channels=16,
                    patch_nums=DIGITS_PATCH_NUMS, drop_path_rate=0.0)  # fmt: skip
    return vae, var


def _tiny() -> tuple[VQVAEConfig, VARConfig]:
    patch_nums = (1, 2, 3, 4)
    vae = VQVAEConfig(
        vocab_size=32,
        z_channels=4,
        ch=8,
        ch_mult=(1, 2),
        num_res_blocks=1,
        using_sa=False,
        norm_groups=4,
        patch_nums=patch_nums,
    )
    var = VARConfig(
        depth=2,
        embed_dim=32,
        num_heads=2,
        num_classes=4,
        vocab_size=32,
        latent_channels=4,
        patch_nums=patch_nums,
    )
    return vae, var


PRESETS: dict[str, Callable[[], tuple[VQVAEConfig, VARConfig]]] = {
    "var-d16": lambda: _released(16),
    "var-d20": lambda: _released(20),
    "var-d24": lambda: _released(24),
    "var-d30": lambda: _released(30),
    "var-d36": lambda: _released(36, shared_aln=True, patch_nums=PATCH_NUMS_512),
    "digits": _digits,
    "tiny": _tiny,
}


def preset_configs(name: str) -> tuple[VQVAEConfig, VARConfig]:
    if name not in PRESETS:
        raise NextscaleError(f"unknown preset {name!r}; choose from {', '.join(PRESETS)}")
    return PRESETS[name]()


def build(name: str, *, device: str | torch.device = "cpu") -> tuple[VQVAE, VAR]:
    """Freshly initialised (tokenizer, transformer) of a preset; `device="meta"` builds shapes only."""
    vae_config, var_config = preset_configs(name)
    with torch.device(device):
        return VQVAE(vae_config), VAR(var_config)
