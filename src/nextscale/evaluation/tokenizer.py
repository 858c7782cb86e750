"""How well a tokenizer gives its images back: PSNR, SSIM, LPIPS and rFID of the reconstructions through the full
token pyramid, and how much of the codebook each scale uses.

A reconstruction is what a generator's tokens become: the images' token ids decoded (`idx_to_img`), the path
sampling takes, not the encoder's continuous latent. rFID goes through the same feature networks, uint8
conversion and Fréchet distance as `nextscale eval`, so the two commands' numbers can be compared.
"""

from __future__ import annotations

import importlib.util
import math
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader, Dataset, Subset
from tqdm.auto import tqdm

from ..data import FashionMNISTDataset
from ..data.fashion import FASHION_RESOLUTION
from ..errors import NextscaleError
from ..tokenizer import VQVAE
from ..training.losses import LPIPS_FILE, VGG16_FILE, PerceptualLoss
from .features import INCEPTION_FILE, INCEPTION_URL, FeatureNetwork, default_inception_path, extract, load_network
from .imagesets import Statistics
from .metrics import frechet_distance

SSIM_WINDOW, SSIM_SIGMA, SSIM_K1, SSIM_K2 = 11, 1.5, 0.01, 0.03


# ---- per-image measures, on images in [0, 1] --------------------------------------------------------------------


