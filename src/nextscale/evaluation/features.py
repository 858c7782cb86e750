"""Feature networks for the metrics: uint8 images (N, 3, H, W) → features (N, D), and class logits for the
Inception Score where the network has them.

- `inception`: torch-fidelity's port of the 2015-12-05 TF Inception graph (the ADM evaluator's): pool features
  (2048) and the unbiased logits (1008), as torch-fidelity uses them.
- `digits`: the digits judge's MLP (hidden layer, 128) on images shrunk back to the 8×8 grid; logits over 0–9.
- `fashion`: the Fashion-MNIST network (fashion_network.py), a CNN trained on the 60,000 training images:
  its hidden layer (128) and logits over the 10 garment classes, for 32×32 images rendered as the tokenizer
  renders Fashion-MNIST.
- a file: a program saved with `torch.export.save` (`.pt2`, dynamic batch dimension), or TorchScript (`.pt`,
  deprecated in torch 2.14 but read), returning features, or a tuple (features, logits).
"""

from __future__ import annotations

import io
import os
import warnings
from pathlib import Path

import numpy as np
import torch

from ..errors import NextscaleError
from ..files import file_sha256, first_line, read_torch_weights
from .exported import load_exported
from .fashion_network import load_fashion_network
from .judge import DigitsNetwork, judge_for
from .presets import REGISTERED

INCEPTION_URL = (
    "https://github.com/toshas/torch-fidelity/releases/download/v0.2.0/weights-inception-2015-12-05-6726825d.pth"
)
INCEPTION_FILE = INCEPTION_URL.rsplit("/", 1)[1]


