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
from tests.conftest import golden_files


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
    x = sample(var, vae, [0, 1], seed=3, cfg=1.0)
    y = sample(var2, vae2, [0, 1], seed=3, cfg=1.0)
    assert torch.equal(x.images, y.images)


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
