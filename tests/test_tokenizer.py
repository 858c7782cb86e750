"""`tokenizer/`: the multi-scale VQ-VAE's invariants on tiny random models, and the inputs it refuses."""

import numpy as np
import pytest
import torch

from nextscale import NextscaleError
from nextscale.tokenizer.quantizer import Phi, PhiPartiallyShared, nearest_tick, phi_ticks


def test_phi_index_map_for_ten_scales():
    phis = PhiPartiallyShared([Phi(4, 0.5) for _ in range(4)])
    picked = [list(phis.qresi_ls).index(phis.at(si / 9)) for si in range(10)]
    assert picked == [0, 0, 1, 1, 1, 2, 2, 3, 3, 3]
    assert nearest_tick(phi_ticks(3), 0.0) == 0 and nearest_tick(phi_ticks(3), 1.0) == 2


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
