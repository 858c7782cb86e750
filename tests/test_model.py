"""Invariants of the tokenizer, the transformer and the sampler on tiny random models."""

import math

import pytest
import torch

from nextscale.registry import ARCHITECTURES, build
from nextscale.sampling import cached_teacher_forcing, filter_top_k_top_p_, sample
from nextscale.tokenizer.quantizer import Phi, PhiPartiallyShared, nearest_tick, phi_ticks

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


def test_phi_index_map_for_ten_scales():
    phis = PhiPartiallyShared([Phi(4, 0.5) for _ in range(4)])
    picked = [list(phis.qresi_ls).index(phis.at(si / 9)) for si in range(10)]
    assert picked == [0, 0, 1, 1, 1, 2, 2, 3, 3, 3]
    assert nearest_tick(phi_ticks(3), 0.0) == 0 and nearest_tick(phi_ticks(3), 1.0) == 2


def test_kv_cached_logits_equal_teacher_forcing(tiny_models):
    vae, var = tiny_models
    labels = torch.tensor([0, 3, 4])  # 4 = null class
    idx = vae.img_to_idx(torch.rand(3, 3, vae.config.resolution, vae.config.resolution) * 2 - 1)
    x = vae.idx_to_var_input(idx)
    with torch.no_grad():
        full = var(labels, x)
    cached = cached_teacher_forcing(var, labels, x)
    torch.testing.assert_close(cached, full, rtol=1e-5, atol=1e-5)
    assert full.shape == (3, var.config.num_tokens, var.config.vocab_size)


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


def test_tokenizer_round_trips(tiny_models):
    vae, _ = tiny_models
    img = torch.rand(2, 3, vae.config.resolution, vae.config.resolution) * 2 - 1
    idx = vae.img_to_idx(img)
    assert [t.shape for t in idx] == [(2, pn * pn) for pn in vae.patch_nums]
    assert all(t.dtype == torch.long and int(t.max()) < vae.config.vocab_size for t in idx)
    torch.testing.assert_close(vae.idx_to_img(idx), vae.reconstruct(img))
    fhats = vae.quantize.idx_to_fhats(idx)
    torch.testing.assert_close(fhats[-1], vae.img_to_fhats(img)[-1])
    assert len(vae.idx_to_img(idx, last_only=False)) == len(vae.patch_nums)


def test_training_forward_is_straight_through(tiny_models):
    vae, _ = tiny_models
    vae.train()
    img = (torch.rand(2, 3, vae.config.resolution, vae.config.resolution) * 2 - 1).requires_grad_()
    out = vae(img)
    assert out.reconstruction.shape == img.shape and out.vq_loss.ndim == 0
    (out.reconstruction.square().mean() + out.vq_loss).backward()
    assert img.grad is not None and img.grad.abs().sum() > 0
    assert vae.quantize.embedding.weight.grad.abs().sum() > 0
    assert [int(h.sum()) for h in out.hits] == [2 * pn * pn for pn in vae.patch_nums]


def test_top_k_keeps_ties_and_top_p_keeps_the_maximum():
    logits = torch.tensor([[[3.0, 2.0, 2.0, 1.0, 0.0]]])
    out = filter_top_k_top_p_(logits.clone(), top_k=2)
    assert torch.isfinite(out).tolist() == [[[True, True, True, False, False]]]  # the tie at the 2nd place survives
    out = filter_top_k_top_p_(torch.tensor([[[10.0, 0.0, 0.0]]]), top_p=0.01)
    assert torch.isfinite(out).tolist() == [[[True, False, False]]]
    probs = torch.tensor([0.5, 0.3, 0.15, 0.05]).log().view(1, 1, 4)
    out = filter_top_k_top_p_(probs.clone(), top_p=0.8)  # ascending cumsum 0.05, 0.2 ≤ 0.2 removed
    assert torch.isfinite(out).tolist() == [[[True, True, False, False]]]


def test_sampler_is_reproducible_and_respects_labels(tiny_models):
    vae, var = tiny_models
    a = sample(vae, var, [0, 1, 2], seed=7, cfg=2.0, top_k=8, top_p=0.9)
    b = sample(vae, var, [0, 1, 2], generator=torch.Generator().manual_seed(7), cfg=2.0, top_k=8, top_p=0.9)
    assert all(torch.equal(x, y) for x, y in zip(a.tokens, b.tokens))
    assert (
        a.images.shape == (3, 3, vae.config.resolution, vae.config.resolution)
        and 0 <= a.images.min()
        and a.images.max() <= 1
    )
    c = sample(vae, var, None, batch_size=5, seed=1)
    assert c.labels.shape == (5,) and int(c.labels.max()) < var.num_classes
    u = sample(vae, var, -1, batch_size=2, seed=1)
    assert u.labels.tolist() == [var.num_classes] * 2
    const = sample(vae, var, [0, 1, 2], seed=7, cfg=2.0, cfg_schedule="constant", top_k=8, top_p=0.9)
    assert not all(torch.equal(x, y) for x, y in zip(const.tokens, a.tokens))


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


def test_cosine_and_phi_variants_of_the_quantizer():
    from nextscale.tokenizer import VQVAE, VQVAEConfig

    base = dict(
        vocab_size=16,
        z_channels=4,
        ch=8,
        ch_mult=(1, 2),
        num_res_blocks=1,
        using_sa=False,
        norm_groups=4,
        patch_nums=(1, 2, 4),
    )
    img = torch.rand(2, 3, 8, 8) * 2 - 1
    for share, keys in ((0, "quantize.quant_resi.0.weight"), (1, "quantize.quant_resi.qresi.weight")):
        vae = VQVAE(VQVAEConfig(share_quant_resi=share, using_znorm=True, **base)).eval()
        assert keys in vae.state_dict()
        idx = vae.img_to_idx(img)
        # the 1×1 scale quantizes the latent's mean: its code must be the one of highest cosine similarity
        z = torch.nn.functional.normalize(vae.encode(img).mean(dim=(2, 3)), dim=-1)
        codes = torch.nn.functional.normalize(vae.quantize.embedding.weight, dim=-1)
        assert torch.equal(idx[0].flatten(), (z @ codes.T).argmax(1))
        torch.testing.assert_close(vae.idx_to_img(idx), vae.reconstruct(img))
