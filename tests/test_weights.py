"""Weights in and out: the project's format, reference `.pth` files, trainer checkpoints, named models."""

import pytest
import torch

from nextscale import (
    VAR,
    VQVAE,
    CheckpointError,
    load_model,
    load_pair,
    load_vae,
    load_var,
    sample,
    save_model,
)
from nextscale.golden import FLOAT_TOL, read_reference, relative_error
from tests.helpers import golden_files


def reference_state_dicts(path):
    meta, tensors = read_reference(str(path))
    strip = lambda prefix: {k[len(prefix) :]: v for k, v in tensors.items() if k.startswith(prefix)}  # noqa: E731
    return meta, tensors, strip("ckpt.vae."), strip("ckpt.var.")


def test_save_pretrained_round_trip_is_bit_exact(tiny_models, tmp_path):
    vae, var = tiny_models
    save_model(vae, var, tmp_path / "m")
    vae2, var2 = load_model(tmp_path / "m")
    for a, b in ((vae, vae2), (var, var2)):
        sa, sb = a.state_dict(), b.state_dict()
        assert sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)
        assert a.config == b.config
    x = sample(vae, var, [0, 1], seed=3, cfg=1.0)
    y = sample(vae2, var2, [0, 1], seed=3, cfg=1.0)
    assert torch.equal(x.images, y.images)


def test_weights_saved_in_half_load_widened_to_the_rounded_values(tiny_models, tmp_path):
    from safetensors import safe_open

    _, var = tiny_models
    var.save_pretrained(tmp_path / "var", dtype=torch.float16)
    with safe_open(tmp_path / "var" / "model.safetensors", "pt") as f:
        assert {f.get_slice(k).get_dtype() for k in f.keys()} - {"I64"} == {"F16"}  # integer buffers as they are
    loaded = VAR.from_pretrained(tmp_path / "var")
    for name, tensor in var.state_dict().items():
        widened = loaded.state_dict()[name]
        if tensor.is_floating_point():
            assert widened.dtype == torch.float32 and torch.equal(widened, tensor.half().float())
        else:
            assert torch.equal(widened, tensor)


def test_from_pretrained_rejects_the_wrong_kind(tiny_models, tmp_path):
    vae, _ = tiny_models
    vae.save_pretrained(tmp_path / "vae")
    with pytest.raises(CheckpointError, match="'vqvae' model, not a 'var'"):
        VAR.from_pretrained(tmp_path / "vae")
    with pytest.raises(CheckpointError, match="config.json not found"):
        VQVAE.from_pretrained(tmp_path)


@pytest.mark.parametrize("trainer_format", [False, True], ids=["released", "ar-ckpt"])
def test_reference_pth_loads_and_computes_the_reference_logits(tmp_path, trainer_format):
    meta, tensors, vae_sd, var_sd = reference_state_dicts(golden_files()[0])
    if trainer_format:
        blob = {"epoch": 3, "iter": 10, "trainer": {"var_wo_ddp": var_sd, "vae_local": vae_sd, "config": {}}}
        torch.save(blob, tmp_path / "ar-ckpt-last.pth")
        var_path = vae_path = tmp_path / "ar-ckpt-last.pth"
    else:
        torch.save(vae_sd, vae_path := tmp_path / "vae.pth")
        torch.save(var_sd, var_path := tmp_path / "var.pth")
    vae, var = load_pair(vae_path, var_path)
    assert var.config.patch_nums == tuple(meta["var_kwargs"]["patch_nums"])
    assert var.config.shared_aln == meta["var_kwargs"]["shared_aln"]
    with torch.no_grad():
        logits = var(tensors["in.labels"], tensors["in.x_BLCv_wo_first_l"])
    # floats from another machine: the conformance tolerance (other kernels move the last bits); ids: exact
    assert relative_error(logits, tensors["out.var.logits"]) <= FLOAT_TOL
    idx = vae.img_to_idx(tensors["in.img"])
    assert torch.equal(idx[-1], tensors[f"out.vae.idx.{len(idx) - 1}"])


def test_shared_adaln_config_is_inferred(tmp_path):
    shared = [p for p in golden_files() if "shared" in p.name]
    if not shared:
        pytest.skip("no shared-AdaLN reference file")
    _, _, _, var_sd = reference_state_dicts(shared[0])
    torch.save(var_sd, tmp_path / "var.pth")
    assert load_var(tmp_path / "var.pth").config.shared_aln


def test_strict_loading_names_missing_and_unexpected_keys(tmp_path):
    _, _, vae_sd, var_sd = reference_state_dicts(golden_files()[0])
    broken = dict(var_sd)
    del broken["blocks.0.attn.scale_mul_1H11"]
    broken["blocks.0.attn.surprise"] = torch.zeros(1)
    torch.save(broken, tmp_path / "var.pth")
    with pytest.raises(
        CheckpointError,
        match=r"missing keys: blocks\.0\.attn\.scale_mul_1H11.*unexpected keys: "
        r"blocks\.0\.attn\.surprise",
    ):
        load_var(tmp_path / "var.pth")


