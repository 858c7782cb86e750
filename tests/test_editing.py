"""Zero-shot editing: golden parity through the public API, forced tokens, masks, and bad input."""

import numpy as np
import pytest
import torch
from PIL import Image

from nextscale import NextscaleError, golden, save_model
from nextscale.cli import main
from nextscale.editing import box_region, edit, region_on_token_grid, scale_keep_masks
from nextscale.golden import build_models, read_reference
from tests.helpers import golden_files


@pytest.mark.parametrize("index", [0, 1])
def test_box_api_reproduces_the_golden_inpaint_run(index):
    files = golden_files()
    if index >= len(files):
        pytest.skip("only one reference file")
    meta, tensors = read_reference(str(files[index]))
    vae, var = build_models(meta, tensors)
    run = meta["sampling"]["inpaint"]
    out = edit(
        vae,
        var,
        (tensors["in.img"] + 1) / 2,
        tuple(run["edit_box"]),
        labels=tensors["in.labels"],
        seed=run["g_seed"],
        cfg=run["cfg"],
        top_k=run["top_k"],
        top_p=run["top_p"],
    )
    for k, tokens in enumerate(out.tokens):
        assert torch.equal(tokens, tensors[f"out.sample.inpaint.idx.{k}"])
    assert golden.relative_error(out.images, tensors["out.sample.inpaint.img"]) <= golden.IMAGE_TOL


def test_kept_positions_hold_the_input_tokens_at_every_scale(tiny_models):
    vae, var = tiny_models
    images = torch.rand(2, 3, vae.config.resolution, vae.config.resolution)
    out = edit(vae, var, images, (0.25, 0.25, 0.75, 0.75), labels=[1, 2], seed=0, cfg=2.0)
    given = vae.img_to_idx(images * 2 - 1)
    for si, (keep, final, drawn) in enumerate(zip(out.keep_masks, out.final_tokens, out.tokens)):
        keep = keep.expand_as(final)
        assert torch.equal(final[keep], given[si][keep])
        assert torch.equal(final[~keep], drawn[~keep])
        if var.patch_nums[si] ** 2 <= 3:
            assert keep.all()
    # the image was decoded from exactly those tokens: the forced ones entered f̂ at every scale
    torch.testing.assert_close(vae.idx_to_img(out.final_tokens).add(1).div(2), out.images)
    again = edit(vae, var, images, (0.25, 0.25, 0.75, 0.75), labels=[1, 2], seed=0, cfg=2.0)
    assert torch.equal(again.images, out.images)


def test_all_keep_mask_returns_the_reconstruction(tiny_models):
    vae, var = tiny_models
    images = torch.rand(2, 3, vae.config.resolution, vae.config.resolution)
    keep_all = [torch.ones(1, pn * pn, dtype=torch.bool) for pn in var.patch_nums]
    out = edit(vae, var, images, keep_all, seed=3, cfg=1.0)
    torch.testing.assert_close(out.images, vae.reconstruct(images * 2 - 1).add(1).div(2))


def test_keep_coarse_scales_and_outpaint(tiny_models):
    vae, var = tiny_models
    images = torch.rand(1, 3, vae.config.resolution, vae.config.resolution)
    out = edit(vae, var, images, (0.0, 0.0, 1.0, 0.5), mode="outpaint", keep_coarse_scales=2, seed=1)
    assert out.keep_masks[1].all()  # the first two scales are forced whole
    region = box_region((0.0, 0.0, 1.0, 0.5), var.patch_nums[-1])
    assert torch.equal(out.keep_masks[-1].view(region.shape), region.bool())  # out-paint keeps the region


def test_masks_of_any_size_and_the_reference_resize_rule():
    big = torch.zeros(64, 64)
    big[16:48, 16:48] = 1
    grid = region_on_token_grid(big, 4)
    assert torch.equal(grid, box_region((0.25, 0.25, 0.75, 0.75), 4))
    masks = scale_keep_masks(1 - grid, (1, 2, 4))
    assert masks[0].all() and masks[2].sum() == 12
    pil = Image.fromarray((big.numpy() * 255).astype(np.uint8))
    assert torch.equal(region_on_token_grid(pil, 4), grid)
    wide = torch.zeros(64, 96)  # a mask drawn on a whole 3:2 photo: cropped to its centre, as the photo is
    wide[16:48, 32:64] = 1
    assert torch.equal(region_on_token_grid(wide, 4), grid)