def psnr(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Per-image PSNR in dB (data range 1), (B,): inf for an exact reconstruction, as the definition gives."""
    mse = (a.double() - b.double()).square().flatten(1).mean(1)
    return 10 * torch.log10(1 / mse)


def gaussian_window(size: int = SSIM_WINDOW, sigma: float = SSIM_SIGMA) -> torch.Tensor:
    x = torch.arange(size, dtype=torch.float64) - (size - 1) / 2
    g = torch.exp(-(x**2) / (2 * sigma**2))
    g = g / g.sum()
    return g[:, None] * g[None, :]


def ssim(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Per-image SSIM (Wang et al. 2004), (B,): an 11×11 Gaussian window of σ 1.5, K1 0.01, K2 0.03, data range
    1, population (not sample) variances; the map's mean over the valid positions of each channel, channels
    averaged. This equals skimage's `structural_similarity(gaussian_weights=True, use_sample_covariance=False,
    data_range=1, channel_axis=…)` — skimage filters with reflection and then crops the 5-pixel border the
    reflection touched, which leaves exactly the valid positions — and pytorch-msssim's `ssim` (valid Gaussian
    convolution). Computed in float64: the variances are differences of nearly equal means."""
    a, b = a.double(), b.double()
    C = a.shape[1]
    if min(a.shape[-2:]) < SSIM_WINDOW:
        raise NextscaleError(f"SSIM needs images of at least {SSIM_WINDOW}×{SSIM_WINDOW}, got {tuple(a.shape[-2:])}")
    w = gaussian_window().to(a.device).expand(C, 1, -1, -1)
    blur = lambda x: F.conv2d(x, w, groups=C)  # noqa: E731
    mu_a, mu_b = blur(a), blur(b)
    var_a = blur(a * a) - mu_a.square()
    var_b = blur(b * b) - mu_b.square()
    cov = blur(a * b) - mu_a * mu_b
    c1, c2 = SSIM_K1**2, SSIM_K2**2
    s = ((2 * mu_a * mu_b + c1) * (2 * cov + c2)) / ((mu_a.square() + mu_b.square() + c1) * (var_a + var_b + c2))
    return s.mean(dim=(2, 3)).mean(1)


# ---- codebook use ---------------------------------------------------------------------------------------------


def codebook_use(counts: torch.Tensor) -> tuple[float, float]:
    """(share of the codes used at least once, perplexity exp(entropy) in codes) of a histogram of token ids.
    Perplexity is the number of equally used codes that would carry the same information: a codebook can be
    fully used and still spend most tokens on a few codes."""
    counts = counts.double()
    p = counts[counts > 0] / counts.sum()
    return float((counts > 0).double().mean()), float(torch.exp(-(p * p.log()).sum()))


@dataclass
class ScaleUse:
    scale: str  # "pn×pn", or "all"
    tokens: int  # tokens of this scale over the data
    usage: float  # share of the codebook used
    perplexity: float


def scale_uses(counts: torch.Tensor, patch_nums) -> list[ScaleUse]:
    """One entry per scale from a (scales, vocab) histogram, then one for all scales together."""
    rows = []
    for pn, c in zip(patch_nums, counts):
        rows.append(ScaleUse(f"{pn}×{pn}", int(c.sum()), *codebook_use(c)))
    total = counts.sum(0)
    return rows + [ScaleUse("all", int(total.sum()), *codebook_use(total))]


# ---- LPIPS ----------------------------------------------------------------------------------------------------


def lpips_candidates() -> list[Path]:
    """Where LPIPS's two files are looked for when none are named: torch's hub folder (where torchvision puts
    VGG16), and the lpips package's own weights when it is installed (found without importing it)."""
    places = [Path(torch.hub.get_dir()) / "checkpoints"]
    spec = importlib.util.find_spec("lpips")
    if spec is not None and spec.origin is not None:
        places.append(Path(spec.origin).parent / "weights" / "v0.1")
    return places


def find_lpips_files(paths=None) -> tuple[Path | None, Path | None]:
    """(VGG16 file, LPIPS file) from folders and files: a file named `vgg.pth` is LPIPS's, any other file is
    VGG16's; a folder gives whichever of the two it holds."""
    vgg = lin = None
    for path in map(Path, paths if paths is not None else lpips_candidates()):
        if path.is_dir():
            vgg = vgg or _if_file(path / VGG16_FILE)
            lin = lin or _if_file(path / LPIPS_FILE)
        elif path.name == LPIPS_FILE:
            lin = lin or _if_file(path)
        else:
            vgg = vgg or _if_file(path)
    return vgg, lin


def _if_file(path: Path) -> Path | None:
    return path if path.is_file() else None


def load_lpips(paths=None, device="cpu") -> tuple[PerceptualLoss | None, str | None]:
    """(LPIPS, None) or, when its weights are not here, (None, a note saying what is missing).

    `paths`: folders or files the user named, which must exist and hold both files (their error is theirs to
    fix); None: look in the usual places, and skip LPIPS without them. Never downloads: an evaluation must
    not depend on the network, and a VGG distance without LPIPS's learned weights is not LPIPS."""
    for path in paths or ():
        if not os.path.exists(path):
            raise NextscaleError(f"--lpips-weights {path}: no such file or folder")
    vgg, lin = find_lpips_files(paths)
    missing = [name for name, found in ((VGG16_FILE, vgg), (LPIPS_FILE, lin)) if found is None]
    if missing and paths:
        raise NextscaleError(f"--lpips-weights {' '.join(map(str, paths))}: {' and '.join(missing)} not found there")
    if missing:
        where = lpips_candidates()[0]
        return None, (
            f"LPIPS skipped: {' and '.join(missing)} not found (put torchvision's {VGG16_FILE} and the "
            f"lpips package's weights/v0.1/{LPIPS_FILE} in {where}, or pass --lpips-weights)"
        )
    return PerceptualLoss(str(vgg), str(lin)).to(device), None


# ---- rFID's network -------------------------------------------------------------------------------------------


def local_inception(device="cpu") -> tuple[FeatureNetwork | None, str | None]:
    """(Inception, None) where its weights are in torch's hub folder, else (None, a note saying where to put them).
    Never downloads, as LPIPS: a tokenizer's evaluation runs offline, and rFID is one of its numbers."""
    path = default_inception_path()
    if not path.is_file():
        return None, (
            f"rFID skipped: the Inception weights {INCEPTION_FILE} are not in {path.parent} (download "
            f"{INCEPTION_URL} there, pass --inception-weights FILE, or --rfid to download them)"
        )
    return load_network("inception", device=device, inception_weights=path), None


def default_features(dataset: Dataset) -> str:
    """rFID's network for `dataset` when none is named: Fashion-MNIST's own classifier for Fashion-MNIST at its
    32×32 (Inception sees its grey garments as blurry ImageNet photographs; the classifier reads 32×32 only), else
    Inception."""
    while isinstance(dataset, Subset):
        dataset = dataset.dataset
    native = isinstance(dataset, FashionMNISTDataset) and dataset.images.shape[-1] == FASHION_RESOLUTION
    return "fashion" if native else "inception"


def resolve_network(network, dataset: Dataset, device) -> tuple[FeatureNetwork | None, str | None]:
    """(network, note) from `evaluate_tokenizer`'s `network`: a FeatureNetwork or None as given; a name loaded
    here, Inception only where its weights are in torch's hub folder (else None and a note); "auto": the
    dataset's default name."""
    if not isinstance(network, str):
        return network, None
    name = default_features(dataset) if network == "auto" else network
    if name == "inception":
        return local_inception(device)
    return load_network(name, device=device), None


# ---- the evaluation -------------------------------------------------------------------------------------------


@dataclass
class TokenizerReport:
    images: int
    resolution: int
    vocab_size: int
    psnr: float  # dB, mean over images of each image's PSNR
    ssim: float
    lpips: float | None  # None: skipped (see notes)
    rfid: float | None  # None: no feature network
    features: str | None  # the network rFID used
    scales: list[ScaleUse] = field(default_factory=list)  # codebook use per scale, then "all"
    notes: list[str] = field(default_factory=list)

    def as_dict(self) -> dict:
        """JSON-safe: an infinite PSNR (every image reconstructed exactly) is written "inf"."""
        d = asdict(self)
        return {k: v if not isinstance(v, float) or math.isfinite(v) else str(v) for k, v in d.items()}

    def summary(self) -> str:
        lpips = f"{self.lpips:.4f}" if self.lpips is not None else "skipped"
        rfid = f"{self.rfid:.4f} ({self.features} features)" if self.rfid is not None else "skipped"
        lines = [
            f"{self.images} images at {self.resolution}×{self.resolution}, codebook of {self.vocab_size}",
            f"  PSNR   {self.psnr:.4f} dB",
            f"  SSIM   {self.ssim:.4f}",
            f"  LPIPS  {lpips}",
            f"  rFID   {rfid}",
            "  codebook   scale   tokens    usage  perplexity",
        ]
        for s in self.scales:
            lines.append(f"           {s.scale:>7} {s.tokens:>8} {s.usage:>8.2%} {s.perplexity:>11.2f}")
        return "\n".join(lines + [f"  note: {n}" for n in self.notes])


class _Totals:
    """Sums over batches: the metrics are means over images, and the histograms count every token."""

    def __init__(self, vae: VQVAE):
        self.n, self.psnr, self.ssim, self.lpips = 0, 0.0, 0.0, 0.0
        self.counts = torch.zeros(len(vae.patch_nums), vae.config.vocab_size, dtype=torch.long)
        self.feats_real, self.feats_rec = [], []


def to_uint8(images: torch.Tensor) -> torch.Tensor:
    """[0, 1] → uint8 rounded to nearest, as `nextscale sample` writes images (so rFID sees what eval sees)."""
    return images.mul(255).add(0.5).clamp(0, 255).to(torch.uint8)


@torch.no_grad()
def _measure(vae, img, totals: _Totals, network, lpips) -> None:
    idx = vae.img_to_idx(img, check=False)
    rec = vae.idx_to_img(idx)  # [-1, 1], clamped
    for si, ids in enumerate(idx):
        totals.counts[si] += ids.flatten().bincount(minlength=totals.counts.shape[1]).cpu()
    real01, rec01 = img.add(1).div(2).clamp(0, 1), rec.add(1).div(2)
    totals.n += len(img)
    totals.psnr += float(psnr(real01, rec01).sum())
    totals.ssim += float(ssim(real01, rec01).sum())
    if lpips is not None:
        totals.lpips += float(lpips(rec, img)) * len(img)  # the batch mean of per-image means
    if network is not None:
        totals.feats_real.append(extract(network, [to_uint8(real01)])[0])
        totals.feats_rec.append(extract(network, [to_uint8(rec01)])[0])


def _rfid(totals: _Totals, network: FeatureNetwork) -> float:
    if totals.n < 2:
        raise NextscaleError(f"rFID needs at least 2 images, got {totals.n}")
    real = Statistics.of(np.concatenate(totals.feats_real), network.name)
    rec = Statistics.of(np.concatenate(totals.feats_rec), network.name)
    return frechet_distance(real, rec)


def evaluate_tokenizer(
    vae: VQVAE,
    dataset: Dataset,
    *,
    network: FeatureNetwork | str | None = None,
    lpips="auto",
    batch_size: int = 32,
    limit: int | None = None,
    device="cpu",
    workers: int = 0,
    progress: bool = True,
) -> TokenizerReport:
    """Reconstruction metrics over `dataset`'s (image in [−1, 1], label) items, the first `limit` of them.

    `network`: the feature network for rFID, None (no rFID), a registered name, or "auto": the dataset's own
    (`default_features`: `fashion` for Fashion-MNIST, else `inception`). Inception by name is used where its
    weights are found locally, else skipped with a note (never downloaded). `lpips`: a `PerceptualLoss`, None
    (skipped), or "auto": LPIPS where its weights are found locally, else skipped with a note."""
    notes = []
    network, note = resolve_network(network, dataset, device)
    notes += [note] if note else []
    if lpips == "auto":
        lpips, note = load_lpips(device=device)
        notes += [note] if note else []
    elif lpips is None:
        notes.append("LPIPS skipped: not asked for")
    data = dataset if limit is None else Subset(dataset, range(min(limit, len(dataset))))
    if len(data) == 0:
        raise NextscaleError("no images to evaluate")
    vae = vae.to(device).eval()
    totals = _Totals(vae)
    loader = DataLoader(data, batch_size=batch_size, shuffle=False, num_workers=workers)
    with tqdm(total=len(data), desc="reconstructing", unit="img", disable=not progress) as bar:
        for img, _ in loader:
            _measure(vae, img.to(device).float(), totals, network, lpips)
            bar.update(len(img))
    return TokenizerReport(
        images=totals.n,
        resolution=vae.config.resolution,
        vocab_size=vae.config.vocab_size,
        psnr=totals.psnr / totals.n,
        ssim=totals.ssim / totals.n,
        lpips=totals.lpips / totals.n if lpips is not None else None,
        rfid=_rfid(totals, network) if network is not None else None,
        features=network.name if network is not None else None,
        scales=scale_uses(totals.counts, vae.patch_nums),
        notes=notes,
    )