def test_vae_file_where_var_belongs(tmp_path):
    _, _, vae_sd, _ = reference_state_dicts(golden_files()[0])
    torch.save(vae_sd, tmp_path / "vae.pth")
    with pytest.raises(CheckpointError, match="does not hold a VAR transformer .it is a VQ-VAE tokenizer"):
        load_var(tmp_path / "vae.pth")


class NotWeights:
    pass


def test_pickled_objects_are_refused(tmp_path):
    torch.save({"x": NotWeights()}, tmp_path / "evil.pth")
    with pytest.raises(CheckpointError, match="not a readable weights-only torch file"):
        load_vae(tmp_path / "evil.pth")


def test_named_model_offline_says_where_to_put_files(tmp_path, monkeypatch):
    monkeypatch.setenv("NEXTSCALE_HOME", str(tmp_path))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr("huggingface_hub.constants.HF_HUB_OFFLINE", True)
    with pytest.raises(CheckpointError, match=rf"vae_ch160v4096z32.pth .*var_d16.pth .*put them in {tmp_path}"):
        load_model("var-d16")  # every missing file is named, not only the first
    with pytest.raises(CheckpointError, match="unknown model 'var-d99'"):
        load_model("var-d99")


def test_named_model_resolves_to_local_files(tmp_path, monkeypatch):
    """var-d16 with files in $NEXTSCALE_HOME: the golden weights stand in, under the released names."""
    _, tensors, vae_sd, var_sd = reference_state_dicts(golden_files()[0])
    monkeypatch.setenv("NEXTSCALE_HOME", str(tmp_path))
    torch.save(vae_sd, tmp_path / "vae_ch160v4096z32.pth")
    torch.save(var_sd, tmp_path / "var_d16.pth")
    vae, var = load_model("var-d16")
    assert var.config.num_classes == int(var_sd["class_emb.weight"].shape[0]) - 1


# ---- building without initialising, loading without copying --------------------------------------------


def built_normally_and_from_meta(cls, config, seed=0):
    """The same model built two ways: normally, and on the meta device, then moved with `to_empty` onto memory
    full of NaN (so a tensor `init_weights` forgot would show) and initialised, from the same RNG state."""
    torch.manual_seed(seed)
    normal = cls(config)
    meta = cls(config, device="meta")
    assert all(t.is_meta for t in meta.state_dict().values())
    meta.to_empty(device="cpu")
    with torch.no_grad():
        for t in meta.state_dict().values():
            t.fill_(float("nan") if t.is_floating_point() else -7)
    torch.manual_seed(seed)
    meta.init_weights()
    return normal, meta


def assert_same_tensors(a, b):
    sa, sb = a.state_dict(), b.state_dict()
    assert sa.keys() == sb.keys()
    different = [k for k in sa if not torch.equal(sa[k], sb[k])]
    assert not different, different


@pytest.mark.parametrize("shared_aln", [False, True])
def test_a_model_built_on_meta_and_initialised_equals_one_built_normally(shared_aln):
    from dataclasses import replace

    from nextscale.registry import architecture

    vae_config, var_config = architecture("tiny")
    assert_same_tensors(*built_normally_and_from_meta(VAR, replace(var_config, shared_aln=shared_aln)))
    assert_same_tensors(*built_normally_and_from_meta(VQVAE, vae_config))


def test_init_weights_is_idempotent():
    """Every tensor is drawn or set afresh (nothing is scaled in place), so a second call from the same RNG state
    gives the same weights, and from another state the same distribution."""
    from nextscale.registry import architecture

    _, config = architecture("tiny")
    torch.manual_seed(3)
    model = VAR(config)
    first = {k: v.clone() for k, v in model.state_dict().items()}
    torch.manual_seed(3)
    model.init_weights()
    assert all(torch.equal(first[k], v) for k, v in model.state_dict().items())
    model.init_weights()  # another RNG state: other draws, the same scales
    C = config.embed_dim
    gates = model.blocks[0].ada_lin[-1].weight[: 2 * C]
    assert gates.abs().max() < 1e-5 * 2 * (1 / C / 3) ** 0.5 * 2  # not 1e-10: the gates were not scaled twice
    assert torch.equal(model.lvl_1L, first["lvl_1L"]) and torch.equal(
        model.attn_bias_for_masking, first["attn_bias_for_masking"]
    )
    assert torch.all(model.blocks[0].attn.scale_mul_1H11 == first["blocks.0.attn.scale_mul_1H11"])