class FeatureNetwork:
    """Images → (features, logits). `name` says which features these are: statistics of other features cannot be
    compared with them."""

    name: str
    gives_logits: bool | None = True  # False: its features serve as the IS logits (None: not known yet)

    def __call__(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        raise NotImplementedError


def default_inception_path() -> Path:
    return Path(torch.hub.get_dir()) / "checkpoints" / INCEPTION_FILE


def fetch_inception_weights(path: str | os.PathLike | None = None) -> Path:
    """The Inception weights: `path` if given; else torch's hub folder, downloaded there on first use."""
    if path is not None:
        path = Path(path)
        if not path.is_file():
            raise NextscaleError(
                f"--inception-weights {path}: no such file (it should be {INCEPTION_FILE}, from {INCEPTION_URL})"
            )
        return path
    path = default_inception_path()
    if path.is_file():
        return path
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        torch.hub.download_url_to_file(INCEPTION_URL, str(path), hash_prefix="6726825d", progress=True)
    except Exception as e:  # offline, a proxy, a bad hash: the user needs the file, not the traceback
        raise NextscaleError(
            f"the Inception weights {INCEPTION_FILE} are not in {path.parent} and could not be "
            f"downloaded ({first_line(e)}): download {INCEPTION_URL} into that folder, or pass "
            "--inception-weights FILE"
        ) from None
    return path


def _resaved_weights(path: Path) -> io.BytesIO:
    """torch-fidelity unpickles the weights file it is given whole (`weights_only=False`). It is given the tensors
    read weights-only instead, saved again in memory: the only pickle it runs is one nextscale wrote."""
    state = read_torch_weights(path)
    if not isinstance(state, dict) or not all(torch.is_tensor(v) for v in state.values()):
        raise NextscaleError(f"{path} is not the Inception weights torch-fidelity expects (no state dict of tensors)")
    checked = io.BytesIO()
    torch.save(state, checked)
    checked.seek(0)
    return checked


class InceptionFeatures(FeatureNetwork):
    name = "inception"

    def __init__(self, weights: str | os.PathLike | None = None, device="cpu"):
        from torch_fidelity.feature_extractor_inceptionv3 import FeatureExtractorInceptionV3

        path = fetch_inception_weights(weights)
        checked = _resaved_weights(path)
        try:
            net = FeatureExtractorInceptionV3(
                "inception-v3-compat", ["2048", "logits_unbiased"], feature_extractor_weights_path=checked
            )
        except Exception as e:
            raise NextscaleError(
                f"{path} is not the Inception weights torch-fidelity expects: {first_line(e)}"
            ) from None
        self.net = net.to(device)
        self.device = torch.device(device)

    @torch.no_grad()
    def __call__(self, images):
        pool, logits = self.net(images.to(self.device))
        return pool, logits


class DigitsFeatures(FeatureNetwork):
    name = "digits"

    def __init__(self, seed: int = 0):
        self.module = DigitsNetwork(judge_for(seed)).eval()

    @torch.no_grad()
    def __call__(self, images):
        if images.shape[-1] != 32 or images.shape[-2] != 32:
            raise NextscaleError(f"the digits features take 32×32 images, got {images.shape[-2]}×{images.shape[-1]}")
        return self.module(images.cpu())


class FashionFeatures(FeatureNetwork):
    name = "fashion"

    def __init__(self, device="cpu"):
        self.device = torch.device(device)
        self.module = load_fashion_network().to(self.device)

    @torch.no_grad()
    def __call__(self, images):
        side = self.module.config.resolution
        if tuple(images.shape[1:]) != (3, side, side):
            raise NextscaleError(
                f"the fashion features take 3×{side}×{side} images (Fashion-MNIST as the tokenizer renders it), got "
                f"{'×'.join(map(str, images.shape[1:]))}"
            )
        return self.module(images.to(self.device))


class ExportedNetwork(FeatureNetwork):
    """A user's network from a file: `torch.export` (`.pt2`) or TorchScript (`.pt`)."""

    def __init__(self, path: str | os.PathLike, device="cpu", what: str = "--features"):
        path = Path(path)
        if not path.is_file():
            raise NextscaleError(f"{what} {path}: no such file")
        if path.suffix not in (".pt2", ".pt"):
            raise NextscaleError(f"{what} {path}: expected a torch.export file (.pt2) or TorchScript (.pt)")
        self.device = torch.device(device)
        try:
            if path.suffix == ".pt2":
                self.module = load_exported(path)
            else:  # TorchScript is a program: only its own restricted unpickler runs, but trust the file
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore", DeprecationWarning)
                    self.module = torch.jit.load(str(path), map_location=self.device)
            self.module = self.module.to(self.device)
        except NextscaleError as e:
            raise NextscaleError(f"{what} {path}: {e}") from None
        except Exception as e:
            raise NextscaleError(f"{what} {path}: not a loadable {path.suffix} program ({first_line(e)})") from None
        self.path, self.what = path, what
        self.sha256 = file_sha256(path)
        self.name = f"file:{self.sha256[:16]}"
        self.gives_logits = None

    @torch.no_grad()
    def __call__(self, images):
        try:
            out = self.module(images.to(self.device))
        except Exception as e:
            raise NextscaleError(
                f"{self.what} {self.path} failed on a batch of {tuple(images.shape)} uint8 images: {first_line(e)}"
            ) from None
        features, logits = out if isinstance(out, tuple | list) and len(out) == 2 else (out, None)
        for t, role in ((features, "features"), (logits, "logits")):
            if t is not None and (not torch.is_tensor(t) or t.ndim != 2 or t.shape[0] != images.shape[0]):
                shape = tuple(t.shape) if torch.is_tensor(t) else type(t).__name__
                raise NextscaleError(
                    f"{self.what} {self.path} must return N×D {role} for N images; it gave "
                    f"{shape} for N={images.shape[0]}"
                )
        # A single output serves as the logits too: a classifier's logits are features as well.
        self.gives_logits = logits is not None
        return features, features if logits is None else logits


def load_network(
    name: str | os.PathLike = "inception",
    *,
    device="cpu",
    inception_weights=None,
    what: str = "--features",
    judge_seed: int = 0,
) -> FeatureNetwork:
    """A registered name (`presets.REGISTERED`) or a file (`.pt2`, `.pt`). `judge_seed`: the split of the digits
    the digits judge is trained on."""
    if str(name) == "inception":
        return InceptionFeatures(inception_weights, device)
    if str(name) == "digits":
        return DigitsFeatures(judge_seed)
    if str(name) == "fashion":
        return FashionFeatures(device)
    if Path(name).suffix in (".pt2", ".pt") or Path(name).exists():
        return ExportedNetwork(name, device, what)
    raise NextscaleError(f"{what} {name!r}: not a registered network ({', '.join(REGISTERED)}) or a .pt2/.pt file")


@torch.no_grad()
def extract(network: FeatureNetwork, batches, progress=None) -> tuple[np.ndarray, np.ndarray | None]:
    """Features (N, D) and logits (N, C) in float64, over an iterable of uint8 (B, 3, H, W) batches."""
    features, logits = [], []
    for images in batches:
        f, l = network(images)
        features.append(f.double().cpu().numpy())
        if l is not None:
            logits.append(l.double().cpu().numpy())
        if progress is not None:
            progress.update(len(images))
    if not features:
        raise NextscaleError("no images to compute features of")
    return np.concatenate(features), np.concatenate(logits) if logits else None
