"""Guidance schedules, per-scale filtering and the coarse-to-fine hand-off: the defaults keep the reference's
tokens, equal settings spelled differently draw equal tokens, and dropped guidance really shrinks the batch."""

import pytest
import torch

from nextscale.errors import NextscaleError
from nextscale.sampling import sample
from nextscale.sampling.guidance import Constant, Guidance, Interval, Linear, PerScale, Power, make_guidance
from tests.helpers import tiny_pair

LABELS = [1, 3, 0]


@pytest.fixture(scope="module", params=[False, True], ids=["adaln", "shared-adaln"])
def models(request):
    """The tiny pair, and its transformer with one AdaLN projection shared by all blocks (as var-d36)."""
    vae, var = tiny_pair()
    if not request.param:
        return vae, var
    from dataclasses import replace

    from nextscale.transformer import VAR
    from tests.helpers import randomize_

    shared = VAR(replace(var.config, shared_aln=True))
    randomize_(shared, seed=3)
    return vae, shared.eval()


def draw(models, **settings):
    vae, var = models
    return sample(vae, var, LABELS, seed=11, **({"top_k": 0, "top_p": 0.0} | settings))


def rows_seen(var) -> tuple[list[int], object]:
    """The batch size the transformer's head sees at each scale."""
    seen = []
    handle = var.head.register_forward_pre_hook(lambda module, args: seen.append(args[0].shape[0]))
    return seen, handle


def same_tokens(a, b, scales=None) -> bool:
    pairs = list(zip(a.tokens, b.tokens))
    return all(torch.equal(x, y) for x, y in (pairs if scales is None else pairs[scales]))


def test_the_schedules_weigh_the_scales_as_documented():
    assert [Linear(2.0).weight(si, 5) for si in range(5)] == [0, 0.5, 1.0, 1.5, 2.0]
    assert [Constant(2.0).weight(si, 5) for si in range(5)] == [2.0] * 5
    assert [Power(2.0, 2).weight(si, 5) for si in range(5)] == [0, 0.125, 0.5, 1.125, 2.0]
    assert [Interval(Constant(1.0), 1, -1).weight(si, 5) for si in range(5)] == [0, 1, 1, 1, 0]
    assert make_guidance(3.0, "power:1.5") == Power(3.0, 1.5)
    assert make_guidance(0, "list:0,1,2") == PerScale((0.0, 1.0, 2.0))
    assert make_guidance(1.0, "linear", slice(2, None)) == Interval(Linear(1.0), 2, None)


def test_the_default_is_the_reference_ramp_and_a_list_of_its_weights_draws_the_same(models):
    vae, var = models
    K = len(var.patch_nums)
    default = draw(models)
    ramp = ",".join(str(1.5 * si / (K - 1)) for si in range(K))
    assert same_tokens(default, draw(models, cfg_schedule=Linear(1.5)))
    assert same_tokens(default, draw(models, cfg_schedule=f"list:{ramp}"))
    assert same_tokens(default, draw(models, cfg_schedule="power:1"))
    assert same_tokens(default, draw(models, temperature=[1.0] * K, top_k=[0] * K, top_p=[0.0] * K))


def test_guidance_off_from_scale_k_halves_the_batch_and_cache_there_and_keeps_the_scales_before(models, monkeypatch):
    from nextscale.transformer.layers import KVCache

    vae, var = models
    K, B = len(var.patch_nums), len(LABELS)
    default = draw(models)
    cache_rows, append = [], KVCache.append
    monkeypatch.setattr(KVCache, "append", lambda self, k, v: cache_rows.append(self.k.shape[0]) or append(self, k, v))
    for k in (K - 1, K - 2):  # (the ramp weighs scale 0 with 0: slice(None, 1) would guide nothing)
        seen, handle = rows_seen(var)
        cache_rows.clear()
        try:
            cut = draw(models, guidance_scales=slice(None, k))
        finally:
            handle.remove()
        assert seen == [2 * B] * k + [B] * (K - k)
        per_scale_cache = cache_rows[:: len(var.blocks)]  # every block appends once per scale
        assert per_scale_cache == [2 * B] * k + [B] * (K - k)
        assert same_tokens(default, cut, slice(0, k))


def test_guidance_free_runs_b_rows_from_the_start(models):
    vae, var = models
    seen, handle = rows_seen(var)
    try:
        draw(models, cfg=0.0)
        draw(models, cfg=2.0, guidance_scales=slice(0, 0))
    finally:
        handle.remove()
    assert seen == [len(LABELS)] * (2 * len(var.patch_nums))


def test_per_scale_temperature_and_filters_change_only_their_scale(models):
    vae, var = models
    K = len(var.patch_nums)
    default = draw(models)
    hotter = draw(models, temperature=[1.0] * (K - 1) + [1.7])
    assert same_tokens(default, hotter, slice(0, K - 1)) and not same_tokens(default, hotter, slice(K - 1, K))
    greedy_last = draw(models, top_k=[0] * (K - 1) + [1])
    assert same_tokens(default, greedy_last, slice(0, K - 1))
    # greedy at the last scale: the argmax, which no temperature moves
    assert same_tokens(greedy_last, draw(models, top_k=[0] * (K - 1) + [1], temperature=[1.0] * (K - 1) + [0.3]))


