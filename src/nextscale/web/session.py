"""A model the server holds (one session each; `models.py` keeps them), and what it does with it: requests checked
into jobs, jobs run with each scale's image sent as it is drawn, and the command line that draws the same images
from the shell."""

from __future__ import annotations

import base64
import functools
import io
import shlex
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch

from ..data.examples import EXAMPLE_SETS, examples_of
from ..data.folders import MASK_BACKGROUND
from ..errors import NextscaleError
from ..sampling.draws import is_raster
from ..sampling.sampler import check_settings_for
from ..sampling.settings import DEFAULTS, SETTING_FIELDS, SamplerConfig, flag, sampler_config
from ..seeding import MAX_SEED, batch_generator
from ..tokenizer import VQVAE
from ..transformer import VAR
from ..weights.classes import class_text, model_class_names
from ..weights.load import check_compatible, check_pair
from . import inputs
from .inputs import BadRequest

MAX_IMAGES = 16  # one batch of `nextscale sample`'s default --batch-size, so one seed reproduces them all
MAX_CFG = 100.0  # far past any useful guidance; much larger weights overflow the logits
FORM_SETTINGS = ("cfg", "top_k", "top_p")  # the sampler settings the page offers (one number each)
SERVER_LIMITS = {"cfg": (0.0, MAX_CFG)}  # the server's own bounds, within what the sampler accepts
# `model` picks the session (`Models.get`); the session itself has no use for it
SAMPLE_FIELDS = ("model", "class", "seed", *FORM_SETTINGS, "n")
EDIT_FIELDS = ("model", "image", "filename", "box", "mask", "mask_filename", "mode", "class", "seed", *FORM_SETTINGS)


def form_settings() -> list[dict]:
    """What the page needs to draw a field for each setting it offers: name, label, help, kind and default."""
    fields = [SETTING_FIELDS[name] for name in FORM_SETTINGS]
    return [
        {
            "name": f.name,
            "label": f.metadata["label"],
            "help": f.metadata["help"],
            "type": f.metadata["kind"].json,
            "default": f.default,
            "flag": flag(f.name),
        }
        for f in fields
    ]


def pngs(images: torch.Tensor) -> list[str]:
    """Images in [0, 1] → base64 PNGs, encoded as `nextscale sample` writes its files."""
    from ..sampling.outputs import save_png, to_uint8

    encoded = []
    for image in to_uint8(images):
        buffer = io.BytesIO()
        save_png(image, buffer)
        encoded.append(base64.b64encode(buffer.getvalue()).decode("ascii"))
    return encoded


@functools.cache
def example_pngs(prefix: str) -> dict[str, str]:
    """An example set's images as PNGs to edit, by name (`digit-4`, `fashion-sneaker`): the model's square view."""
    examples = next(s for s in EXAMPLE_SETS if s.prefix == prefix)
    return dict(zip(examples.names, pngs(examples.images().add(1).mul(0.5)), strict=True))


def examples_for(class_names: Sequence[str]) -> dict[str, str]:
    """The examples of the data a model was trained on (its class names are the set's), else every set's."""
    own = examples_of(class_names)
    return {name: png for s in ([own] if own else EXAMPLE_SETS) for name, png in example_pngs(s.prefix).items()}


def example_png(name: str) -> str | None:
    """Any example by name, whichever model the page shows."""
    prefix = name.partition("-")[0]
    if prefix not in {s.prefix for s in EXAMPLE_SETS}:
        return None
    return example_pngs(prefix).get(name)


@dataclass
class Request:
    """A checked request: what the sampler gets, and the shell command that does the same."""

    kind: str  # "sample" or "edit"
    settings: SamplerConfig  # the page's settings over the defaults
    seed: int
    label: int | None  # None: unconditional
    n: int = 1
    picture: torch.Tensor | None = None  # the model's square view of the image, (1, 3, R, R) in [0, 1]
    mask: torch.Tensor | tuple | None = None  # a box, or the mask's cover of the last scale's tokens
    mode: str = "inpaint"
    command: str = ""
    stream: bool = True  # whether each scale's images are wanted


