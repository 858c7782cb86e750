"""The raster-order baseline (`transformer/raster.py`, `sampling/raster.py`): causal, its KV-cached sampler equal
to teacher forcing, reproducible draws, refusals of what only scales can do, its own model kind on disk, and the
single-scale tokenizer that decodes it."""

from dataclasses import replace

import pytest
import torch

from nextscale import NextscaleError
from nextscale.errors import CheckpointError
from nextscale.registry import architecture
from nextscale.sampling.raster import cached_teacher_forcing_raster, sample_raster
from nextscale.tokenizer import VQVAE
from nextscale.transformer import VAR, RasterAR, RasterConfig, VARConfig

TINY = RasterConfig(depth=2, embed_dim=32, num_heads=2, num_classes=4, vocab_size=16, grid=4)


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    m = RasterAR(TINY).eval()
    with torch.no_grad():  # AdaLN gates start near zero: give the blocks a visible effect
        for block in m.blocks:
            block.ada_lin[-1].weight.normal_(0, 0.2)
    return m


def tokens(batch=3, seed=1):
    return torch.randint(TINY.vocab_size, (batch, TINY.grid**2), generator=torch.Generator().manual_seed(seed))


def test_the_same_depth_is_the_same_blocks_as_var():
    raster = RasterConfig.from_depth(3, 32, vocab_size=16, num_classes=4, grid=4)
    var = VARConfig.from_depth(3, 32, vocab_size=16, num_classes=4, patch_nums=(1, 2, 4))
    assert (raster.depth, raster.embed_dim, raster.num_heads) == (var.depth, var.embed_dim, var.num_heads) == (3, 96, 3)
    a, b = RasterAR(raster, device="meta"), VAR(var, device="meta")
    assert [p.shape for p in a.blocks.parameters()] == [p.shape for p in b.blocks.parameters()]


def test_a_later_token_changes_no_earlier_logit(model):
    labels, x = torch.tensor([0, 1, 4]), tokens()
    with torch.no_grad():
        before = model(labels, x[:, :-1])
        for j in (0, 5, 14):
            changed = x.clone()
            changed[:, j] = (changed[:, j] + 1) % TINY.vocab_size
            after = model(labels, changed[:, :-1])
            # the logit at position p predicts token p from the tokens before it
            assert torch.equal(after[:, : j + 1], before[:, : j + 1])
            assert not torch.equal(after[:, j + 1 :], before[:, j + 1 :])
    assert before.shape == (3, TINY.grid**2, TINY.vocab_size)


def test_the_kv_cache_computes_what_teacher_forcing_does(model):
    labels, x = torch.tensor([0, 3, 4]), tokens()
    with torch.no_grad():
        full = model(labels, x[:, :-1])
    cached = cached_teacher_forcing_raster(model, labels, x)
    torch.testing.assert_close(cached, full, rtol=1e-5, atol=1e-5)
    # Greedy draws (top-k 1) read the same logits: the sampler's tokens are teacher forcing's argmax, exactly.
    drawn = sample_raster(model, [0, 3], seed=0, cfg=0, top_k=1, top_p=0).tokens
    with torch.no_grad():
        again = model(torch.tensor([0, 3]), drawn[:, :-1]).argmax(-1)
    assert torch.equal(drawn, again)


def test_draws_are_reproducible_per_image_and_guided(model):
    a = sample_raster(model, [0, 1, 2], seed=7, cfg=2.0, top_k=8, top_p=0.9)
    b = sample_raster(model, [0, 1, 2], generator=torch.Generator().manual_seed(7), cfg=2.0, top_k=8, top_p=0.9)
    assert torch.equal(a.tokens, b.tokens) and a.tokens.shape == (3, 16) and a.images is None
    one = [torch.Generator().manual_seed(s) for s in (5, 6)]
    pair = sample_raster(model, [1, 2], generator=one, cfg=2.0)
    alone = sample_raster(model, [2], generator=[torch.Generator().manual_seed(6)], cfg=2.0)
    assert torch.equal(pair.tokens[1:], alone.tokens)  # an image's draws do not depend on the batch
    const = sample_raster(model, [0, 1, 2], seed=7, cfg=2.0, cfg_schedule="constant", top_k=8, top_p=0.9)
    assert not torch.equal(const.tokens, a.tokens)
    random = sample_raster(model, None, batch_size=5, seed=1)
    assert random.labels.shape == (5,) and int(random.labels.max()) < TINY.num_classes


@pytest.mark.parametrize(
    "settings, named",
    [
        (dict(guidance_scales=slice(0, 2)), "guidance_scales"),
        (dict(more_smooth=True), "more_smooth"),
        (dict(compile="inductor"), "compile"),
        (dict(top_k=(4, 8)), "top_k"),
        (dict(temperature=(1.0, 0.9)), "temperature"),
        (dict(cfg_schedule="list:1,2"), "cfg_schedule"),
        (dict(seed=1, generator=torch.Generator()), "seed or a generator"),
    ],
)
def test_what_only_scales_can_do_is_refused_in_one_line(model, settings, named):
    with pytest.raises(NextscaleError, match=named) as e:
        sample_raster(model, [0], **settings)
    assert "\n" not in str(e.value)


