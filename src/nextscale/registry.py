"""Every named model in one place: architectures, released weights and built-in models. The library and the
command line (its `choices=` and defaults) read them from here; the sampler's settings are defined in
`nextscale.sampling.settings`, the training settings and recipes in `nextscale.training.config` and `.recipes`.

Nothing heavy is imported at module level, so the command line can list names without loading torch.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

from .errors import NextscaleError

# ---- architectures --------------------------------------------------------------------------------------

# The transformer kinds, as a run's checkpoint and a saved config.json name them: VAR (next-scale prediction) and
# the raster-order baseline (`nextscale.transformer.RasterAR`).
TRANSFORMER_KINDS = ("var", "raster-ar")

# The released models' width rule, width = 64 × depth, for what cannot import torch or comes after the transformer:
# the command line's --width-per-depth default and the benchmarks. `transformer.stack.depth_rule`'s default is the
# same number (the transformer comes before the registry); tests/test_layout.py holds them equal.
RELEASED_WIDTH_PER_DEPTH = 64

DIGITS_PATCH_NUMS = (1, 2, 3, 4, 6, 8)


def _released(depth: int, resolution: int = 256, shared_aln: bool = False):
    from .tokenizer import PATCH_NUMS_256, PATCH_NUMS_512, VQVAEConfig
    from .transformer import VARConfig

    patch_nums = PATCH_NUMS_512 if resolution == 512 else PATCH_NUMS_256
    vae = VQVAEConfig(patch_nums=patch_nums)  # one released tokenizer serves both resolutions
    return vae, VARConfig.from_depth(depth, patch_nums=patch_nums, shared_aln=shared_aln)


def _digits():
    from .tokenizer import VQVAEConfig
    from .transformer import VARConfig

    # 32×32 images, 4× downsampling → 8×8 latents; a 256-code book is plenty for ten kinds of strokes.
    # Sized to train in minutes on a 2-core CPU and to ship under 20 MB.
    vae = VQVAEConfig(
        vocab_size=256,
        z_channels=16,
        ch=16,
        ch_mult=(1, 2, 4),
        num_res_blocks=1,
        using_sa=False,
        using_mid_sa=True,
        norm_groups=8,
        patch_nums=DIGITS_PATCH_NUMS,
    )
    var = VARConfig(
        depth=4,
        embed_dim=128,
        num_heads=4,
        num_classes=10,
        vocab_size=256,
        latent_channels=16,
        patch_nums=DIGITS_PATCH_NUMS,
    )
    return vae, var


def _digits_small():
    """The built-in fine model for coarse-to-fine hand-off: the digits tokenizer, a quarter of the transformer's
    cost (half the depth, three quarters of the width), under 3 MB."""
    vae, var = _digits()
    return vae, replace(var, depth=2, embed_dim=96)


FASHION_PATCH_NUMS = (1, 2, 3, 4, 5, 6, 8)


def _fashion():
    """The built-in Fashion-MNIST model: 32×32 inputs (28×28 padded), 8×8 latents. Against the digits' shape it
    has four times the codes and seven scales (more residual steps of detail), a wider but shallower-reaching
    encoder (channels 32, 64, 64), and a deeper transformer with one AdaLN shared by its blocks (the reference's
    d36 option), which keeps both under 10 MB. BENCHMARKS.md has the measurements behind the sizes."""
    from .tokenizer import VQVAEConfig
    from .transformer import VARConfig

    vae = VQVAEConfig(
        vocab_size=1024,
        z_channels=32,
        ch=32,
        ch_mult=(1, 2, 2),
        num_res_blocks=1,
        using_sa=False,
        using_mid_sa=True,
        norm_groups=8,
        patch_nums=FASHION_PATCH_NUMS,
    )
    var = VARConfig(
        depth=6,
        embed_dim=128,
        num_heads=4,
        num_classes=10,
        vocab_size=1024,
        latent_channels=32,
        patch_nums=FASHION_PATCH_NUMS,
        shared_aln=True,
    )
    return vae, var


def _tiny():
    from .tokenizer import VQVAEConfig
    from .transformer import VARConfig

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
        depth=2, embed_dim=32, num_heads=2, num_classes=4, vocab_size=32, latent_channels=4, patch_nums=patch_nums
    )
    return vae, var


ARCHITECTURES = {
    "var-d16": lambda: _released(16),
    "var-d20": lambda: _released(20),
    "var-d24": lambda: _released(24),
    "var-d30": lambda: _released(30),
    "var-d36": lambda: _released(36, resolution=512, shared_aln=True),
    "digits": _digits,
    "digits-small": _digits_small,
    "fashion": _fashion,
    "tiny": _tiny,  # for tests
}


def architecture(name: str):
    """(VQVAEConfig, VARConfig) of a named architecture."""
    if name not in ARCHITECTURES:
        raise NextscaleError(f"unknown architecture {name!r}; choose from {', '.join(ARCHITECTURES)}")
    return ARCHITECTURES[name]()


def build(name: str, *, device="cpu"):
    """Freshly initialised (tokenizer, transformer) of a named architecture; `device="meta"` builds shapes only."""
    from .tokenizer import VQVAE
    from .transformer import VAR

    vae_config, var_config = architecture(name)
    return VQVAE(vae_config, device=device), VAR(var_config, device=device)


# ---- weights: released by the reference, and built in -----------------------------------------------------

HUB_REPO = "FoundationVision/var"
RELEASED_TOKENIZER_FILE = "vae_ch160v4096z32.pth"  # pairs with every released transformer, at 256 and 512 px
RELEASED = {name: f"var_d{name[len('var-d') :]}.pth" for name in ARCHITECTURES if name.startswith("var-d")}
BUILTIN_DIR = Path(__file__).parent / "assets"
BUILTIN = {
    "digits": BUILTIN_DIR / "digits",
    "digits-small": BUILTIN_DIR / "digits-small",
    "fashion": BUILTIN_DIR / "fashion",
}
BUILTIN_TOKENIZER = {
    "digits": "digits",
    "digits-small": "digits",
    "fashion": "fashion",
}  # the small one is the fine model of a hand-off
MODEL_NAMES = (*BUILTIN, *RELEASED)
