"""Image folders: which folders are classes, broken files skipped and named (never replaced by another image),
and `to_rgb`, the one conversion of a user's image, on real files of every pixel format."""

import io
import json
import warnings

import numpy as np
import pytest
from PIL import Image
from torch.utils.data import DataLoader

from nextscale import NextscaleError
from nextscale.cli import main
from nextscale.data import ImageFolderDataset, to_rgb
from nextscale.data.folders import UnreadableImage


def write_folder(root, classes=("zero", "one", "two"), per_class=2):
    """`root/<class>/NNN.png`, each image a colour of its own (class, index) so that its source is known."""
    for label, name in enumerate(classes):
        (root / name).mkdir(parents=True)
        for i in range(per_class):
            Image.new("RGB", (12, 10), (40 * label, 100 + 50 * i, 7)).save(root / name / f"{i:03d}.png")
    return root


def open_quietly(root, **kwargs):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return ImageFolderDataset(root, 8, **kwargs)


def test_hidden_folders_and_files_are_no_class_and_classes_are_sorted_names(tmp_path):
    root = write_folder(tmp_path / "data")
    (root / ".ipynb_checkpoints").mkdir()
    Image.new("RGB", (12, 10)).save(root / ".ipynb_checkpoints" / "000-checkpoint.png")
    (root / "two" / "._000.png").write_bytes(b"\x00\x05\x16\x07 macOS metadata")  # AppleDouble, from a tar
    (root / "two" / ".cache").mkdir()
    Image.new("RGB", (12, 10)).save(root / "two" / ".cache" / "x.png")
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # nothing to warn about: hidden files are no one's images
        data = ImageFolderDataset(root, 8)
    assert data.classes == ["one", "two", "zero"] and data.num_classes == 3
    assert [(data.name(path), label) for path, label in data.samples] == [
        ("one/000.png", 0),
        ("one/001.png", 0),
        ("two/000.png", 1),
        ("two/001.png", 1),
        ("zero/000.png", 2),
        ("zero/001.png", 2),
    ]


@pytest.mark.parametrize("content", [None, "notes.txt", "x.png"], ids=["empty", "no images", "only broken"])
def test_a_class_folder_without_a_readable_image_is_an_error_naming_it(tmp_path, content):
    root = write_folder(tmp_path / "data")
    (root / "three").mkdir()
    if content:
        (root / "three" / content).write_bytes(b"not an image")
    with pytest.raises(NextscaleError, match=r"data/three holds no (readable image|image files) \(1 such class"):
        open_quietly(root)


def test_a_broken_file_is_skipped_and_named_never_replaced(tmp_path):
    root = write_folder(tmp_path / "data")
    (root / "two" / "x.png").write_bytes(b"\x89PNG not really")  # the last file: it used to become zero/000.png
    with pytest.warns(UserWarning, match=r"skipped 1 file\(s\) that are not images: two/x\.png \(not an image"):
        data = ImageFolderDataset(root, 8, train=False)
    assert len(data) == 6 and data.skipped == [("two/x.png", "not an image file")]
    names = [data.name(path) for path, _ in data.samples]
    assert "two/x.png" not in names and len(set(names)) == len(names)
    for i, (path, label) in enumerate(data.samples):  # every index is its own file, with its own folder's label
        with Image.open(path) as im:
            expected = data._transform(to_rgb(im), None, 0)
        image, got = data[i]
        assert got == label == data.classes.index(path.parent.name) and image.equal(expected)


def cut_short(root):
    """A PNG whose header reads but whose pixels are cut short, in class `one`; the dataset's index of it."""
    picture = io.BytesIO()
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (64, 64, 3), np.uint8)).save(picture, "PNG")
    (root / "one" / "cut.png").write_bytes(picture.getvalue()[:400])
    data = open_quietly(root)
    return data, next(i for i, (path, _) in enumerate(data.samples) if path.name == "cut.png")


CUT_SHORT = r"one/cut\.png: its pixels do not decode \(image file is truncated\): fix or remove it$"


def test_a_file_whose_pixels_do_not_decode_is_named_when_read(tmp_path):
    data, index = cut_short(write_folder(tmp_path / "data"))
    with pytest.raises(UnreadableImage, match=CUT_SHORT):
        data[index]


@pytest.mark.slow  # torch takes 5 s to stop a DataLoader worker after an error
def test_a_file_whose_pixels_do_not_decode_is_named_in_one_line_from_a_worker(tmp_path):
    data, _ = cut_short(write_folder(tmp_path / "data"))
    with pytest.raises(UnreadableImage, match=r"^\S+/data/" + CUT_SHORT):  # not DataLoader's whole traceback
        list(DataLoader(data, batch_size=8, num_workers=1))


def test_tokenize_writes_only_readable_images_and_says_which_it_skipped(tiny_models, tmp_path, capsys):
    vae, _ = tiny_models
    vae.save_pretrained(tmp_path / "vae")
    root = write_folder(tmp_path / "data")
    (root / "two" / "x.png").write_bytes(b"not an image")
    (root / "zero" / "y.jpg").write_bytes(b"")
    argv = ["tokenize", "--data", root, "--tokenizer", tmp_path / "vae", "--out", tmp_path / "tok"]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        code = main([str(a) for a in [*argv, "--workers", "0", "--device", "cpu", "--quiet"]])
    out = capsys.readouterr().out
    assert code == 0 and "6 of 8 images tokenized" in out and "; 2 skipped: two/x.png, zero/y.jpg" in out
    shard = json.loads((tmp_path / "tok" / "shard-00000.json").read_text())
    assert shard["sources"] == [f"{c}/{i:03d}.png" for c in ("one", "two", "zero") for i in range(2)]
    assert shard["labels"] == [0, 0, 1, 1, 2, 2]