def test_a_handoff_to_the_model_itself_is_plain_sampling(models):
    vae, var = models
    default = draw(models)
    for k in range(1, len(var.patch_nums)):
        handed = draw(models, fine_var=var, handoff=k)
        assert same_tokens(default, handed) and torch.equal(default.images, handed.images)


def test_a_handoff_after_guidance_was_dropped_is_still_plain_sampling(models):
    vae, var = models
    K = len(var.patch_nums)
    cut = slice(None, K - 2)
    assert same_tokens(
        draw(models, guidance_scales=cut), draw(models, guidance_scales=cut, fine_var=var, handoff=K - 1)
    )


def test_a_handoff_to_another_model_draws_the_coarse_scales_with_the_first(models):
    vae, var = models
    _, other = tiny_pair()
    torch.manual_seed(5)
    for p in other.parameters():
        p.data.add_(torch.randn_like(p) * 0.05)
    seen_fine, handle = rows_seen(other)
    try:
        handed = draw(models, fine_var=other, handoff=2)
    finally:
        handle.remove()
    assert same_tokens(draw(models), handed, slice(0, 2))
    assert seen_fine == [2 * len(LABELS)] * (len(var.patch_nums) - 2)  # its head draws scales 2…K−1, guided


class EveryOther(Guidance):
    """A user's own rule: guidance on even scales only."""

    def weight(self, si, num_scales):
        return 2.0 if si % 2 == 0 else 0.0


def test_a_users_guidance_object_is_used(models):
    assert not same_tokens(draw(models), draw(models, cfg_schedule=EveryOther()))


@pytest.mark.parametrize(
    "settings, message",
    [
        (dict(cfg_schedule="cosine"), "cfg_schedule must be one of"),
        (dict(cfg_schedule="power:-1"), "needs P ≥ 0"),
        (dict(cfg_schedule="power:x"), "'x' is not a number"),
        (dict(cfg_schedule="list:1,2"), "the guidance list has 2 weights"),
        (dict(temperature=-1.0), "temperature must be > 0"),
        (dict(temperature=0.0), "temperature must be > 0"),
        (dict(temperature=[1.0, 1.0]), "temperature has 2 entries"),
        (dict(top_k=[1, 2]), "top_k has 2 entries"),
        (dict(top_k=-3), "top_k must be an integer ≥ 0"),
        (dict(top_p=[0.5] * 99), "top_p has 99 entries"),
        (dict(guidance_scales=slice(0, 2, 2)), "guidance_scales takes no step"),
        (dict(guidance_scales=slice("a", 2)), "guidance_scales must be a slice of integer scale indices"),
        (dict(handoff=2), "needs both fine_var and handoff"),
        (dict(fine_var=3, handoff=1), "fine_var must be a VAR transformer"),
        (dict(cfg_schedule=PerScale((0.0, float("nan"), 1.0, 1.0))), "weight of scale 1 must be a finite number"),
        (dict(guidance_scales=(1, 3)), "guidance_scales must be a slice"),
        (dict(top_k=True), "top_k must be an integer"),
        (dict(temperature=[1.0, True, 1.0, 1.0]), "temperature must be a finite number, got True"),
        (dict(cfg=float("inf"), cfg_schedule=Constant(1.0)), "cfg must be a finite number"),
        (dict(fine_var="model", handoff=None), "needs both fine_var and handoff"),
    ],
)
def test_bad_settings_name_themselves(models, settings, message):
    vae, var = models
    if settings.get("fine_var") == "model":
        settings = {**settings, "fine_var": var}
    with pytest.raises(NextscaleError, match=message):
        draw(models, **settings)


def test_a_power_schedule_refuses_a_negative_power():
    with pytest.raises(NextscaleError, match="must be a number ≥ 0"):
        Power(1.0, -1)


def test_a_per_class_record_keeps_every_setting_as_json(tmp_path):
    import json

    from nextscale.sampling import sample_per_class
    from nextscale.weights import load_model

    vae, var = load_model("digits")
    sample_per_class(
        vae,
        var,
        tmp_path,
        per_class=1,
        classes=[4],
        progress=False,
        cfg_schedule="list:0,1,1,2,2,3",
        guidance_scales=slice(None, -1),
        top_k=[900, 900, 900, 900, 64, 64],
        temperature=0.9,
    )
    sampler = json.loads((tmp_path / "samples.json").read_text())["plan"]["sampler"]
    assert sampler["cfg_schedule"] == "list:0,1,1,2,2,3" and sampler["guidance_scales"] == ":-1"
    assert sampler["top_k"] == [900, 900, 900, 900, 64, 64] and sampler["temperature"] == 0.9


def test_a_handoff_out_of_range_or_to_another_tokenizer_is_refused(models):
    from dataclasses import replace

    from nextscale.transformer import VAR

    vae, var = models
    for k in (0, len(var.patch_nums), -1):
        with pytest.raises(NextscaleError, match="handoff must be a scale in 1.."):
            draw(models, fine_var=var, handoff=k)
    other_scales = VAR(replace(var.config, patch_nums=var.config.patch_nums[:-1]))
    with pytest.raises(NextscaleError, match="they must share the tokenizer"):
        draw(models, fine_var=other_scales, handoff=1)
