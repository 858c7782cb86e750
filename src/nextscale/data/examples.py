"""Real test images to show and to edit, one per class, picked reproducibly: the first test image of each class.

The digits' come from scikit-learn's held-out split (installed with nextscale). Fashion-MNIST's ten ship in
`assets/fashion-examples/` (28×28 grey PNGs, a few KB: Fashion-MNIST, © Zalando SE, MIT licence), so that the demo
and the web page have them where Fashion-MNIST is not installed; `python -m nextscale.data.examples` writes them
again from the IDX files. The demo and `nextscale serve` both take their real images from here.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from ..errors import NextscaleError
from ..files import atomic_write
from .digits import digits8_to_images, digits_splits
from .fashion import FASHION_CLASSES, FASHION_PIXELS, fashion_split, fashion_to_images

FASHION_EXAMPLES_DIR = Path(__file__).resolve().parents[1] / "assets" / "fashion-examples"
DIGIT_CLASSES = tuple(str(d) for d in range(10))  # the digits' class names, as their models record them


def first_of_each_class(labels: np.ndarray, num_classes: int) -> list[int]:
    """The index of each class's first image, in class order."""
    found = [np.flatnonzero(np.asarray(labels) == c) for c in range(num_classes)]
    missing = [c for c, where in enumerate(found) if not where.size]
    if missing:
        raise NextscaleError(f"no image of class {missing[0]} to pick an example from")
    return [int(where[0]) for where in found]


def fashion_example_path(label: int, folder: str | os.PathLike = FASHION_EXAMPLES_DIR) -> Path:
    return Path(folder) / f"{label}-{FASHION_CLASSES[label]}.png"


def extract_fashion_examples(
    out_dir: str | os.PathLike = FASHION_EXAMPLES_DIR, root: str | os.PathLike | None = None
) -> list[Path]:
    """Writes the first Fashion-MNIST test image of each class as `LABEL-NAME.png` (28×28 grey, as in the IDX file;
    the test index in the PNG's `source` text) from the installed data set (`root` as for `fashion_split`)."""
    from PIL import Image
    from PIL.PngImagePlugin import PngInfo

    grey, labels = fashion_split("test", root)
    written = []
    for label, index in enumerate(first_of_each_class(labels, len(FASHION_CLASSES))):
        note = PngInfo()
        note.add_text("source", f"Fashion-MNIST t10k test image {index} (c) Zalando SE, MIT licence")
        path = fashion_example_path(label, out_dir)
        picture = Image.fromarray(np.ascontiguousarray(grey[index]))  # uint8 2-D: grey
        atomic_write(path, lambda tmp, picture=picture, note=note: picture.save(tmp, format="PNG", pnginfo=note))
        written.append(path)
    return written


def shipped_fashion_grey(folder: str | os.PathLike = FASHION_EXAMPLES_DIR) -> np.ndarray:
    """The shipped Fashion-MNIST examples as (10, 28, 28) uint8, class c at row c."""
    from PIL import Image

    grey = []
    for label in range(len(FASHION_CLASSES)):
        path = fashion_example_path(label, folder)
        try:
            with Image.open(path) as picture:
                pixels = np.asarray(picture.convert("L"))
        except OSError as e:
            raise NextscaleError(f"the shipped example {path} cannot be read ({e}): reinstall nextscale") from None
        if pixels.shape != (FASHION_PIXELS, FASHION_PIXELS):
            raise NextscaleError(f"the shipped example {path} is not {FASHION_PIXELS}×{FASHION_PIXELS}: reinstall")
        grey.append(pixels)
    return np.stack(grey)


def fashion_examples() -> torch.Tensor:
    """One real Fashion-MNIST test image per class, (10, 3, 32, 32) in [−1, 1], as the model sees them."""
    return fashion_to_images(shipped_fashion_grey())


def digit_examples() -> torch.Tensor:
    """One held-out digit per class, (10, 3, 32, 32) in [−1, 1]."""
    test = digits_splits()[1]
    return digits8_to_images(test.images8[first_of_each_class(test.labels, len(DIGIT_CLASSES))])


@dataclass(frozen=True)
class ExampleSet:
    """Real images of one data set, one per class, named `PREFIX-CLASS` (`digit-4`, `fashion-sneaker`)."""

    prefix: str
    source: str  # where the images come from, for captions
    classes: tuple[str, ...]
    images: Callable[[], torch.Tensor]  # (len(classes), 3, 32, 32) in [−1, 1], class c at row c

    @property
    def names(self) -> list[str]:
        return [f"{self.prefix}-{name}" for name in self.classes]


EXAMPLE_SETS = (
    ExampleSet("digit", "scikit-learn's handwritten digits", DIGIT_CLASSES, digit_examples),
    ExampleSet("fashion", "Fashion-MNIST (© Zalando SE, MIT licence)", FASHION_CLASSES, fashion_examples),
)


def examples_of(class_names: Sequence[str]) -> ExampleSet | None:
    """The example set of a model trained on it (its class names are the set's), else None."""
    return next((s for s in EXAMPLE_SETS if list(s.classes) == list(class_names)), None)


if __name__ == "__main__":
    for path in extract_fashion_examples():
        print(f"wrote {path}")