def test_its_own_kind_on_disk(model, tmp_path):
    model.save_pretrained(tmp_path / "ar")
    loaded = RasterAR.from_pretrained(tmp_path / "ar")
    assert loaded.config == TINY
    assert all(torch.equal(a, b) for a, b in zip(model.state_dict().values(), loaded.state_dict().values()))
    labels, x = torch.tensor([1, 2]), tokens(2)
    with torch.no_grad():
        assert torch.equal(loaded(labels, x[:, :-1]), model(labels, x[:, :-1]))
    with pytest.raises(CheckpointError, match="'raster-ar' model, not a 'var' model"):
        VAR.from_pretrained(tmp_path / "ar")


def test_a_single_scale_tokenizer_decodes_its_tokens(model):
    vae_config = replace(architecture("tiny")[0], patch_nums=(TINY.grid,), vocab_size=TINY.vocab_size)
    torch.manual_seed(0)
    vae = VQVAE(vae_config)
    image = torch.rand(2, 3, vae_config.resolution, vae_config.resolution) * 2 - 1
    (idx,) = vae.img_to_idx(image)
    assert idx.shape == (2, TINY.grid**2) and vae.idx_to_img([idx]).shape == image.shape
    out = sample_raster(model, [0, 1], seed=0, vae=vae)
    assert out.images.shape == (2, 3, vae_config.resolution, vae_config.resolution)
    assert 0 <= out.images.min() and out.images.max() <= 1
    with pytest.raises(NextscaleError, match="single-scale tokenizer"):
        sample_raster(model, [0], seed=0, vae=VQVAE(architecture("tiny")[0]))


def test_the_kinds_the_command_line_lists_are_the_models():
    from nextscale.registry import TRANSFORMER_KINDS

    assert TRANSFORMER_KINDS == (VAR.model_type, RasterAR.model_type)


@pytest.fixture(scope="module")
def single_scale_tokenizer(tmp_path_factory):
    torch.manual_seed(0)
    out = tmp_path_factory.mktemp("tok") / "vae"
    VQVAE(replace(architecture("tiny")[0], patch_nums=(4,))).save_pretrained(out)
    return out


def raster_train(tokenizer, run_dir, steps="4", *extra):
    return [
        "train", "--kind", "raster-ar", "--data", "digits", "--tokenizer", str(tokenizer), "--depth", "2",
        "--width-per-depth", "8", "--steps", steps, "--batch-size", "8", "--eval-every", "2", "--save-every", "2",
        "--run-dir", str(run_dir), "--device", "cpu", "--quiet", "--workers", "0", *extra,
    ]  # fmt: skip


@pytest.mark.slow
def test_train_resume_export_and_sample_the_raster_kind(single_scale_tokenizer, tmp_path, capsys):
    import json
    import shutil

    from nextscale.cli import main
    from nextscale.training.export import export_checkpoint

    run = tmp_path / "run"
    assert main(raster_train(single_scale_tokenizer, run)) == 0
    whole = json.loads((run / "log.jsonl").read_text().splitlines()[-1])
    for later in ("ckpt-00000004", "model"):  # as a kill after the checkpoint of step 2 leaves it
        shutil.rmtree(run / later)
    (run / "latest").unlink()
    assert main([*raster_train(single_scale_tokenizer, run), "--resume"]) == 0
    assert json.loads((run / "log.jsonl").read_text().splitlines()[-1]) == whole  # resumed exactly
    assert {"val_loss", "val_acc", "val_loss_4"} <= set(whole)
    stage, model, _ = export_checkpoint(run)
    assert stage == "raster-ar" and isinstance(model, RasterAR) and model.config.grid == 4
    saved = RasterAR.from_pretrained(run / "model" / "var")
    assert saved.config == model.config and saved.config.embed_dim == 16 and saved.num_classes == 10
    vae = VQVAE.from_pretrained(single_scale_tokenizer)
    out = sample_raster(saved, [0, 9], seed=0, vae=vae)
    assert out.images.shape[:2] == (2, 3)
    capsys.readouterr()
    assert main(raster_train(single_scale_tokenizer, tmp_path / "x")[: -0 or None] + ["--preset", "tiny"]) == 2
    assert "--preset applies to --kind var" in capsys.readouterr().err