def test_loading_takes_the_files_tensors_without_initialising_or_copying(tiny_models, tmp_path, monkeypatch):
    import nextscale.pretrained
    import nextscale.weights.load

    vae, var = tiny_models
    save_model(vae, var, tmp_path / "m")
    torch.save(var.state_dict(), tmp_path / "var.pth")
    read = []
    for module, name in ((nextscale.pretrained, "read_safetensors"), (nextscale.weights.load, "read_reference_file")):
        original = getattr(module, name)
        monkeypatch.setattr(module, name, lambda *a, _f=original: read.append(_f(*a)) or read[-1])

    def refuse_real_work(original):
        def init(tensor, *args, **kwargs):  # on the meta device an init computes nothing: shapes only
            assert tensor.is_meta, "a model that receives weights was initialised first"
            return original(tensor, *args, **kwargs)

        return init

    for name in ("trunc_normal_", "kaiming_uniform_", "normal_", "uniform_"):
        monkeypatch.setattr(torch.nn.init, name, refuse_real_work(getattr(torch.nn.init, name)))
    loaded_vae, loaded_var = load_model(tmp_path / "m")
    from_pth = load_var(tmp_path / "var.pth")
    for model, tensors in ((loaded_var, read[0]), (loaded_vae, read[1]), (from_pth, read[2])):  # var loads first
        state = model.state_dict()
        assert all(state[k].data_ptr() == tensors[k].data_ptr() for k in tensors)  # the same memory: assigned
    assert_same_tensors(loaded_var, var)
    assert_same_tensors(from_pth, var)


def test_format_version_1_configs_still_load(tiny_models, tmp_path):
    import json

    vae, var = tiny_models
    var.save_pretrained(tmp_path / "var")
    meta = json.loads((tmp_path / "var" / "config.json").read_text())
    meta["format_version"] = 1
    meta["config"].update(cond_drop_rate=0.1, drop_path_rate=0.0, init_adaln=0.5)  # training settings, then
    (tmp_path / "var" / "config.json").write_text(json.dumps(meta))
    assert VAR.from_pretrained(tmp_path / "var").config == var.config
    meta["config"]["surprise"] = 1
    (tmp_path / "var" / "config.json").write_text(json.dumps(meta))
    with pytest.raises(CheckpointError, match="settings this version does not know: surprise"):
        VAR.from_pretrained(tmp_path / "var")


def test_broken_files_name_themselves(tiny_models, tmp_path):
    vae, var = tiny_models
    var.save_pretrained(tmp_path / "var")
    weights = tmp_path / "var" / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:100])
    with pytest.raises(CheckpointError, match=f"{weights} is not a readable safetensors file"):
        VAR.from_pretrained(tmp_path / "var")
    (tmp_path / "empty.pth").write_bytes(b"")
    with pytest.raises(CheckpointError, match="empty.pth is empty"):
        load_vae(tmp_path / "empty.pth")
    torch.save({"x": torch.zeros(2)}, tmp_path / "full.pth")
    (tmp_path / "cut.pth").write_bytes((tmp_path / "full.pth").read_bytes()[:-40])
    with pytest.raises(CheckpointError, match="cut.pth is not a readable weights-only torch file"):
        load_var(tmp_path / "cut.pth")


def test_builtin_names_work_wherever_a_model_part_is_taken():
    vae, var = load_model("digits")
    assert_same_tensors(load_vae("digits"), vae)
    assert_same_tensors(load_var("digits"), var)
    with pytest.raises(CheckpointError, match="unknown tokenizer 'digitz'"):
        load_vae("digitz")


def test_a_transformer_pairs_only_with_the_tokenizer_it_records(tiny_models, tmp_path, capsys):
    from nextscale.cli import main
    from nextscale.errors import NextscaleError
    from tests.helpers import randomize_

    vae, var = tiny_models
    retrained = randomize_(VQVAE(vae.config, device="cpu"), seed=7)  # the same shape, other weights
    save_model(vae, var, tmp_path / "plain")  # records nothing: nothing to check
    assert load_model(tmp_path / "plain", check_tokenizer=True)[1].provenance == {}
    var.provenance = {"tokenizer": vae.fingerprint()}
    save_model(vae, var, tmp_path / "m")
    save_model(retrained, var, tmp_path / "mixed")  # vae/ and var/ disagree
    load_model(tmp_path / "m")
    load_pair(tmp_path / "m" / "vae", tmp_path / "mixed" / "var")  # the tokenizer it records, from anywhere
    short = lambda model: f"{model.fingerprint()[:12]}…"  # noqa: E731
    refusal = rf"var was trained with tokenizer {short(vae)} and .*mixed/vae is another \({short(retrained)}\)"
    with pytest.raises(NextscaleError, match=refusal):
        load_model(tmp_path / "mixed")
    with pytest.raises(NextscaleError, match=refusal):
        load_pair(tmp_path / "mixed" / "vae", tmp_path / "m" / "var")
    assert load_model(tmp_path / "mixed", check_tokenizer=False)[0].fingerprint() == retrained.fingerprint()

    sample_argv = ["sample", "--vae", str(tmp_path / "mixed"), "--var", str(tmp_path / "m"), "--n", "1", "--no-png"]
    sample_argv += ["--out", str(tmp_path / "out"), "--device", "cpu"]
    assert main(sample_argv) == 2
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1 and "--any-tokenizer" in err and short(retrained) in err, err
    assert main([*sample_argv, "--any-tokenizer"]) == 0


def test_the_built_in_models_record_their_tokenizer():
    vae = load_vae("digits")
    for name in ("digits", "digits-small"):
        assert load_var(name).provenance == {"tokenizer": vae.fingerprint(), "classes": [str(c) for c in range(10)]}
        assert load_model(name)[0].fingerprint() == vae.fingerprint()