def test_feathered_blend_keeps_the_original_far_from_the_region(tiny_models):
    vae, var = tiny_models
    images = torch.rand(1, 3, vae.config.resolution, vae.config.resolution)
    out = edit(vae, var, images, (0.5, 0.5, 1.0, 1.0), feather=1.0, seed=2)
    torch.testing.assert_close(out.images[..., :2, :2], images[..., :2, :2])


@pytest.mark.parametrize(
    "mask, message",
    [
        ((0.5, 0.0, 0.5, 1.0), "is empty"),
        ((-0.1, 0.0, 0.5, 1.0), r"outside \[0, 1\]"),
        (torch.zeros(8, 8), "the mask is empty"),
        (torch.ones(8, 8), "covers everything"),
    ],
)
def test_bad_masks(tiny_models, mask, message):
    vae, var = tiny_models
    with pytest.raises(NextscaleError, match=message):
        edit(vae, var, torch.rand(1, 3, 8, 8), mask, seed=0)


@pytest.fixture
def edit_setup(tiny_models, tmp_path):
    model = save_model(*tiny_models, tmp_path / "m")
    Image.new("RGB", (20, 12), (200, 30, 30)).save(tmp_path / "in.png")
    (tmp_path / "bad.png").write_bytes(b"not a png")
    mask = Image.new("L", (8, 8), 0)
    mask.paste(255, (2, 2, 6, 6))
    mask.save(tmp_path / "mask.png")
    Image.new("L", (8, 8), 0).save(tmp_path / "empty.png")
    Image.new("L", (8, 8), 255).save(tmp_path / "full.png")
    return model, tmp_path


def test_edit_cli_writes_an_image_and_says_it_resized(edit_setup, capsys):
    model, d = edit_setup
    code = main(
        [
            "edit",
            "--model",
            str(model),
            "--image",
            str(d / "in.png"),
            "--mask",
            str(d / "mask.png"),
            "--class",
            "1",
            "--seed",
            "0",
            "--out",
            str(d / "out.png"),
        ]
    )
    captured = capsys.readouterr()
    assert code == 0 and Image.open(d / "out.png").size == (8, 8)
    assert "resized and centre-cropped from 20×12" in captured.err
    folder = d / "folder"
    folder.mkdir()
    for i in range(2):
        Image.new("RGB", (8, 8), (i * 100, 0, 0)).save(folder / f"{i}.png")
    code = main(
        [
            "edit",
            "--model",
            str(model),
            "--image",
            str(folder),
            "--box",
            "0.25,0.25,0.75,0.75",
            "--outpaint",
            "--seed",
            "0",
            "--out",
            str(d / "edited"),
        ]
    )
    assert code == 0 and sorted(p.name for p in (d / "edited").glob("*.png")) == ["0.png", "1.png"]


@pytest.mark.parametrize(
    "extra, message",
    [
        (["--image", "bad.png", "--box", "0.2,0.2,0.8,0.8"], "not a readable image"),
        (["--image", "missing.png", "--box", "0.2,0.2,0.8,0.8"], "no such file"),
        (["--image", "in.png", "--mask", "empty.png"], "the mask is empty"),
        (["--image", "in.png", "--mask", "full.png"], "covers everything"),
        (["--image", "in.png", "--box", "0.2,0.9,0.8,0.8"], "is empty"),
        (["--image", "in.png", "--box", "0,0,1.5,1"], r"outside \[0, 1\]"),
        (["--image", "in.png", "--box", "0,0,1"], "four numbers"),
        (["--image", "in.png", "--box", "0.2,0.2,0.8,0.8", "--class", "9"], "--class 9 is out of range"),
        (["--image", "in.png"], "exactly one of --mask"),
    ],
)
def test_edit_cli_bad_input(edit_setup, capsys, extra, message):
    import re

    model, d = edit_setup
    args = [a if not a.endswith(".png") else str(d / a) for a in extra]
    code = main(["edit", "--model", str(model), *args, "--seed", "0", "--out", str(d / "o.png")])
    err = capsys.readouterr().err
    assert code == 2 and len(err.strip().splitlines()) == 1 and re.search(message, err), err


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (dict(images=torch.rand(1, 3, 8, 8) * 2), r"image tensors must lie in \[0, 1\]"),
        (dict(images=torch.rand(1, 8, 8, 3)), r"float \(B, 3, H, W\) tensor in \[0, 1\], got a torch.float32 tensor"),
        (dict(keep_coarse_scales=4), r"keep_coarse_scales must be an integer in \[0, 3\]"),
        (dict(keep_coarse_scales=-1), r"keep_coarse_scales must be an integer in \[0, 3\]"),
        (dict(feather=-1.0), r"feather must lie in \[0, 2\]"),
        (dict(feather=100.0), r"feather must lie in \[0, 2\]"),
        (dict(mode="sideways"), "mode must be one of inpaint, outpaint"),
        (dict(labels=[0, 1]), "2 labels for 1 images"),
        (dict(mask=(0.1, 0.2)), r"a box is four numbers"),
        (dict(mask=torch.ones(5)), r"an \(h, w\) / \(B, h, w\) tensor, got shape \(5,\)"),
    ],
)
def test_edit_refuses_bad_input(tiny_models, kwargs, message):
    vae, var = tiny_models
    args = {"images": torch.rand(1, 3, 8, 8), "mask": (0.25, 0.25, 0.75, 0.75), **kwargs}
    with pytest.raises(NextscaleError, match=message):
        edit(vae, var, args.pop("images"), args.pop("mask"), seed=0, **args)