def reread(image: Image.Image, format: str = "PNG", **options) -> Image.Image:
    """The image written to a file and opened again, as a user's file is."""
    buffer = io.BytesIO()
    image.save(buffer, format=format, **options)
    buffer.seek(0)
    return Image.open(buffer)


def palette(mode: str = "P") -> Image.Image:
    image = Image.new(mode, (4, 4), 1)
    image.putpalette([0, 0, 0, 10, 20, 30] + [0] * 762)
    return image


def half_transparent(mode: str) -> Image.Image:
    """Top half transparent, bottom half opaque colour (200, 0, 0) (its grey, for LA)."""
    rgba = np.zeros((4, 4, 4), np.uint8)
    rgba[..., 0], rgba[2:, :, 3] = 200, 255
    return Image.fromarray(rgba, "RGBA").convert(mode)


WHITE, RED = [255, 255, 255], [200, 0, 0]
MODES = {  # name: (the file as read back, its top-left and bottom-left pixels after to_rgb)
    "RGBA": (lambda: reread(half_transparent("RGBA")), WHITE, RED),
    "LA": (lambda: reread(half_transparent("LA")), WHITE, [60, 60, 60]),  # 200 red is grey 60 (ITU-R 601-2)
    "P with transparency": (lambda: reread(palette(), transparency=1), WHITE, WHITE),
    "GIF with transparency": (lambda: reread(palette(), "GIF", transparency=1), WHITE, WHITE),
    "P": (lambda: reread(palette()), [10, 20, 30], [10, 20, 30]),
    "RGB with a transparent colour": (
        lambda: reread(Image.new("RGB", (4, 4), (1, 2, 3)), transparency=(1, 2, 3)),
        WHITE,
        WHITE,
    ),
    "I;16 (16-bit grey PNG)": (
        lambda: reread(Image.fromarray(np.full((4, 4), 32896, np.uint16))),
        [128] * 3,
        [128] * 3,
    ),
    "I;16 white": (lambda: reread(Image.fromarray(np.full((4, 4), 65535, np.uint16))), WHITE, WHITE),
    "I (32-bit TIFF)": (lambda: reread(Image.new("I", (4, 4), 257 * 20), "TIFF"), [20] * 3, [20] * 3),
    "CMYK JPEG": (
        lambda: reread(Image.new("CMYK", (4, 4), (0, 255, 255, 0)), "JPEG", quality=100),
        [255, 0, 0],
        [255, 0, 0],
    ),
    "1-bit": (lambda: reread(Image.new("1", (4, 4), 1)), WHITE, WHITE),
}


@pytest.mark.parametrize("mode", list(MODES))
def test_every_pixel_format_becomes_the_rgb_it_shows(mode):
    read, top, bottom = MODES[mode]
    rgb = np.asarray(to_rgb(read()))
    assert rgb.dtype == np.uint8 and rgb.shape == (4, 4, 3)
    np.testing.assert_allclose(rgb[0, 0], top, atol=2)  # JPEG rounds
    np.testing.assert_allclose(rgb[-1, 0], bottom, atol=2)


def test_sixteen_bit_grey_keeps_its_whole_range():
    ramp = (np.arange(16, dtype=np.uint32) * 4369).astype(np.uint16).reshape(4, 4)  # 0 … 65535
    rgb = np.asarray(to_rgb(reread(Image.fromarray(ramp))))
    assert rgb[..., 0].ravel().tolist() == [17 * i for i in range(16)]  # 0 … 255, not almost all white


def test_photos_are_turned_upright_by_their_exif_orientation():
    wide = Image.new("RGB", (8, 4), (0, 0, 255))
    wide.paste((255, 0, 0), (0, 0, 2, 4))  # red on the left
    exif = Image.Exif()
    exif[0x0112] = 6  # "rotate 90° clockwise to view", as a phone held upright writes it
    upright = np.asarray(to_rgb(reread(wide, "JPEG", exif=exif, quality=100)))
    assert (
        upright.shape == (8, 4, 3) and (upright[0, :, 0] > 200).all() and (upright[-1, :, 0] < 50).all()
    )  # red on top


def test_pixel_formats_to_rgb_cannot_convert_are_skipped_and_named_when_listed(tmp_path):
    root = write_folder(tmp_path / "data")
    Image.new("F", (4, 4), 0.5).save(root / "one" / "float.tif")
    with pytest.warns(UserWarning, match=r"one/float\.tif \(32-bit float pixels \(mode F\)"):
        data = ImageFolderDataset(root, 8)
    assert [name for name, _ in data.skipped] == ["one/float.tif"] and len(data) == 6
    with pytest.raises(NextscaleError, match="mode F"):
        to_rgb(Image.open(root / "one" / "float.tif"))


def test_transparency_sits_on_the_background_asked_for():
    mask = reread(half_transparent("RGBA"))
    assert np.asarray(to_rgb(mask, (0, 0, 0)))[0, 0].tolist() == [0, 0, 0]
