"""What a training run is told: `TrainConfig` (both stages), `TokenizerOptions` and `VAROptions` (each stage's
own), and the rules the recipes follow. Each setting and default is written once, here; the command line's
flags store under these names. Nothing here imports torch, so recipes are checked against these classes where
they are defined and the command line lists them without loading a model.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from ..errors import NextscaleError, SettingError
from ..runtime import TRAIN_PRECISIONS, check_compile_backend, check_finite

LR_SCHEDULES = ("lin0", "lin", "cos")  # after warm-up: the reference's lin0 (flat 5%, then linear), lin, cosine
IMAGENET_TRAIN_IMAGES = 1_281_167


def peak_lr(base_lr: float, batch_size: int) -> float:
    """The reference's learning rate: `base_lr` per 256 images of the global batch."""
    return base_lr * batch_size / 256


def epoch_steps(epochs: int, n_images: int, batch_size: int) -> int:
    """Optimizer steps in `epochs` passes over `n_images` (each pass drops its last, partial batch)."""
    return epochs * max(1, n_images // batch_size)


def reference_warmup(steps: int) -> int:
    """The reference's warm-up of the transformer: epochs / 50, a fiftieth of the run."""
    return steps // 50


def reference_drop_path(depth: int) -> float:
    """The released transformers' stochastic depth (at the last block) for their depth."""
    return 0.1 * depth / 24


def curriculum_ramp(steps: int) -> int:
    """`pgwp`: the steps over which the progressive curriculum ramps a new scale's loss weight in, the reference's
    epochs / 300 (a 300th of the run)."""
    return max(1, steps // 300)


# Settings a resumed run may change. The length re-times the schedules (LR, weight decay, curriculum) from the
# resume step on; the others change nothing the run computes.
RESUMABLE_CHANGES = (
    "steps",
    "eval_every",
    "save_every",
    "log_every",
    "keep",
    "fsdp",
    "grad_checkpointing",
    "compile",
    "workers",
)


@dataclass
class TrainConfig:
    """A run's settings. `weight_decay_end` left None follows `weight_decay` when the config is made, so a config
    with another weight decay is made anew (as `recipe_settings` does): `dataclasses.replace` would carry the
    derived value over."""

    steps: int = 2000
    batch_size: int = 64  # the global batch, split equally over the processes
    lr: float = 3e-4  # peak learning rate
    warmup_steps: int = 100
    schedule: str = "lin0"  # the reference's: flat for 5% after warm-up, then linear decay
    lr_end_ratio: float = 0.01  # the final LR as a fraction of the peak (reference `wpe`)
    weight_decay: float = 0.05
    weight_decay_end: float | None = None  # None: constant
    betas: tuple[float, float] = (0.9, 0.95)
    grad_clip: float = 2.0
    eval_every: int = 500
    save_every: int = 500
    log_every: int = 50
    keep: int = 2  # checkpoints kept
    seed: int = 0
    precision: str = "fp32"  # bf16 autocast, or fp16 with a gradient scaler, on CUDA; CPUs run fp32
    ema: float = 0.0  # EMA decay of the weights (0: no EMA)
    fsdp: bool = False
    grad_checkpointing: bool = False
    compile: str | None = None  # a torch.compile backend ("inductor") or None
    workers: int = 0  # DataLoader worker processes for image folders
    pg: float = 0.0  # progressive training: the fraction of the run by which every scale is trained (0: off)
    pg0: int = 4  # the last scale trained until the warm-up ends
    pgwp: int = 1  # steps over which a newly added scale's loss weight ramps up (the command line: curriculum_ramp)
    count_flops: bool = False  # count each step's FLOPs (on its real shapes) and log the total at every evaluation
    extra: dict = field(default_factory=dict)  # stage options, saved with the run

    def __post_init__(self):
        self.betas = tuple(self.betas)
        if self.weight_decay_end is None:
            self.weight_decay_end = self.weight_decay
        for name in ("steps", "batch_size", "eval_every", "save_every", "log_every", "keep", "pgwp"):
            if getattr(self, name) < 1:
                raise SettingError(name, f"must be at least 1, got {getattr(self, name)}")
        for name in ("warmup_steps", "workers", "pg0"):
            if getattr(self, name) < 0:
                raise SettingError(name, f"must be ≥ 0, got {getattr(self, name)}")
        check_finite(self.lr, "lr", 0.0)
        if self.lr == 0:
            raise SettingError("lr", "must be positive, got 0")
        check_finite(self.lr_end_ratio, "lr_end_ratio", 0.0, 1.0)
        check_finite(self.weight_decay, "weight_decay", 0.0)
        check_finite(self.weight_decay_end, "weight_decay_end", 0.0)
        check_finite(self.grad_clip, "grad_clip", 0.0)
        check_finite(self.ema, "ema", 0.0, 1.0, open_high=True)
        check_finite(self.pg, "pg", 0.0, 1.0)
        if self.grad_clip == 0:
            raise SettingError("grad_clip", "must be positive, got 0")
        if len(self.betas) != 2 or not all(0 <= b < 1 for b in self.betas):
            raise SettingError("betas", f"must be two numbers in [0, 1), got {self.betas}")
        if self.schedule not in LR_SCHEDULES:
            raise SettingError("schedule", f"must be one of {', '.join(LR_SCHEDULES)}, got {self.schedule!r}")
        if self.precision not in TRAIN_PRECISIONS:
            raise SettingError("precision", f"must be one of {', '.join(TRAIN_PRECISIONS)}, got {self.precision!r}")
        if self.compile is not None:
            check_compile_backend(self.compile)
        from ..seeding import check_seed  # seeding loads torch: only when a config is made

        check_seed(self.seed)


# What a tokenizer run trains: everything, or the decoder alone (with the post-quantization conv), which leaves the
# encoder and the codebook, so the tokens and every transformer trained on them, as they were.
TOKENIZER_TRAINABLE = ("all", "decoder")


def check_decoder_only(trainable: str, has_init: bool, fresh_codebook: bool) -> None:
    """A decoder-only run trains a trained tokenizer's decoder on that tokenizer's own tokens."""
    if trainable == "decoder" and (not has_init or fresh_codebook):
        raise NextscaleError(
            "trainable 'decoder' trains a trained tokenizer's decoder on its own tokens: it needs the tokenizer "
            "to start from (--init), and keeps its codebook (no --fresh-codebook)"
        )


@dataclass
class TokenizerOptions:
    """The tokenizer's training settings (the architecture is `VQVAEConfig`)."""

    beta: float = 0.25  # commitment weight of the VQ loss (the reference's)
    l1_weight: float = 1.0
    l2_weight: float = 1.0
    vq_weight: float = 1.0
    perceptual_weight: float = 0.0  # LPIPS; off by default: needs VGG16 weights (and LPIPS's, for LPIPS proper)
    perceptual_weights: str | None = None  # torchvision's vgg16-397923af.pth (default: torch hub's cache)
    lpips_weights: str | None = None  # the lpips package's weights/v0.1/vgg.pth
    adversarial_weight: float = 0.0  # off by default
    adversarial_start: int = 0  # step at which the discriminator's verdict enters the loss
    adaptive_weight: bool = True  # VQGAN's: scale the adversarial term to the reconstruction's gradient
    revive_every: int = 50  # steps between dead-code revivals; 0 disables
    revive_threshold: float = 0.05  # a code is dead when its EMA hits, summed over scales, fall below this
    eval_batches: int = 8
    trainable: str = "all"  # "decoder": only what turns tokens into pixels learns (`TOKENIZER_TRAINABLE`)

    def __post_init__(self):
        if self.trainable not in TOKENIZER_TRAINABLE:
            raise SettingError("trainable", f"must be one of {', '.join(TOKENIZER_TRAINABLE)}, got {self.trainable!r}")
        for name in (
            "beta",
            "l1_weight",
            "l2_weight",
            "vq_weight",
            "perceptual_weight",
            "adversarial_weight",
            "revive_threshold",
        ):
            check_finite(getattr(self, name), name, 0.0)
        for name in ("adversarial_start", "revive_every"):
            if getattr(self, name) < 0:
                raise SettingError(name, f"must be ≥ 0, got {getattr(self, name)}")
        if self.eval_batches < 1:
            raise SettingError("eval_batches", f"must be at least 1, got {self.eval_batches}")


@dataclass
class VAROptions:
    """The transformer's training settings (the architecture is `VARConfig`); defaults are the reference's."""

    cond_drop_rate: float = 0.1  # label dropout, so that the model also learns the unconditional branch
    drop_path_rate: float = 0.0  # stochastic depth at the last block (the released models: reference_drop_path)
    label_smoothing: float = 0.0
    init_adaln: float = 0.5  # the AdaLN scales and shifts start at this × the generic init
    init_adaln_gamma: float = 1e-5  # the residual gates start near zero (the reference's recipes: 1e-3 … 5e-6)
    init_head: float = 0.02
    init_std: float = -1.0  # < 0: sqrt(1 / (3 C))
    eval_batches: int = 8
    trainable: str = "all"  # what learns: all, parameter groups, LoRA (`trainable.parse_trainable`)

    def __post_init__(self):
        from .trainable import parse_trainable

        parse_trainable(self.trainable)
        for name in ("cond_drop_rate", "drop_path_rate", "label_smoothing"):
            check_finite(getattr(self, name), name, 0.0, 1.0, open_high=True)
        for name in ("init_adaln", "init_adaln_gamma", "init_head", "init_std"):
            check_finite(getattr(self, name), name)
        if self.eval_batches < 1:
            raise SettingError("eval_batches", f"must be at least 1, got {self.eval_batches}")

    def init_kwargs(self) -> dict:
        return dict(
            init_adaln=self.init_adaln,
            init_adaln_gamma=self.init_adaln_gamma,
            init_head=self.init_head,
            init_std=self.init_std,
        )
