"""`sampling/sampler.py`: the KV-cached sampler matches teacher forcing, filters as the reference, draws
reproducibly, calls its per-scale hook, compiles, never reads back to the host, and refuses bad input at the
boundary with a message that names it."""

import pytest
import torch

from nextscale import NextscaleError
from nextscale.editing import edit
from nextscale.sampling import cached_teacher_forcing, fhat_to_images, filter_top_k_top_p_, sample


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


def test_scale_callback_sees_every_scale(tiny_models):
    vae, var = tiny_models
    seen, fhats = [], []
    out = sample(vae, var, [0], seed=0, on_scale=lambda si, f_hat: (seen.append(si), fhats.append(f_hat.clone())))
    assert seen == list(range(len(var.patch_nums)))
    # f̂ grows scale by scale, and the last one is what the final image decodes from
    assert all(not torch.equal(a, b) for a, b in zip(fhats, fhats[1:]))
    assert torch.equal(fhat_to_images(vae, fhats[-1]), out.images)


def test_compiled_step_covers_a_ten_scale_pyramid(capfd):
    """Ten scales mean ten graphs: more than dynamo's default recompile limit of 8."""
    from nextscale.tokenizer import VQVAE, VQVAEConfig
    from nextscale.transformer import VAR, VARConfig

    pn = tuple(range(1, 11))
    vae = VQVAE(
        VQVAEConfig(
            vocab_size=16,
            z_channels=4,
            ch=8,
            ch_mult=(1,),
            num_res_blocks=1,
            using_sa=False,
            using_mid_sa=False,
            norm_groups=4,
            patch_nums=pn,
        )
    ).eval()
    var = VAR(
        VARConfig(depth=1, embed_dim=16, num_heads=2, num_classes=3, vocab_size=16, latent_channels=4, patch_nums=pn)
    ).eval()
    plain = sample(vae, var, [0, 1], seed=0)
    compiled = sample(vae, var, [0, 1], seed=0, compile="eager")
    assert all(torch.equal(a, b) for a, b in zip(plain.tokens, compiled.tokens))
    assert "recompile_limit" not in capfd.readouterr().err


def test_sampling_loop_never_reads_a_tensor_back_to_the_host(tiny_models, monkeypatch):
    """On a GPU each read-back would stall the loop until the device catches up."""
    vae, var = tiny_models

    def refuse(self, *args, **kwargs):
        raise AssertionError("the sampler read a tensor back to the host")

    for name in ("item", "tolist", "numpy", "cpu", "__bool__", "__int__", "__float__"):
        monkeypatch.setattr(torch.Tensor, name, refuse)
    out = sample(vae, var, [0, 1], seed=0, cfg=2.0, top_k=8, top_p=0.9, more_smooth=True)
    monkeypatch.undo()
    assert out.images.shape[0] == 2
