"""`transformer/`: the VAR transformer's shapes, causality across scales and initialisation."""

import math

import pytest
import torch

from nextscale.registry import ARCHITECTURES, build

REFERENCE_PARAMS = {  # reference section 2.1
    "var-d16": 310_283_520,
    "var-d20": 600_917_136,
    "var-d24": 1_033_399_360,
    "var-d30": 2_010_020_356,
    "var-d36": 2_353_893_904,
}


@pytest.mark.parametrize("name", list(REFERENCE_PARAMS))
def test_released_presets_have_reference_shapes(name):
    vae, var = build(name, device="meta")
    assert sum(p.numel() for p in var.parameters()) == REFERENCE_PARAMS[name]
    assert sum(p.numel() for p in vae.parameters()) == 108_948_355
    assert len(vae.state_dict()) == 324
    if name == "var-d16":
        assert len(var.state_dict()) == 220


def test_changing_a_finer_scale_leaves_coarser_logits_unchanged(tiny_models):
    _, var = tiny_models
    labels = torch.tensor([1, 2])
    x = torch.randn(2, var.config.num_tokens - 1, var.config.latent_channels)
    with torch.no_grad():
        base = var(labels, x)
        for k in range(1, len(var.patch_nums)):
            begin, end = var.begin_ends[k]  # scale k's inputs sit at x[:, begin-1:end-1]
            changed = x.clone()
            changed[:, begin - 1 : end - 1] += 1.0
            out = var(labels, changed)
            assert torch.equal(out[:, :begin], base[:, :begin])
            assert not torch.allclose(out[:, begin:end], base[:, begin:end])


def test_init_follows_the_reference_recipe():
    _, var = build("tiny")
    C, depth = var.config.embed_dim, var.config.depth
    std = math.sqrt(1 / C / 3)
    gates = var.blocks[0].ada_lin[-1].weight[: 2 * C]
    mods = var.blocks[0].ada_lin[-1].weight[2 * C :]
    assert gates.std() < mods.std() * 1e-3  # gammas start 5e4× smaller than scales and shifts
    assert abs(var.head.weight.std().item() - std * 0.02) < std * 0.01
    assert torch.all(var.blocks[0].attn.scale_mul_1H11 == math.log(4))
    assert torch.all(var.blocks[0].attn.q_bias == 0) and torch.all(var.head.bias == 0)
    assert var.blocks[1].attn.proj.weight.std() < std / math.sqrt(2 * depth) * 1.3


def test_every_preset_builds():
    for name in ARCHITECTURES:
        vae, var = build(name, device="meta")
        assert var.config.vocab_size == vae.config.vocab_size
        assert var.config.patch_nums == vae.config.patch_nums
