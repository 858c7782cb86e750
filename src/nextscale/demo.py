"""`nextscale demo`: the built-in digits model at work, in one picture, in seconds on a laptop CPU."""

from __future__ import annotations

from pathlib import Path

import torch
from PIL import Image, ImageDraw

from .data import DigitsDataset
from .editing import edit
from .evaluation.edits import EDIT_BOX
from .files import atomic_write
from .sampling import sample
from .sampling.outputs import grid_image, to_uint8
from .weights import load_model

DEMO_SAMPLING = dict(cfg=3.0)  # stronger guidance than the FID default, for looks; the rest is the default
TILE_SCALE = 2


def _section(title: str, images: torch.Tensor, nrow: int) -> Image.Image:
    """A titled grid of (N, 3, H, W) images in [0, 1], upscaled for visibility."""
    big = torch.nn.functional.interpolate(images.float().cpu(), scale_factor=TILE_SCALE, mode="nearest")
    tiles = grid_image(to_uint8(big), nrow=nrow, padding=4)
    canvas = Image.new("RGB", (tiles.width, tiles.height + 18), "white")
    ImageDraw.Draw(canvas).text((4, 3), title, fill=(40, 40, 40))
    canvas.paste(tiles, (0, 18))
    return canvas


def _stack(sections: list[Image.Image]) -> Image.Image:
    width = max(s.width for s in sections)
    out = Image.new("RGB", (width, sum(s.height + 6 for s in sections)), "white")
    y = 0
    for s in sections:
        out.paste(s, (0, y))
        y += s.height + 6
    return out


def one_per_class(data: DigitsDataset, num_classes: int) -> torch.Tensor:
    first = [int((data.labels == c).nonzero()[0]) for c in range(num_classes)]
    return data.images[first]


@torch.no_grad()
def run_demo(
    out: str | Path = "outputs/demo.png", *, model: str = "digits", seed: int = 0, rows: int = 4, device="cpu"
) -> Path:
    """Samples, reconstructions, one pyramid scale by scale, and edits, in one picture at `out`."""
    vae, var = load_model(model, device=device)
    n = var.num_classes
    sections = []
    labels = [c for _ in range(rows) for c in range(n)]
    samples = sample(vae, var, labels, seed=seed, **DEMO_SAMPLING)
    sections.append(_section(f"class-conditional samples, one column per class 0..{n - 1}", samples.images, n))

    real = one_per_class(DigitsDataset("test"), n).to(device)
    recon = vae.reconstruct(real)
    sections.append(
        _section(
            "test digits (top) and their tokenizer reconstructions (bottom)", torch.cat([real, recon]).add(1).div(2), n
        )
    )

    progression = sample(vae, var, [3], seed=seed + 1, return_fhats=True, **DEMO_SAMPLING)
    steps = torch.cat([vae.fhat_to_img(f) for f in progression.fhats]).add(1).div(2)
    scales = " -> ".join(f"{pn}x{pn}" for pn in var.patch_nums)  # the default font has no arrows
    sections.append(_section(f"one sample, scale by scale ({scales})", steps, len(steps)))

    targets = [(c + 1) % n for c in range(n)]
    inpainted = edit(vae, var, real.add(1).div(2), EDIT_BOX, labels=targets, seed=seed, **DEMO_SAMPLING)
    outpainted = edit(
        vae, var, real.add(1).div(2), (0.25, 0.25, 0.75, 0.75), mode="outpaint", seed=seed, **DEMO_SAMPLING
    )
    sections.append(
        _section(
            "zero-shot editing: the test digits above with their centre repainted as digit + 1 (top), "
            "and out-painted around their centre (bottom)",
            torch.cat([inpainted.images, outpainted.images]),
            n,
        )
    )

    out = Path(out)
    picture = _stack(sections)
    atomic_write(out, lambda tmp: picture.save(tmp, format="PNG"))
    return out
