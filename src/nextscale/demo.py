"""`nextscale demo`: the built-in models at work, in one picture, in seconds on a laptop CPU. For each model (the
digits, then Fashion-MNIST's garments): class-conditional samples of every class, real test images beside their
tokenizer reconstructions, one sample decoded scale by scale, and zero-shot edits of the real images.

The panels are computed first (`model_panel`: images and their captions), then drawn (`draw_panels`)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import torch
from PIL import Image, ImageDraw, ImageFont

from .data.examples import examples_of
from .editing import edit
from .editing.edit import prepare_images
from .evaluation.edits import EDIT_BOX
from .files import atomic_write
from .sampling import sample
from .sampling.outputs import to_uint8
from .weights import load_model
from .weights.classes import model_class_names

DEMO_MODELS = ("digits", "fashion")  # the built-in models the demo shows, in order
DEMO_SAMPLING = dict(cfg=3.0)  # stronger guidance than the FID default, for looks; the rest is the default
PYRAMID_CLASS = 3  # the class of the sample drawn scale by scale
OUTPAINT_KEEP = (0.25, 0.25, 0.75, 0.75)  # the centre kept by the out-painting
TILE_SCALE = 2  # 32 px images drawn at 64 px
PAD = 4  # between tiles
MARGIN = 8  # around the picture and between sections
HEADING_SIZE, TITLE_SIZE, CAPTION_SIZE = 17, 12, 11  # font sizes in px


@dataclass
class Row:
    """Images side by side, (N, 3, H, W) in [0, 1], with a caption under each (or none)."""

    images: torch.Tensor
    captions: list[str] | None = None


@dataclass
class Section:
    title: str
    rows: list[Row]


@dataclass
class Panel:
    """One model's part of the picture."""

    heading: str
    sections: list[Section] = field(default_factory=list)


@torch.no_grad()
def model_panel(model: str, *, seed: int = 0, rows: int = 4, device="cpu") -> Panel:
    """Samples of every class, reconstructions, a pyramid and edits of `model` (a name or a model directory). The
    real images are the shipped examples of the data the model was trained on (found by its class names); a model
    of other classes gets the samples and the pyramid only."""
    vae, var = load_model(model, device=device)
    names, n = model_class_names(var), var.num_classes
    examples = examples_of(names)
    scales = " -> ".join(f"{pn}x{pn}" for pn in var.patch_nums)  # the default font has no arrows, no ×
    res = vae.config.resolution
    source = examples.source if examples else "a model of its own"
    panel = Panel(f"{model}: {source}  ·  {res}x{res} px, {len(var.patch_nums)} scales, {n} classes")

    labels = [c for _ in range(rows) for c in range(n)]
    samples = sample(vae, var, labels, seed=seed, **DEMO_SAMPLING).images
    sample_rows = [Row(samples[r * n : (r + 1) * n]) for r in range(rows)]
    sample_rows[-1].captions = list(names)
    panel.sections.append(
        Section(f"class-conditional samples, one column per class (guidance {DEMO_SAMPLING['cfg']:g})", sample_rows)
    )

    if examples is not None:
        real01 = prepare_images(examples.images().add(1).div(2), res).to(device)  # at the model's resolution
        recon = vae.reconstruct(real01.mul(2).sub(1))
        panel.sections.append(
            Section(
                "real test images (top) and their tokenizer reconstructions (bottom)",
                [Row(real01), Row(recon.add(1).div(2), list(names))],
            )
        )

    pyramid_class = min(PYRAMID_CLASS, n - 1)
    progression = sample(vae, var, [pyramid_class], seed=seed + 1, return_fhats=True, **DEMO_SAMPLING)
    steps = torch.cat([vae.fhat_to_img(f) for f in progression.fhats]).add(1).div(2)
    panel.sections.append(
        Section(
            f"one sample of class {names[pyramid_class]}, decoded scale by scale ({scales})",
            [Row(steps, [f"{pn}x{pn}" for pn in var.patch_nums])],
        )
    )

    if examples is not None:
        targets = [(c + 1) % n for c in range(n)]
        inpainted = edit(vae, var, real01, EDIT_BOX, labels=targets, seed=seed, **DEMO_SAMPLING)
        outpainted = edit(vae, var, real01, OUTPAINT_KEEP, mode="outpaint", seed=seed, **DEMO_SAMPLING)
        panel.sections += [
            Section(
                "zero-shot in-painting: the centre of each real image above repainted as the class named below",
                [Row(inpainted.images, [names[t] for t in targets])],
            ),
            Section(
                "zero-shot out-painting: all but the centre of each real image repainted", [Row(outpainted.images)]
            ),
        ]
    return panel


