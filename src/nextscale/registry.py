"""Every named thing in one place: architectures, released weights, built-in models, training recipes and the
sampler's defaults. The library and the command line (its `choices=` and defaults) read them from here.

Nothing heavy is imported at module level, so the command line can list names without loading torch.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

from .errors import NextscaleError

# ---- the sampler's defaults: the reference README's FID settings -------------------------------------------


@dataclass(frozen=True)
class SamplerDefaults:
    cfg: float = 1.5  # guidance weight at the last scale (the paper's tables use 2.0; the README 1.5)
    cfg_schedule: str = "linear"  # the reference ramps guidance from 0 at 1×1 up to `cfg` at the last scale
    top_k: int = 900
    top_p: float = 0.96
    more_smooth: bool = False  # Gumbel-softmax embeddings: for looks, not for FID
    temperature: float = 1.0  # the reference draws from the softmax as it is
    guidance_scales: slice | None = None  # guidance on every scale (the schedule decides its weight)


SAMPLER = SamplerDefaults()
CFG_SCHEDULES = ("linear", "constant")
LR_SCHEDULES = ("lin0", "lin", "cos")  # after warm-up: the reference's lin0 (flat 5%, then linear), lin, cosine

# ---- architectures --------------------------------------------------------------------------------------

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
BUILTIN = {"digits": BUILTIN_DIR / "digits", "digits-small": BUILTIN_DIR / "digits-small"}
BUILTIN_TOKENIZER = {"digits": "digits", "digits-small": "digits"}  # the small one is the fine model of a hand-off
MODEL_NAMES = (*BUILTIN, *RELEASED)

# ---- training recipes -------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Recipe:
    stage: str  # "tokenizer" or "var"
    architecture: str
    data: str  # what it trains on
    train: dict = field(default_factory=dict)  # TrainConfig fields
    options: dict = field(default_factory=dict)  # TokenizerOptions / VAROptions fields
    epochs: int | None = None  # where set, steps and warm-up follow the dataset's size (steps = epochs × n // batch)

    def as_dict(self) -> dict:
        return asdict(self)


IMAGENET_TRAIN_IMAGES = 1_281_167


def _reference(depth: int, batch: int, epochs: int, base_lr: float, alng: float, wpe: float, wd_end=None, reso=256):
    """Reference section 3.6: lr = base_lr × batch / 256, warm-up for epochs/50, `lin0` down to wpe × peak."""
    steps_per_epoch = -(-IMAGENET_TRAIN_IMAGES // batch)
    train = dict(
        steps=epochs * steps_per_epoch,
        batch_size=batch,
        lr=base_lr * batch / 256,
        warmup_steps=epochs * steps_per_epoch // 50,
        schedule="lin0",
        lr_end_ratio=wpe,
        weight_decay=0.05,
        weight_decay_end=wd_end,
        grad_clip=2.0,
        precision="fp16",
    )
    options = dict(cond_drop_rate=0.1, drop_path_rate=0.1 * depth / 24, init_adaln_gamma=alng)
    name = f"var-d{depth}"
    return Recipe("var", name, f"ImageNet-1k train, {reso} px", train, options, epochs=epochs)


def _digits_recipe(stage: str, steps: int, batch: int, lr: float, warmup: int, wd: float, every: int, **options):
    """The built-in model's recipes (seed 0): what `nextscale demo --train` replays."""
    train = dict(
        steps=steps,
        batch_size=batch,
        lr=lr,
        warmup_steps=warmup,
        weight_decay=wd,
        eval_every=every,
        save_every=every,
        seed=0,
    )
    return Recipe(stage, "digits", "digits", train, options)


def _tokenizer_recipe(batch: int = 128, epochs: int = 40, lr: float = 1e-4, adversarial_start: int = 20_000):
    """The 256 px tokenizer of the released models' shape (4096 codes, 32 channels, scales 1…16). The reference
    released no tokenizer training: these settings follow the open VQGAN-style recipes (LPIPS weight 1, a
    PatchGAN hinge loss at 0.5 with VQGAN's adaptive weight from step 20k, AdamW 1e-4, β = (0.9, 0.95))."""
    steps = epochs * (IMAGENET_TRAIN_IMAGES // batch)
    train = dict(
        steps=steps,
        batch_size=batch,
        lr=lr,
        warmup_steps=0,
        schedule="cos",
        lr_end_ratio=0.1,
        weight_decay=0.0,
        grad_clip=1.0,
        precision="bf16",
    )
    options = dict(beta=0.25, perceptual_weight=1.0, adversarial_weight=0.5, adversarial_start=adversarial_start)
    return Recipe("tokenizer", "var-d16", "ImageNet-1k train, 256 px", train, options, epochs=epochs)


RECIPES = {
    "digits-tokenizer": _digits_recipe("tokenizer", 1500, 32, 5e-4, 50, 0.0, 250),
    "digits-var": _digits_recipe("var", 3000, 64, 1e-3, 100, 0.05, 500, cond_drop_rate=0.1, drop_path_rate=0.0),
    "vqvae-256": _tokenizer_recipe(),
    "var-d16": _reference(16, 768, 200, 1e-4, 1e-3, 0.1),
    "var-d20": _reference(20, 768, 250, 1e-4, 1e-3, 0.1),
    "var-d24": _reference(24, 768, 350, 8e-5, 1e-4, 0.01),
    "var-d30": _reference(30, 1024, 350, 8e-5, 1e-5, 0.01, wd_end=0.08),
    "var-d36": _reference(36, 768, 350, 8e-5, 5e-6, 0.01, wd_end=0.08, reso=512),
}


def recipe(name: str, stage: str | None = None) -> Recipe:
    if name not in RECIPES or (stage is not None and RECIPES[name].stage != stage):
        names = [n for n, r in RECIPES.items() if stage is None or r.stage == stage]
        raise NextscaleError(
            f"unknown {stage or ''} recipe {name!r}; choose from {', '.join(names)}".replace("  ", " ")
        )
    return RECIPES[name]
