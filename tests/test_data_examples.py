"""The real images the demo and the web page show: one per class, picked reproducibly, and for Fashion-MNIST
shipped with the package (so that nothing needs the data set installed)."""

import numpy as np
import pytest
import torch
from PIL import Image

from nextscale.data.examples import (
    DIGIT_CLASSES,
    EXAMPLE_SETS,
    FASHION_EXAMPLES_DIR,
    examples_of,
    extract_fashion_examples,
    first_of_each_class,
    shipped_fashion_grey,
)
from nextscale.data.fashion import FASHION_CLASSES, fashion_to_images
from nextscale.errors import NextscaleError


def test_the_first_image_of_each_class_is_picked():
    assert first_of_each_class(np.array([2, 0, 2, 1, 0]), 3) == [1, 3, 0]
    with pytest.raises(NextscaleError, match="no image of class 2"):
        first_of_each_class(np.array([0, 1, 1]), 3)


def test_the_shipped_fashion_examples_are_small_credited_and_as_the_model_sees_them():
    files = sorted(FASHION_EXAMPLES_DIR.iterdir())
    assert sum(f.stat().st_size for f in files) < 20_000
    notes = {f.name: f.read_text() for f in files if f.suffix != ".png"}
    assert "Zalando SE" in notes["LICENSE"] and "MIT" in notes["LICENSE"] and "Xiao" in notes["README.md"]
    grey = shipped_fashion_grey()
    assert grey.shape == (10, 28, 28) and grey.dtype == np.uint8
    images = EXAMPLE_SETS[1].images()
    assert torch.equal(images, fashion_to_images(grey)) and images.shape == (10, 3, 32, 32)
    assert EXAMPLE_SETS[1].names[9] == "fashion-ankle-boot" and EXAMPLE_SETS[0].names[4] == "digit-4"


def test_the_shipped_fashion_examples_are_what_the_extraction_writes(tmp_path):
    from nextscale.data.fashion import fashion_split
    from tests.helpers import fashion_data

    fashion_data()  # skips where Fashion-MNIST is not installed (fails under CI's NEXTSCALE_REQUIRE_FASHION=1)
    written = extract_fashion_examples(tmp_path)
    assert [p.name for p in written] == [f"{i}-{name}.png" for i, name in enumerate(FASHION_CLASSES)]
    assert np.array_equal(shipped_fashion_grey(tmp_path), shipped_fashion_grey())
    grey, labels = fashion_split("test")
    for label, path in enumerate(written):
        with Image.open(path) as picture:
            index = int(picture.text["source"].split("test image ")[1].split()[0])
        assert labels[index] == label and not (labels[:index] == label).any()  # the first of its class
        assert np.array_equal(grey[index], shipped_fashion_grey()[label])


def test_a_model_gets_the_examples_of_the_data_its_class_names_say_it_was_trained_on():
    assert examples_of(DIGIT_CLASSES).prefix == "digit"
    assert examples_of(list(FASHION_CLASSES)).prefix == "fashion"
    assert examples_of(["cat", "dog"]) is None and examples_of([str(d) for d in range(9)]) is None


def test_a_damaged_install_names_the_missing_example(tmp_path):
    extract = tmp_path / "examples"
    extract.mkdir()
    with pytest.raises(NextscaleError, match=r"0-t-shirt\.png cannot be read .*reinstall"):
        shipped_fashion_grey(extract)
