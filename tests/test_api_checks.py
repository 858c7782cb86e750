"""The Python API checks its inputs at the boundary: the message names the problem (never an error from deep
inside torch)."""

import numpy as np
import pytest
import torch

from nextscale import NextscaleError, sample
from nextscale.editing import edit


@pytest.mark.parametrize(
    "make, message",
    [
        (lambda side: torch.randint(0, 255, (1, 3, side, side), dtype=torch.uint8), r"floating point .*uint8 pixels"),
        (lambda side: torch.rand(1, 3, side, side) * 255, r"must lie in \[-1, 1\].*\[0, 255\]"),
        (lambda side: torch.full((1, 3, side, side), float("nan")), "NaN or infinite"),
        (lambda side: torch.rand(1, side, side, 3), r"must be \(B, 3, 8, 8\).*channels last"),
        (lambda side: torch.rand(1, 3, side + 1, side), r"must be \(B, 3, 8, 8\), got shape \(1, 3, 9, 8\)"),
        (lambda side: np.zeros((1, 3, side, side)), "must be a torch.Tensor"),
    ],
    ids=["uint8", "0-255", "nan", "hwc", "size", "numpy"],
)
def test_tokenizer_refuses_images_it_cannot_use(tiny_models, make, message):
    vae, _ = tiny_models
    with pytest.raises(NextscaleError, match=message):
        vae.img_to_idx(make(vae.config.resolution))


def test_tokenizer_refuses_tokens_it_cannot_decode(tiny_models):
    vae, _ = tiny_models
    good = vae.img_to_idx(torch.rand(2, 3, 8, 8) * 2 - 1)
    with pytest.raises(NextscaleError, match="a list of 4 tensors"):
        vae.idx_to_img(good[:-1])
    with pytest.raises(NextscaleError, match=r"token ids must lie in \[0, 31\], got \[\d+, 99\]"):
        vae.idx_to_img([*good[:-1], torch.full_like(good[-1], 99)])
    with pytest.raises(NextscaleError, match=r"scale 1 must be an integer \(B, 4\) tensor"):
        vae.idx_to_img([good[0], good[1].float(), *good[2:]])


@pytest.mark.parametrize(
    "labels, message",
    [
        ([1.5], "labels must be integer class ids, got 1.5"),
        (torch.zeros(2, 2, dtype=torch.long), "1-D integer tensor"),
        (torch.tensor([0.0, 1.0]), "1-D integer tensor, got torch.float32"),
        ([0, 9], "class 9 is out of range: this model has classes 0..3"),
        ([-2], "class -2 is out of range"),
        ([], "labels is empty"),
        ("cat", "labels must be None, an int, a sequence"),
    ],
)
def test_sampler_refuses_bad_labels(tiny_models, labels, message):
    vae, var = tiny_models
    if isinstance(labels, str):
        labels = object()
    with pytest.raises(NextscaleError, match=message):
        sample(vae, var, labels, seed=0)


@pytest.mark.parametrize(
    "settings, message",
    [
        (dict(cfg=float("nan")), "cfg must be a finite number"),
        (dict(top_k=-1), "top_k must be an integer"),
        (dict(top_p=2.0), r"top_p must lie in \[0, 1\]"),
        (dict(cfg_schedule="cosine"), "cfg_schedule must be one of linear, constant"),
        (dict(precision="fp8"), "precision must be one of fp32, bf16"),
        (dict(compile="bogus"), "unknown torch.compile backend 'bogus'"),
        (dict(seed=-1), r"seed must be an integer in \[0, 2\*\*63 - 1\]"),
        (dict(batch_size=0, labels=None), "batch_size must be a positive integer"),
    ],
)
def test_sampler_refuses_bad_settings(tiny_models, settings, message):
    vae, var = tiny_models
    labels = settings.pop("labels", [0])
    with pytest.raises(NextscaleError, match=message):
        sample(vae, var, labels, **{"seed": 0, **settings})


def test_a_generator_on_another_device_is_named(tiny_models):
    """A CPU generator cannot draw on another device: refused before any work, with the fix in the message."""
    vae, var = (m.to("meta") for m in tiny_models)  # another device, on any machine
    with pytest.raises(NextscaleError, match=r"the generator lives on cpu, the model on meta.*device='meta'"):
        sample(vae, var, [0], generator=torch.Generator())


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


def test_seed_and_generator_together_and_models_on_two_devices_are_refused(tiny_models):
    vae, var = tiny_models
    with pytest.raises(NextscaleError, match="a seed or a generator, not both"):
        sample(vae, var, [0], seed=0, generator=torch.Generator())
    with pytest.raises(NextscaleError, match="the VAE is on meta and the VAR on cpu"):
        sample(vae.to("meta"), var, [0], seed=0)


def test_a_swapped_pair_is_named_in_one_line(tiny_models):
    from nextscale import save_model
    from nextscale.sampling import sample_many

    vae, var = tiny_models
    swapped = "swapped: pass \\(vae, var\\), the tokenizer first"
    for call in (
        lambda: sample(var, vae, [0], seed=0),
        lambda: edit(var, vae, torch.rand(1, 3, 8, 8), (0.25, 0.25, 0.75, 0.75), seed=0),
        lambda: sample_many(var, vae, [0]),
        lambda: save_model(var, vae, "unused"),
    ):
        with pytest.raises(NextscaleError, match=swapped):
            call()
    with pytest.raises(NextscaleError, match="the first model must be the tokenizer"):
        sample(var, var, [0], seed=0)


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