@pytest.mark.parametrize(
    "change, error",
    [
        (lambda a: a[: a.index("--depth")] + a[a.index("--depth") + 2 :], "from --depth"),
        (lambda a: [*a, "--trainable", "head"], "--trainable applies to --kind var"),
    ],
)
def test_raster_training_refuses_what_it_cannot_do(single_scale_tokenizer, tmp_path, capsys, change, error):
    from nextscale.cli import main

    assert main(change(raster_train(single_scale_tokenizer, tmp_path / "r"))) == 2
    err = capsys.readouterr().err.strip()
    assert error in err and len(err.splitlines()) == 1
    assert not (tmp_path / "r").exists()


def test_raster_flag_refusals_come_before_the_tokenizer_loads(tmp_path, capsys):
    from nextscale.cli import main

    args = raster_train(tmp_path / "no-such-tokenizer", tmp_path / "r")
    assert main([*args, "--trainable", "head"]) == 2
    assert "--trainable applies to --kind var" in capsys.readouterr().err


def test_raster_training_needs_a_single_scale_tokenizer(tmp_path, capsys):
    from nextscale.cli import main

    torch.manual_seed(0)
    VQVAE(architecture("tiny")[0]).save_pretrained(tmp_path / "pyramid")
    assert main(raster_train(tmp_path / "pyramid", tmp_path / "r")) == 2
    assert "single-scale tokenizer" in capsys.readouterr().err


@pytest.mark.slow
def test_a_scaling_sweep_of_the_raster_kind(single_scale_tokenizer, tmp_path):
    import json

    from nextscale.cli import main

    out = tmp_path / "sweep"
    args = [
        "scaling", "run", "--kind", "raster-ar", "--data", "digits", "--tokenizer", str(single_scale_tokenizer),
        "--depths", "1,2,3", "--out", str(out), "--width-per-depth", "8", "--head-dim", "8", "--steps", "2",
        "--batch-size", "8", "--eval-every", "1", "--device", "cpu", "--quiet", "--workers", "0",
    ]  # fmt: skip
    assert main(args) == 0
    assert main(["scaling", "fit", str(out), "--no-plot"]) == 0
    result = json.loads((out / "scaling.json").read_text())
    for r in result["runs"]:
        model = RasterAR.from_pretrained(out / f"d{r['depth']}" / "model" / "var")
        assert r["kind"] == "raster-ar" and r["params"] == sum(p.numel() for p in model.blocks.parameters())


def test_the_sample_command_and_sample_draw_a_raster_model(single_scale_tokenizer, tmp_path, capsys):
    import numpy as np

    from nextscale.cli import main
    from nextscale.sampling import sample
    from nextscale.weights import load_model

    run = tmp_path / "run"
    assert main(raster_train(single_scale_tokenizer, run, "2")) == 0
    vae, model = load_model(run / "model")
    assert isinstance(model, RasterAR)
    a = sample(vae, model, [0, 1], seed=3, cfg=2.0)
    b = sample_raster(model, [0, 1], seed=3, cfg=2.0, vae=vae)
    assert torch.equal(a.tokens[0], b.tokens) and torch.equal(a.images, b.images)
    out = tmp_path / "samples"
    assert (
        main(["sample", "--model", str(run / "model"), "--class", "3", "--n", "2", "--out", str(out), "--seed", "3"])
        == 0
    )
    with np.load(out / "samples.npz") as npz:
        assert npz["arr_0"].shape[0] == 2 and npz["arr_1"].tolist() == [3, 3]
    per_class = tmp_path / "per-class"
    assert main(["sample", "--model", str(run / "model"), "--per-class", "2", "--out", str(per_class)]) == 0
    with np.load(per_class / "samples.npz") as npz:
        assert sorted(npz["arr_1"].tolist()) == sorted(list(range(10)) * 2)
    capsys.readouterr()
    assert main(["sample", "--model", str(run / "model"), "--top-k", "4,8", "--out", str(tmp_path / "x")]) == 2
    assert "--top-k takes one value for a raster-order model" in capsys.readouterr().err
    with pytest.raises(NextscaleError, match="editing applies to VAR's scales"):
        sample(vae, model, [0], seed=0, forced=object())


@pytest.mark.slow
def test_the_digits_preset_evaluates_a_raster_model_without_edits(tmp_path, capsys):
    import json

    from nextscale.cli import main

    torch.manual_seed(0)
    VQVAE(replace(architecture("digits")[0], patch_nums=(8,))).save_pretrained(tmp_path / "vae")
    run = tmp_path / "run"
    args = raster_train(tmp_path / "vae", run, "2")
    args[args.index("--depth") + 1] = "1"
    assert main(args) == 0
    capsys.readouterr()
    record = tmp_path / "eval.json"
    assert (
        main(["eval", "--preset", "digits", "--model", str(run / "model"), "--n-per-class", "3", "--json", str(record)])
        == 0
    )
    assert "edits are skipped" in capsys.readouterr().err
    result = json.loads(record.read_text())
    assert result["options"]["skip_edits"] and "edits" not in result and result["samples"]["fid"] > 0
