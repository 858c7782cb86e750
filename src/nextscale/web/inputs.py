"""What a request may carry, checked before it joins the line: every bad field becomes a 4xx with a message that
names it, never an exception from inside the model."""

from __future__ import annotations

import base64
import binascii
import io
import math

from PIL import Image

from ..data.folders import BACKGROUND, to_rgb
from ..errors import NextscaleError, SettingError

MAX_UPLOAD_BYTES = 10 * 1024 * 1024  # an uploaded image or mask file
MAX_SIDE = 4096  # pixels, either side: checked from the header, before any pixel is decoded
MAX_BODY_BYTES = 2 * (MAX_UPLOAD_BYTES * 4 // 3 + 4) + 64 * 1024  # two base64 files and the settings
IMAGE_FORMATS = ("PNG", "JPEG", "WEBP", "GIF", "BMP", "TIFF")


class BadRequest(Exception):
    """A request the server refuses: `status` is its HTTP code (4xx; 500 where the model it names fails to load),
    the message says which field and why."""

    def __init__(self, message: str, status: int = 400):
        super().__init__(message)
        self.status = status


def check_fields(body: dict, known: tuple[str, ...]) -> None:
    unknown = sorted(set(body) - set(known))
    if unknown:
        raise BadRequest(f"unknown field {unknown[0]!r}; the fields are: {', '.join(known)}")


def integer(body: dict, name: str, default: int, low: int | None = None, high: int | None = None) -> int:
    """An integer field (a JSON number or a numeric string, as an HTML form sends it), in [low, high]."""
    value = body.get(name, default)
    if isinstance(value, str):
        try:
            value = int(value.strip())
        except ValueError:
            raise BadRequest(f"{name} must be an integer, got {value!r}") from None
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    if isinstance(value, bool) or not isinstance(value, int):
        raise BadRequest(f"{name} must be an integer, got {value!r}")
    if (low is not None and value < low) or (high is not None and value > high):
        bounds = f"in [{low}, {high}]" if high is not None else f"at least {low}"
        raise BadRequest(f"{name} must be {bounds}, got {value}")
    return value


def number(body: dict, name: str, default: float, low: float | None = None, high: float | None = None) -> float:
    """A finite number field (a JSON number or a numeric string), in [low, high]."""
    value = body.get(name, default)
    if isinstance(value, str):
        try:
            value = float(value.strip())
        except ValueError:
            raise BadRequest(f"{name} must be a number, got {value!r}") from None
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise BadRequest(f"{name} must be a number, got {value!r}")
    try:
        value = float(value)  # a JSON integer may have hundreds of digits
    except OverflowError:
        value = math.inf
    if not math.isfinite(value):
        raise BadRequest(f"{name} must be a finite number, got {body.get(name)!r}"[:200])
    if (low is not None and value < low) or (high is not None and value > high):
        bounds = f"in [{low:g}, {high:g}]" if high is not None else f"at least {low:g}"
        raise BadRequest(f"{name} must be {bounds}, got {value:g}")
    return float(value)


def class_id(body: dict, names: list[str]) -> int | None:
    """`class`: an id (a number, or a numeric string as the page sends its choice), a name by `class_index`'s
    rule, or null / absent for unconditional."""
    from ..weights.classes import class_index

    value = body.get("class")
    if value is None or value == "":
        return None
    if not isinstance(value, str) or value.strip().lstrip("-").isdecimal():
        value = integer(body, "class", 0, -(2**63))
    try:
        return class_index(value, names)
    except SettingError as e:
        raise BadRequest(e.reworded("class")) from None


def filename(body: dict, name: str, default: str) -> str:
    """A file name for the printed command line (the page sends the uploaded file's)."""
    value = body.get(name) or default
    if not isinstance(value, str) or len(value) > 255 or any(c in value for c in "\0\n\r"):
        raise BadRequest(f"{name} must be a file name, got {str(value)[:80]!r}")
    return value


def box(body: dict) -> tuple[float, float, float, float]:
    """`box`: [y0, x0, y1, x1] (or "y0,x0,y1,x1") as fractions of the model's square view of the image."""
    value = body["box"]
    if isinstance(value, str):
        value = value.split(",")
    if not isinstance(value, list) or len(value) != 4:
        raise BadRequest(f"box must be four numbers [y0, x0, y1, x1] in [0, 1], got {body['box']!r}")
    coords = {f"box[{i}]": v for i, v in enumerate(value)}
    y0, x0, y1, x1 = (number(coords, name, 0.0, -math.inf) for name in coords)
    if not all(0.0 <= v <= 1.0 for v in (y0, x0, y1, x1)):
        raise BadRequest(f"box {[y0, x0, y1, x1]} reaches outside the image: coordinates are fractions in [0, 1]")
    if y0 >= y1 or x0 >= x1:
        raise BadRequest(f"box {[y0, x0, y1, x1]} is empty: it needs y0 < y1 and x0 < x1")
    return y0, x0, y1, x1


def image(body: dict, name: str, background: tuple[int, int, int] = BACKGROUND) -> Image.Image:
    """A base64 image file (a data: URL works too) → RGB by `to_rgb` (transparency on `background`), refused when
    it is not an image PIL reads, over MAX_UPLOAD_BYTES, or over MAX_SIDE pixels a side (so decompression bombs
    never decode)."""
    text = body.get(name)
    if not isinstance(text, str) or not text:
        raise BadRequest(f"{name} must be an image file in base64 (or a data: URL)")
    if text.startswith("data:"):
        text = text.partition(",")[2]
    text = "".join(text.split())  # `base64` wraps its output at 76 columns
    if len(text) > MAX_UPLOAD_BYTES * 4 // 3 + 4:
        raise BadRequest(f"{name} is over the {MAX_UPLOAD_BYTES // 2**20} MB limit", status=413)
    try:
        raw = base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        raise BadRequest(f"{name} is not valid base64") from None
    if len(raw) > MAX_UPLOAD_BYTES:
        raise BadRequest(f"{name} is {len(raw) / 2**20:.1f} MB: the limit is {MAX_UPLOAD_BYTES // 2**20} MB", 413)
    try:
        with Image.open(io.BytesIO(raw), formats=IMAGE_FORMATS) as picture:
            width, height = picture.size
            if max(width, height) > MAX_SIDE:
                raise BadRequest(f"{name} is {width}×{height} pixels: the limit is {MAX_SIDE} a side", 413)
            return to_rgb(picture, background)
    except BadRequest:
        raise
    except NextscaleError as e:  # a pixel format to_rgb does not convert
        raise BadRequest(f"{name}: {e}") from None
    except Image.DecompressionBombError:  # PIL's own guard fires while reading the header of the largest ones
        raise BadRequest(
            f"{name} claims hundreds of megapixels (a decompression bomb?): the limit is {MAX_SIDE} pixels a side", 413
        ) from None
    except Image.UnidentifiedImageError:
        raise BadRequest(
            f"{name} is not an image this server reads ({', '.join(IMAGE_FORMATS)}): unrecognised format"
        ) from None
    except (OSError, ValueError, SyntaxError, EOFError) as e:
        why = (str(e).splitlines() or [type(e).__name__])[0]
        raise BadRequest(f"{name} is not an image this server reads ({', '.join(IMAGE_FORMATS)}): {why}") from None