@pytest.mark.parametrize(
    "mask, message",
    [
        ((0.0, 0.0, 1.0, 1.0), "covers the whole image: out-painting would generate nothing"),
        (torch.zeros(8, 8), "the region is empty: out-painting would keep nothing"),
    ],
)
def test_outpaint_masks_are_checked_for_what_outpainting_generates(tiny_models, mask, message):
    vae, var = tiny_models
    with pytest.raises(NextscaleError, match=message):
        edit(vae, var, torch.rand(1, 3, 8, 8), mask, mode="outpaint", seed=0)


def edit_cli(model, image, mask, out, *extra):
    argv = ["edit", "--model", model, "--image", image, "--mask", mask, "--seed", "0", "--out", out, *extra]
    return main([str(a) for a in argv])


def test_edit_cli_reads_transparency_as_the_user_sees_it(edit_setup, capsys):
    """An image's transparent pixels sit on white; a mask's are unpainted (kept), as its black ones."""
    model, d = edit_setup
    photo = np.zeros((8, 8, 4), np.uint8)
    photo[..., 1], photo[2:6, 2:6, 3] = 160, 255  # a green square on a transparent page
    Image.fromarray(photo, "RGBA").save(d / "rgba.png")
    on_white = np.where(photo[..., 3:] == 255, photo[..., :3], 255).astype(np.uint8)
    Image.fromarray(on_white, "RGB").save(d / "on-white.png")
    strokes = np.zeros((8, 8, 4), np.uint8)
    strokes[2:6, 2:6] = 255  # white strokes on a transparent layer, as an editor exports them
    Image.fromarray(strokes, "RGBA").save(d / "strokes.png")
    assert edit_cli(model, d / "rgba.png", d / "strokes.png", d / "a.png", "--class", "1") == 0
    assert edit_cli(model, d / "on-white.png", d / "mask.png", d / "b.png", "--class", "1") == 0
    assert np.array_equal(np.asarray(Image.open(d / "a.png")), np.asarray(Image.open(d / "b.png")))


def test_edit_cli_paints_a_class_given_by_name(edit_setup, tiny_models, capsys):
    _, d = edit_setup
    vae, var = tiny_models
    var.provenance = {"classes": ["cat", "dog", "emu", "fox"]}
    named = save_model(vae, var, d / "named")
    assert edit_cli(named, d / "in.png", d / "mask.png", d / "dog.png", "--class", "dog") == 0
    assert edit_cli(named, d / "in.png", d / "mask.png", d / "one.png", "--class", "1") == 0
    assert np.array_equal(np.asarray(Image.open(d / "dog.png")), np.asarray(Image.open(d / "one.png")))
    assert edit_cli(named, d / "in.png", d / "mask.png", d / "x.png", "--class", "owl") == 2
    err = capsys.readouterr().err
    assert "--class 'owl' is not one of this model's 4 class names (cat, dog, emu, fox)" in err, err


def test_edit_cli_leaves_hidden_files_of_a_folder_alone(edit_setup, capsys):
    model, d = edit_setup
    (d / "photos").mkdir()
    Image.new("RGB", (8, 8), (90, 0, 0)).save(d / "photos" / "0.png")
    (d / "photos" / "._0.png").write_bytes(b"\x00\x05\x16\x07 macOS metadata, not an image")
    assert edit_cli(model, d / "photos", d / "mask.png", d / "edited") == 0
    assert sorted(p.name for p in (d / "edited").glob("*.png")) == ["0.png"]