def _font(size: int) -> ImageFont.ImageFont:
    try:
        return ImageFont.load_default(size=size)
    except TypeError:  # Pillow before 10.1: only the small bitmap font
        return ImageFont.load_default()


def _text_width(draw: ImageDraw.ImageDraw, text: str, font) -> int:
    left, _, right, _ = draw.textbbox((0, 0), text, font=font)
    return right - left


def _fit(draw: ImageDraw.ImageDraw, text: str, font, width: int) -> str:
    """`text`, shortened with an ellipsis where it is wider than `width`."""
    while len(text) > 1 and _text_width(draw, text, font) > width:
        text = text[:-2] + "…"
    return text


def draw_panels(panels: Sequence[Panel]) -> Image.Image:
    """The panels one above the other: each a heading, then its sections' titles, tiles and captions."""
    heading, title, caption = _font(HEADING_SIZE), _font(TITLE_SIZE), _font(CAPTION_SIZE)
    measure = ImageDraw.Draw(Image.new("RGB", (1, 1)))
    tile = max(int(row.images.shape[-1]) for p in panels for s in p.sections for row in s.rows) * TILE_SCALE
    columns = max(len(row.images) for p in panels for s in p.sections for row in s.rows)
    width = 2 * MARGIN + columns * (tile + PAD) - PAD

    def line(font) -> int:
        return measure.textbbox((0, 0), "Ag", font=font)[3] + 5

    # One pass lays everything out; the second draws it: (kind, y, payload).
    items, y = [], MARGIN
    for i, panel in enumerate(panels):
        if i:
            items.append(("rule", y, None))
            y += MARGIN
        items.append(("heading", y, panel.heading))
        y += line(heading) + 2
        for section in panel.sections:
            items.append(("title", y, section.title))
            y += line(title)
            for row in section.rows:
                items.append(("tiles", y, row.images))
                y += tile + PAD
                if row.captions:
                    items.append(("captions", y - PAD + 1, row.captions))
                    y += line(caption)
            y += MARGIN
    canvas = Image.new("RGB", (width, y), "white")
    draw = ImageDraw.Draw(canvas)
    for kind, top, payload in items:
        if kind == "rule":
            draw.line([(MARGIN, top), (width - MARGIN, top)], fill=(200, 204, 212), width=1)
        elif kind == "heading":
            draw.text(
                (MARGIN, top), _fit(measure, payload, heading, width - 2 * MARGIN), font=heading, fill=(20, 24, 32)
            )
        elif kind == "title":
            draw.text((MARGIN, top), _fit(measure, payload, title, width - 2 * MARGIN), font=title, fill=(60, 66, 78))
        elif kind == "tiles":
            big = torch.nn.functional.interpolate(payload.float().cpu(), scale_factor=TILE_SCALE, mode="nearest")
            for j, pixels in enumerate(to_uint8(big)):
                canvas.paste(Image.fromarray(pixels), (MARGIN + j * (tile + PAD), top))
        else:
            for j, text in enumerate(payload):
                text = _fit(measure, text, caption, tile + PAD)
                x = MARGIN + j * (tile + PAD) + (tile - _text_width(measure, text, caption)) // 2
                draw.text((x, top), text, font=caption, fill=(60, 66, 78))
    return canvas


def run_demo(
    out: str | Path = "outputs/demo.png",
    *,
    models: Sequence[str] = DEMO_MODELS,
    seed: int = 0,
    rows: int = 4,
    device="cpu",
) -> Path:
    """Each of `models` (names or model directories) at work, one panel each, in one picture at `out`."""
    panels = [model_panel(model, seed=seed, rows=rows, device=device) for model in models]
    picture = draw_panels(panels)
    out = Path(out)
    atomic_write(out, lambda tmp: picture.save(tmp, format="PNG"))
    return out