class Session:
    """One model in memory, named `title` on the page; `model_args` name it on the command line (["--model",
    "digits"], …)."""

    def __init__(
        self,
        vae: VQVAE,
        var: VAR,
        model_args: list[str],
        title: str,
        device_arg: str | None = None,
        max_images: int = MAX_IMAGES,
    ):
        if is_raster(var):
            check_compatible(vae, var)
        else:
            check_pair(vae, var, "Session(vae, var, …)")
        self.vae, self.var = vae.eval(), var.eval()
        self.model_args, self.title, self.device_arg = model_args, title, device_arg
        self.max_images = max_images
        self.device = var.head.weight.device
        self.resolution = vae.config.resolution
        self.names = model_class_names(var)
        self.examples = examples_for(self.names)

    def info(self) -> dict:
        return {
            "model": self.title,
            "resolution": self.resolution,
            "scales": list(self.var.patch_nums),
            "kind": self.var.model_type,
            "classes": self.names,
            "max_images": self.max_images,
            "examples": list(self.examples),
            "settings": form_settings(),
            "defaults": {**{name: getattr(DEFAULTS, name) for name in FORM_SETTINGS}, "seed": 0, "n": 1},
            "limits": {"upload_bytes": inputs.MAX_UPLOAD_BYTES, "side": inputs.MAX_SIDE},
        }

    # ---- requests → checked jobs ---------------------------------------------------------------------------

    def _common(self, body: dict, kind: str) -> Request:
        values = {}
        for name in FORM_SETTINGS:
            read = inputs.integer if SETTING_FIELDS[name].metadata["kind"].json == "integer" else inputs.number
            values[name] = read(body, name, getattr(DEFAULTS, name), *SERVER_LIMITS.get(name, ()))
        try:
            settings = sampler_config(**values)
            check_settings_for(settings, self.var)
        except NextscaleError as e:
            raise BadRequest(str(e)) from None
        seed = inputs.integer(body, "seed", 0, 0, MAX_SEED)
        return Request(kind, settings, seed, inputs.class_id(body, self.names))

    def sample_request(self, body: dict, stream: bool = True) -> Request:
        inputs.check_fields(body, SAMPLE_FIELDS)
        request = self._common(body, "sample")
        request.stream = stream
        request.n = inputs.integer(body, "n", 1, 1, self.max_images)
        which = ["--unconditional"] if request.label is None else ["--class", class_text(request.label, self.names)]
        batch = ["--batch-size", str(request.n)] if request.n > 16 else []  # one batch: one generator, as here
        request.command = self._command("sample", *which, "--n", str(request.n), *batch, request=request, out="samples")
        return request

    def edit_request(self, body: dict, stream: bool = True) -> Request:
        from ..editing.edit import prepare_images
        from ..editing.masks import keep_masks_for, region_on_token_grid

        inputs.check_fields(body, EDIT_FIELDS)
        if is_raster(self.var):
            raise BadRequest("editing repaints a region scale by scale: a raster-order model cannot")
        if ("box" in body) == ("mask" in body):
            raise BadRequest("give exactly one of box [y0, x0, y1, x1] and mask (an image: white = repaint)")
        request = self._common(body, "edit")
        request.stream = stream
        request.mode = body.get("mode", "inpaint")
        if request.mode not in ("inpaint", "outpaint"):
            raise BadRequest(f"mode must be inpaint or outpaint, got {request.mode!r}")
        names = {
            field: inputs.filename(body, field, default)
            for field, default in (("filename", "input.png"), ("mask_filename", "mask.png"))
        }
        # Only what the job needs waits in line: the model's view of the image, the mask's cover of the tokens.
        request.picture = prepare_images(inputs.image(body, "image"), self.resolution)
        if "box" in body:
            request.mask = inputs.box(body)
            region = ["--box", ",".join(map(repr, request.mask))]
        else:
            mask = inputs.image(body, "mask", MASK_BACKGROUND)
            request.mask = region_on_token_grid(mask, self.var.patch_nums[-1])
            region = [f"--mask={names['mask_filename']}"]
        try:
            keep_masks_for(request.mask, request.mode, self.var.patch_nums)  # a mask that edits nothing
        except NextscaleError as e:
            raise BadRequest(str(e)) from None
        mode = ["--outpaint"] if request.mode == "outpaint" else []
        label = [] if request.label is None else ["--class", class_text(request.label, self.names)]
        request.command = self._command(
            "edit", f"--image={names['filename']}", *region, *mode, *label, request=request, out="edited.png"
        )
        return request

    def _command(self, command: str, *args: str, request: Request, out: str) -> str:
        device = [] if self.device_arg in (None, "auto") else ["--device", self.device_arg]
        settings = [part for name in FORM_SETTINGS for part in (flag(name), repr(getattr(request.settings, name)))]
        return shlex.join(
            ["nextscale", command, *self.model_args, *args, "--seed", str(request.seed), *settings, *device]
            + ["--out", out]
        )

    # ---- running a job (on the worker thread) ------------------------------------------------------------

    def run(self, request: Request, emit: Callable[[dict], None]) -> dict:
        """Draws the request, emitting each scale's images; returns the result's fields. The generator and the
        call are those of `nextscale sample` / `nextscale edit` with the same settings (batch 0, image 0)."""
        from ..editing import edit
        from ..sampling import fhat_to_images, sample

        scales = self.var.patch_nums
        streamed = request.stream and not is_raster(self.var)  # one token at a time: no scales to show
        if streamed:
            emit({"event": "scales", "scales": list(scales), "resolution": self.resolution})

        def on_scale(si: int, f_hat: torch.Tensor) -> None:
            emit({"event": "scale", "index": si, "side": scales[si], "images": pngs(fhat_to_images(self.vae, f_hat))})

        generator = batch_generator(request.seed, 0, self.device)
        common = dict(generator=generator, on_scale=on_scale if streamed else None, config=request.settings)
        result = {"seed": request.seed, "command": request.command}
        if request.kind == "sample":
            labels = [self.var.num_classes if request.label is None else request.label] * request.n
            out = sample(self.vae, self.var, labels, **common)
            return {**result, "images": pngs(out.images), "labels": labels}
        out = edit(self.vae, self.var, request.picture, request.mask, mode=request.mode, labels=request.label, **common)
        return {**result, "images": pngs(out.images), "input": pngs(request.picture)[0]}
