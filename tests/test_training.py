"""Training both stages on tiny models: the loss falls, resumed runs match uninterrupted ones exactly."""

import json
import warnings

import pytest
import torch
from PIL import Image

from nextscale.data import DigitsDataset, ImageFolderDataset
from nextscale.errors import NextscaleError
from nextscale.registry import architecture as preset_configs
from nextscale.tokenizer import VQVAE
from nextscale.training import TokenizerOptions, TrainConfig, VAROptions, train_tokenizer, train_var
from nextscale.training.common import batch_indices, lr_factor, param_groups, weight_decay_at
from nextscale.training.export import export_checkpoint
from tests.helpers import tiny_pair


@pytest.fixture(scope="module")
def digits8():
    return DigitsDataset("train", resolution=8), DigitsDataset("test", resolution=8)


def settings(steps, **kw):
    base = dict(steps=steps, batch_size=16, lr=3e-3, warmup_steps=2, eval_every=steps, save_every=100)
    return TrainConfig(**{**base, **kw})


def same_weights(a, b):
    sa, sb = a.state_dict(), b.state_dict()
    return sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)


def test_tokenizer_training_lowers_the_loss_and_reports(digits8, tmp_path):
    vae_config, _ = preset_configs("tiny")
    train, test = digits8
    _, first = train_tokenizer(vae_config, train, test, settings(1), tmp_path / "a", progress=False)
    _, later = train_tokenizer(vae_config, train, test, settings(40), tmp_path / "b", progress=False)
    assert later["psnr"] > first["psnr"] + 1.0
    assert {f"usage_{pn}" for pn in vae_config.patch_nums} <= later.keys()


def tiny_for_digits():
    vae_config, var_config = preset_configs("tiny")
    var_config.num_classes = 10
    return vae_config, var_config


def test_var_training_lowers_the_loss(digits8, tmp_path):
    vae_config, var_config = tiny_for_digits()
    train, test = digits8
    vae, _ = train_tokenizer(vae_config, train, test, settings(10), tmp_path / "tok", progress=False)
    _, first = train_var(var_config, vae, train, test, settings(1), tmp_path / "v1", progress=False)
    _, later = train_var(var_config, vae, train, test, settings(40), tmp_path / "v2", progress=False)
    assert later["val_loss"] < first["val_loss"] - 0.1
    assert {f"val_acc_{pn}" for pn in var_config.patch_nums} <= later.keys()


def test_stopped_and_resumed_runs_end_with_the_same_weights(digits8, tmp_path):
    vae_config, var_config = tiny_for_digits()
    train, test = digits8
    options = TokenizerOptions(revive_every=2)  # revival draws random numbers: they must replay too
    whole, _ = train_tokenizer(
        vae_config, train, test, settings(6), tmp_path / "t-whole", options=options, progress=False
    )
    train_tokenizer(
        vae_config, train, test, settings(6), tmp_path / "t-split", options=options, progress=False, stop_after=3
    )
    resumed, _ = train_tokenizer(
        vae_config, train, test, settings(6), tmp_path / "t-split", options=options, progress=False
    )
    assert same_weights(whole, resumed)

    # Random label dropout and drop path, the progressive curriculum over scales, and an EMA: all must replay.
    opts = VAROptions(cond_drop_rate=0.5, drop_path_rate=0.2)
    cfg = settings(8, pg=0.6, pg0=1, pgwp=2, ema=0.9)
    whole_v, _ = train_var(var_config, whole, train, test, cfg, tmp_path / "v-whole", options=opts, progress=False)
    train_var(var_config, whole, train, test, cfg, tmp_path / "v-split", options=opts, progress=False, stop_after=4)
    resumed_v, _ = train_var(var_config, whole, train, test, cfg, tmp_path / "v-split", options=opts, progress=False)
    assert same_weights(whole_v, resumed_v)
    _, ema_model, _ = export_checkpoint(tmp_path / "v-split")
    _, raw_model, _ = export_checkpoint(tmp_path / "v-split", "raw")
    assert same_weights(raw_model, whole_v) and not same_weights(ema_model, whole_v)


def test_resume_refuses_other_settings_and_allows_more_steps(digits8, tmp_path):
    vae_config, _ = preset_configs("tiny")
    train, test = digits8
    train_tokenizer(vae_config, train, test, settings(2), tmp_path / "r", progress=False)
    with pytest.raises(NextscaleError, match=r"other training settings: lr \(0.003 → 0.0001\) differ"):
        train_tokenizer(vae_config, train, test, settings(2, lr=1e-4), tmp_path / "r", progress=False)
    with pytest.raises(NextscaleError, match="batch_size \\(16 → 8\\)"):
        train_tokenizer(vae_config, train, test, settings(2, batch_size=8), tmp_path / "r", progress=False)
    more = settings(4, save_every=1, log_every=1, keep=1)  # length and cadences may change on resume
    train_tokenizer(vae_config, train, test, more, tmp_path / "r", resume=True, progress=False)
    assert sorted(p.name for p in (tmp_path / "r").glob("ckpt-*")) == ["ckpt-00000004"]


def test_a_run_made_before_a_setting_existed_resumes_at_its_default(digits8, tmp_path):
    from dataclasses import asdict

    from nextscale.training.checkpoint import TRAINER_JSON

    _, var_config = tiny_for_digits()
    vae = VQVAE(preset_configs("tiny")[0])
    train, test = digits8
    run = tmp_path / "old"
    recorded = dict(extra={"options": asdict(VAROptions())})  # as `nextscale train` records its options
    train_var(var_config, vae, train, test, settings(2, **recorded), run, progress=False)
    record_path = next(run.glob("ckpt-*")) / TRAINER_JSON
    record = json.loads(record_path.read_text())
    del record["settings"]["train"]["count_flops"]  # as written before these settings were added
    del record["settings"]["train"]["extra"]["options"]["trainable"]
    record_path.write_text(json.dumps(record))
    train_var(var_config, vae, train, test, settings(3, **recorded), run, resume=True, progress=False)
    # A setting missing from the record is its default, not anything: another value is still refused.
    with pytest.raises(NextscaleError, match=r"count_flops \(False → True\)"):
        train_var(
            var_config, vae, train, test, settings(4, count_flops=True, **recorded), run, resume=True, progress=False
        )


def test_a_crash_while_saving_leaves_the_last_checkpoint_usable(digits8, tmp_path, monkeypatch):
    from nextscale.training import checkpoint

    vae_config, var_config = tiny_for_digits()
    train, test = digits8
    vae, cfg = VQVAE(vae_config), settings(6, save_every=2)
    whole, _ = train_var(var_config, vae, train, test, cfg, tmp_path / "whole", progress=False)
    real_save = checkpoint.dcp.save

    def crash_after_writing(tensors, checkpoint_id):
        real_save(tensors, checkpoint_id=checkpoint_id)
        if str(checkpoint_id).endswith("ckpt-00000004"):
            raise OSError("No space left on device")  # every shard written, the checkpoint not yet published

    monkeypatch.setattr(checkpoint.dcp, "save", crash_after_writing)
    with pytest.raises(OSError, match="No space left"):
        train_var(var_config, vae, train, test, cfg, tmp_path / "run", progress=False)
    monkeypatch.undo()
    assert (tmp_path / "run" / "latest").read_text() == "ckpt-00000002\n"
    assert not (tmp_path / "run" / "ckpt-00000004").exists()
    resumed, _ = train_var(var_config, vae, train, test, cfg, tmp_path / "run", resume=True, progress=False)
    assert same_weights(whole, resumed)
    assert not list((tmp_path / "run").glob(".partial-*"))  # the next save cleared the crashed one


def test_token_shards_train_what_their_images_train(digits8, tmp_path):
    from nextscale.data.tokens import TokenDataset, tokenize

    vae_config, var_config = tiny_for_digits()
    train, test = digits8
    vae = VQVAE(vae_config)
    tokenize(train, vae, tmp_path / "tokens", shard_size=500, progress=False)
    tokens = TokenDataset(tmp_path / "tokens")
    assert len(tokens) == len(train) and len(tokens.arrays) == 3 and tokens.num_classes == 10
    opts, cfg = VAROptions(cond_drop_rate=0.5, drop_path_rate=0.2), settings(4)
    from_images, _ = train_var(var_config, vae, train, test, cfg, tmp_path / "a", options=opts, progress=False)
    from_tokens, _ = train_var(var_config, vae, tokens, test, cfg, tmp_path / "b", options=opts, progress=False)
    assert same_weights(from_images, from_tokens)


def test_flipped_token_shards_and_bad_shards(digits8, tmp_path, capsys):
    from nextscale.cli import main
    from nextscale.data.tokens import TokenDataset, tokenize

    vae_config, _ = tiny_for_digits()
    train, _ = digits8
    vae = VQVAE(vae_config)
    tokenize(train, vae, tmp_path / "t", flip=True, shard_size=1000, progress=False)
    tokens = TokenDataset(tmp_path / "t")
    img, label = train[3]
    flipped = torch.cat(vae.img_to_idx(img.flip(-1)[None]), dim=1)[0]
    assert torch.equal(tokens[(3, 0, 1)][0], flipped) and tokens[(3, 0, 1)][1] == label
    assert not torch.equal(tokens[(3, 0, 0)][0], flipped)
    shard = tmp_path / "t" / "shard-00001.u16"
    data = bytearray(shard.read_bytes())
    data[100] ^= 1
    shard.write_bytes(bytes(data))
    with pytest.raises(NextscaleError, match=r"shard-00001.u16: corrupt token shard"):
        TokenDataset(tmp_path / "t")
    shard.write_bytes(bytes(data[:-2]))
    argv = ["train", "--tokenizer", "digits", "--data", str(tmp_path / "t"), "--run-dir", str(tmp_path / "r")]
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and "shard-00001.u16: truncated or missing token shard" in err


def test_the_data_of_a_step_does_not_depend_on_the_world_size():
    from nextscale.training.feed import step_keys

    whole = step_keys(7, 100, 8, seed=3, local=slice(0, 8))
    halves = step_keys(7, 100, 8, seed=3, local=slice(0, 4)) + step_keys(7, 100, 8, seed=3, local=slice(4, 8))
    assert whole == halves  # indices, per-sample seeds (crops) and flips alike
    next_epoch = step_keys(7 + 12, 100, 8, seed=3, local=slice(0, 8))  # 12 steps per epoch
    assert [k[0] for k in next_epoch] != [k[0] for k in whole]


def test_the_progressive_curriculum():
    from nextscale.training.common import newest_scale_weight, progressive_scale

    cfg = settings(100, warmup_steps=10, pg=0.5, pg0=1, pgwp=4)
    scales = [progressive_scale(s, cfg, 5) for s in range(100)]
    assert scales[:10] == [1] * 10 and scales[50:] == [4] * 50  # pg0 during warm-up, all scales from 50%
    assert scales == sorted(scales) and set(scales) == {1, 2, 3, 4}
    first_of_2 = scales.index(2)
    ramp = [newest_scale_weight(first_of_2 + i, cfg, 5) for i in range(5)]
    assert ramp == [0.25, 0.5, 0.75, 1.0, 1.0] and newest_scale_weight(0, cfg, 5) == 1.0
    assert all(progressive_scale(s, settings(100), 5) == 4 for s in range(100))  # pg = 0: off


def test_a_recipe_fills_in_what_was_not_given():
    from nextscale.cli import build_parser
    from nextscale.cli.train import run_settings, var_architecture

    args = build_parser().parse_args(
        ["train", "--tokenizer", "x", "--data", "d", "--run-dir", "r", "--recipe", "var-d30", "--lr", "1e-4"]
    )
    config, options = run_settings(args, "var", 1_281_167)
    steps = 350 * (1_281_167 // 1024)
    assert (config.batch_size, config.steps, config.warmup_steps) == (1024, steps, steps // 50)
    assert var_architecture(args).depth == 30
    assert config.lr == 1e-4 and config.weight_decay_end == 0.08 and config.precision == "fp16"
    assert options.init_adaln_gamma == 1e-5 and options.drop_path_rate == pytest.approx(0.125)
    assert config.extra["options"] == vars(options)  # saved with the run, as resumed runs compare it


def test_reference_schedule_and_groups():
    assert lr_factor(0, 100, 10) == pytest.approx(0.005)
    assert lr_factor(10, 100, 10) == 1.0 and lr_factor(13, 100, 10) == 1.0  # flat for 5% after warm-up
    assert lr_factor(99, 100, 10, wpe=0.1) == pytest.approx(0.1)
    assert weight_decay_at(0, 100, 0.05, 0.08) == pytest.approx(0.05)
    assert weight_decay_at(99, 100, 0.05, 0.08) == pytest.approx(0.08)
    _, var_config = preset_configs("tiny")
    from nextscale.transformer import VAR

    var = VAR(var_config)
    decay, no_decay = param_groups(var, 0.05)
    names = {id(p): n for n, p in var.named_parameters()}
    no_decay_names = {names[id(p)] for p in no_decay["params"]}
    decay_names = {names[id(p)] for p in decay["params"]}
    assert {"pos_1LC", "pos_start", "lvl_embed.weight", "blocks.0.attn.scale_mul_1H11"} <= no_decay_names
    assert {"class_emb.weight", "word_embed.weight", "blocks.0.attn.mat_qkv.weight"} <= decay_names


def test_data_order_is_a_function_of_seed_and_step():
    a = batch_indices(5, 100, 16, seed=1)
    assert torch.equal(a, batch_indices(5, 100, 16, seed=1))
    epoch = torch.cat([batch_indices(s, 100, 16, seed=1) for s in range(6)])
    assert len(set(epoch.tolist())) == 96  # one epoch: no repeats, last partial batch dropped


def test_image_folder_with_a_corrupt_file_trains_on_the_others(tmp_path):
    root = tmp_path / "data"
    for label in ("a", "b"):
        (root / label).mkdir(parents=True)
        for i in range(10):
            color = (i * 20, 100 if label == "a" else 200, 50)
            Image.new("RGB", (12, 10), color).save(root / label / f"{i}.png")
    (root / "a" / "broken.png").write_bytes(b"not a png at all")
    (root / "b" / "notes.txt").write_text("not an image")
    with pytest.warns(UserWarning, match=r"skipped 1 file\(s\) that are not images: a/broken\.png"):
        data = ImageFolderDataset(root, resolution=8, train=True)  # headers read when listed, pixels not
    assert len(data) == 20 and data.num_classes == 2 and data.skipped == [("a/broken.png", "not an image file")]
    img, label = data[10]  # b/0.png: every index is its own file, never a stand-in
    assert img.shape == (3, 8, 8) and label == 1 and data.samples[10][0].name == "0.png"
    vae_config, _ = preset_configs("tiny")
    with warnings.catch_warnings(record=True) as seen:
        warnings.simplefilter("always")
        _, metrics = train_tokenizer(
            vae_config, data, None, settings(6, batch_size=8), tmp_path / "run", progress=False
        )
    assert metrics["train_psnr"] > 0
    assert not [w for w in seen if "broken" in str(w.message)]  # nothing left to find while training


@pytest.mark.slow
def test_training_commands_end_to_end(tmp_path, capsys):
    from nextscale.cli import main
    from nextscale.weights import load_model

    common = [
        "--data",
        "digits",
        "--steps",
        "2",
        "--batch-size",
        "8",
        "--eval-every",
        "2",
        "--device",
        "cpu",
        "--quiet",
    ]
    tok = ["train-tokenizer", "--preset", "tiny", "--run-dir", str(tmp_path / "tok"), *common]
    assert main(tok) == 0
    assert "tokenizer saved to" in capsys.readouterr().out
    assert main(tok) == 2  # the run directory holds a run: refuse to overwrite it
    assert "pass --resume" in capsys.readouterr().err
    assert main([*tok, "--resume"]) == 0  # already at its last step: nothing more to do
    var = [
        "train",
        "--tokenizer",
        str(tmp_path / "tok" / "model"),
        "--preset",
        "tiny",
        "--run-dir",
        str(tmp_path / "var"),
        *common,
    ]
    assert main(var) == 0
    by_name = ["train", "--tokenizer", "digits", "--preset", "tiny", "--run-dir", str(tmp_path / "named"), *common]
    assert main(by_name) == 0  # a built-in model's name works wherever a tokenizer is taken
    vae, model = load_model(tmp_path / "var" / "model")
    assert model.num_classes == 10 and vae.config.patch_nums == model.patch_nums
    assert main(["train", "--tokenizer", str(tmp_path / "nope"), "--run-dir", str(tmp_path / "x"), *common]) == 2
    assert main(["train-tokenizer", "--data", str(tmp_path / "nope"), "--run-dir", str(tmp_path / "y")]) == 2
    assert main([*tok[: -len(common)], "--data", "digits", "--steps", "0", "--run-dir", str(tmp_path / "z")]) == 2
    err = capsys.readouterr().err
    assert "no such file" in err and "not a directory" in err and "steps must be at least 1" in err


def test_adversarial_option_trains_a_discriminator(digits8, tmp_path):
    vae_config, _ = preset_configs("tiny")
    train, test = digits8
    options = TokenizerOptions(adversarial_weight=0.1, revive_every=0)
    _, metrics = train_tokenizer(
        vae_config, train, test, settings(2), tmp_path / "gan", options=options, progress=False
    )
    assert metrics["psnr"] > 0
    from nextscale.training.checkpoint import SafeReader

    saved = SafeReader(tmp_path / "gan" / "ckpt-00000002").read_metadata().state_dict_metadata
    assert any(k.startswith("discriminator.") for k in saved) and any(k.startswith("disc_optim.") for k in saved)


def test_a_trainer_never_writes_into_a_run_it_did_not_check(digits8, tmp_path):
    """`Trainer.fit` without `start` still checks: an existing run is continued, never overwritten."""
    from nextscale.tokenizer import VQVAE
    from nextscale.training import Trainer
    from nextscale.training.tokenizer_stage import TokenizerStage

    vae_config, _ = preset_configs("tiny")
    train, test = digits8
    config = settings(2)
    train_tokenizer(vae_config, train, test, config, tmp_path / "run", progress=False)
    stage = TokenizerStage(VQVAE(vae_config), train, test, settings(2, lr=1e-4), None, "cpu")
    with pytest.raises(NextscaleError, match="other training settings"):
        Trainer(stage, settings(2, lr=1e-4), tmp_path / "run", progress=False).fit()
    assert sorted(p.name for p in (tmp_path / "run").glob("ckpt-*")) == ["ckpt-00000002"]


def test_the_loading_benchmark_reports_both_formats(tmp_path):
    from nextscale.bench import loading

    results = loading.bench_loading("tiny", tmp_path)  # (`.pth` is timed for released architectures only)
    assert [r.format for r in results] == ["safetensors"]
    assert all(r.load_s > 0 and r.peak_after_touching >= r.rss_before_load > 0 for r in results)
    assert (tmp_path / "tiny" / "var.pth").is_file()  # one folder per preset: another preset never reuses it
    assert "safetensors" in loading.table(results)


@pytest.mark.slow
def test_lpips_from_local_files_and_the_offline_error(tmp_path, monkeypatch):
    from torchvision.models import vgg16

    from nextscale.training.losses import PerceptualLoss

    torch.manual_seed(0)
    torch.save(vgg16().state_dict(), tmp_path / "vgg16.pth")
    lins = {f"lin{i}.model.1.weight": torch.rand(1, c, 1, 1) for i, c in enumerate(PerceptualLoss.CHANNELS)}
    torch.save(lins, tmp_path / "vgg.pth")
    lpips = PerceptualLoss(str(tmp_path / "vgg16.pth"), str(tmp_path / "vgg.pth"))
    a, b = torch.rand(2, 3, 32, 32) * 2 - 1, torch.rand(2, 3, 32, 32) * 2 - 1
    assert lpips(a, a).item() == 0 and lpips(a, b).item() > 0 and lpips.learned
    torch.save({"lin0.model.1.weight": torch.rand(1, 3, 1, 1)}, tmp_path / "wrong.pth")
    with pytest.raises(NextscaleError, match="is not the lpips package's vgg.pth"):
        PerceptualLoss(str(tmp_path / "vgg16.pth"), str(tmp_path / "wrong.pth"))

    def offline(*args, **kwargs):
        raise OSError("no network")

    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path / "hub"))
    monkeypatch.setattr(torch.hub, "load_state_dict_from_url", offline)
    with pytest.raises(NextscaleError, match=r"put vgg16-397923af.pth .* in .*hub/checkpoints"):
        PerceptualLoss()


@pytest.mark.slow
def test_the_adaptive_adversarial_weight_trains(digits8, tmp_path):
    vae_config, _ = preset_configs("tiny")
    train, test = digits8
    options = TokenizerOptions(adversarial_weight=0.5, adversarial_start=1, revive_every=0)
    train_tokenizer(
        vae_config, train, test, settings(3, log_every=1), tmp_path / "gan", options=options, progress=False
    )
    records = [json.loads(line) for line in (tmp_path / "gan" / "log.jsonl").read_text().splitlines()]
    weights = [r["adversarial_weight"] for r in records if "adversarial_weight" in r]
    assert len(weights) == 2 and all(0 < w < 0.5 * 1e4 for w in weights)


@pytest.mark.slow
def test_checkpointed_and_compiled_steps_train_the_same_weights(digits8, tmp_path):
    vae_config, var_config = tiny_for_digits()
    train, test = digits8
    vae, opts = VQVAE(vae_config), VAROptions(cond_drop_rate=0.5, drop_path_rate=0.2)
    plain, _ = train_var(var_config, vae, train, test, settings(3), tmp_path / "a", options=opts, progress=False)
    recomputed, _ = train_var(
        var_config, vae, train, test, settings(3, grad_checkpointing=True), tmp_path / "b", options=opts, progress=False
    )
    assert same_weights(plain, recomputed)  # the drop-path masks are inputs: the recomputation sees the same
    compiled, _ = train_var(
        var_config, vae, train, test, settings(3, compile="eager"), tmp_path / "c", options=opts, progress=False
    )
    assert same_weights(plain, compiled)


@pytest.mark.slow
def test_dataloader_workers_do_not_change_what_a_step_sees(tmp_path):
    root = tmp_path / "data"
    for label in ("a", "b"):
        (root / label).mkdir(parents=True)
        for i in range(12):
            Image.new("RGB", (13, 11), (i * 20, 90 if label == "a" else 180, 40 + i)).save(root / label / f"{i}.png")
    data = ImageFolderDataset(root, resolution=8, train=True, hflip=True)  # random crops and flips
    vae_config, _ = preset_configs("tiny")
    runs = [
        train_tokenizer(
            vae_config, data, None, settings(3, batch_size=8, workers=w), tmp_path / f"w{w}", progress=False
        )[0]
        for w in (0, 2)
    ]
    assert same_weights(*runs)


def test_a_checkpoint_index_cannot_run_code(tmp_path):
    import os
    import pickle

    from nextscale.errors import CheckpointError
    from nextscale.training.checkpoint import SafeReader

    class Payload:
        def __reduce__(self):
            return os.getcwd, ()

    module, name = b"torch.distributed.checkpoint.filesystem", b"os.getcwd"  # a dotted name inside an allowed module
    dotted = b"\x80\x04\x8c" + bytes([len(module)]) + module + b"\x8c" + bytes([len(name)]) + name + b"\x93)R."
    for forged in (pickle.dumps(Payload()), dotted):
        (tmp_path / ".metadata").write_bytes(forged)
        with pytest.raises(CheckpointError, match="is not part of a checkpoint index"):
            SafeReader(tmp_path).read_metadata()


def test_tokenize_refuses_to_resume_another_tokenization(digits8, tmp_path):
    from nextscale.data.tokens import tokenize

    vae_config, _ = tiny_for_digits()
    train, _ = digits8
    tokenize(train, VQVAE(vae_config), tmp_path / "t", shard_size=1000, progress=False)
    with pytest.raises(NextscaleError, match=r"made with other settings \(orientations, shard_size differ\)"):
        tokenize(train, VQVAE(vae_config), tmp_path / "t", shard_size=500, flip=True, progress=False)


@pytest.mark.slow
def test_a_checkpoint_of_an_optimizer_that_never_stepped_resumes_exactly(digits8, tmp_path):
    from nextscale.training import Trainer
    from nextscale.training.var_stage import VARStage
    from nextscale.transformer import VAR

    vae_config, var_config = tiny_for_digits()
    train, test = digits8
    vae = VQVAE(vae_config)
    whole, _ = train_var(var_config, vae, train, test, settings(3), tmp_path / "whole", progress=False)
    torch.manual_seed(0)  # as train_var draws the initial weights
    var = VAR(var_config, device="meta")
    var.to_empty(device="cpu")
    var.init_weights(**VAROptions().init_kwargs())
    trainer = Trainer(VARStage(vae, var, train, test, settings(3)), settings(3), tmp_path / "run", progress=False)
    trainer.start(False)
    trainer.save()  # step 0: AdamW has no state yet (as when fp16's scaler skips the first steps)
    # a bare Trainer records no data or tokenizer, so resuming says it cannot check them
    with pytest.warns(UserWarning, match="does not record its data and tokenizer"):
        resumed, _ = train_var(var_config, vae, train, test, settings(3), tmp_path / "run", resume=True, progress=False)
    assert same_weights(whole, resumed)


def signal_during_step(monkeypatch, step: int, *signals: int) -> None:
    """Makes the tokenizer's training step `step` raise `signals` in this process (as a terminal's Ctrl-C lands
    mid-step)."""
    import signal

    from nextscale.training.tokenizer_stage import TokenizerStage

    train_step = TokenizerStage.train_step

    def signalled(self, batch, at, generator):
        out = train_step(self, batch, at, generator)
        for sig in signals if at == step else ():
            if signal.getsignal(sig) in (signal.default_int_handler, signal.SIG_DFL):
                pytest.fail(f"the trainer does not handle {sig!r}")  # Python's own would end the test session
            signal.raise_signal(sig)
        return out

    monkeypatch.setattr(TokenizerStage, "train_step", signalled)


@pytest.mark.slow
def test_ctrl_c_saves_a_checkpoint_at_the_end_of_its_step(digits8, tmp_path, capsys, monkeypatch):
    import signal

    vae_config = preset_configs("tiny")[0]
    whole, _ = train_tokenizer(vae_config, *digits8, settings(6), tmp_path / "whole", progress=False)
    signal_during_step(monkeypatch, 2, signal.SIGINT)
    handlers = signal.getsignal(signal.SIGINT), signal.getsignal(signal.SIGTERM)
    with pytest.raises(SystemExit) as stopped:
        train_tokenizer(vae_config, *digits8, settings(6), tmp_path / "run", progress=False)
    monkeypatch.undo()
    assert stopped.value.code == 130
    assert "stopped by Ctrl-C at step 3; checkpoint saved: rerun with --resume" in capsys.readouterr().err
    assert (signal.getsignal(signal.SIGINT), signal.getsignal(signal.SIGTERM)) == handlers  # given back
    assert sorted(p.name for p in (tmp_path / "run").glob("ckpt-*")) == ["ckpt-00000003"]
    resumed, _ = train_tokenizer(vae_config, *digits8, settings(6), tmp_path / "run", resume=True, progress=False)
    assert same_weights(whole, resumed)


@pytest.mark.slow
def test_a_second_ctrl_c_stops_at_once_and_the_run_starts_again(digits8, tmp_path, capsys, monkeypatch):
    import signal

    vae_config, config = preset_configs("tiny")[0], settings(4, log_every=1)
    whole, _ = train_tokenizer(vae_config, *digits8, config, tmp_path / "whole", progress=False)
    signal_during_step(monkeypatch, 2, signal.SIGINT, signal.SIGINT)
    handler = signal.getsignal(signal.SIGINT)
    with pytest.raises(KeyboardInterrupt):
        train_tokenizer(vae_config, *digits8, config, tmp_path / "run", progress=False)
    monkeypatch.undo()
    assert signal.getsignal(signal.SIGINT) == handler
    assert sorted(p.name for p in (tmp_path / "run").iterdir()) == ["log.jsonl", "runs.jsonl"]  # no checkpoint
    with pytest.raises(NextscaleError, match="stopped before its first checkpoint .*pass --resume to start it again"):
        train_tokenizer(vae_config, *digits8, config, tmp_path / "run", resume=False, progress=False)
    capsys.readouterr()
    again, _ = train_tokenizer(vae_config, *digits8, config, tmp_path / "run", resume=True, progress=False)
    assert "holds a run stopped before its first checkpoint: starting it again from step 0" in capsys.readouterr().err
    assert same_weights(whole, again)


def test_a_refused_run_writes_nothing(digits8, tmp_path):
    vae_config = preset_configs("tiny")[0]
    with pytest.raises(NextscaleError, match="fewer than one batch of 5000"):
        train_tokenizer(vae_config, *digits8, settings(2, batch_size=5000), tmp_path / "run", progress=False)
    assert not (tmp_path / "run").exists()


@pytest.mark.slow
def test_metrics_measured_on_the_training_data_are_named_train(digits8, tmp_path):
    vae_config, var_config = tiny_for_digits()
    train, test = digits8
    vae = VQVAE(vae_config)
    _, held_out = train_var(var_config, vae, train, test, settings(1), tmp_path / "val", progress=False)
    _, on_train = train_var(var_config, vae, train, None, settings(1), tmp_path / "train", progress=False)
    assert {"val_loss", "val_acc", "val_acc_4"} <= held_out.keys() and not any(k.startswith("train") for k in held_out)
    assert {"train_loss", "train_acc", "train_acc_4"} <= on_train.keys() and not any("val" in k for k in on_train)
    logged = (tmp_path / "train" / "log.jsonl").read_text()
    assert '"train_loss"' in logged and "val_" not in logged
    _, tokenizer = train_tokenizer(vae_config, train, None, settings(1), tmp_path / "tok", progress=False)
    assert "train_psnr" in tokenizer and "psnr" not in tokenizer


@pytest.mark.slow
def test_every_run_starts_with_a_summary(digits8, tmp_path, capsys):
    from nextscale.training.monitor import run_summary

    vae_config = preset_configs("tiny")[0]
    train_tokenizer(vae_config, *digits8, settings(1), tmp_path / "quiet", progress=False)
    assert capsys.readouterr().err == ""  # progress=False: not a word
    train_tokenizer(vae_config, *digits8, settings(2), tmp_path / "run")
    line = capsys.readouterr().err.splitlines()[0]
    assert line == (
        "training the tokenizer: 1,437 images in 10 classes (0, 1, 2, …, 9); 32 px images read at 8 px by preset "
        "tiny; 30 tokens per image; 44,055 parameters; 2 steps of 16 images = 0.022 epochs"
    )
    root = tmp_path / "data"
    for label in ("cat", "dog"):
        (root / label).mkdir(parents=True)
        for i in range(8):
            Image.new("RGB", (12, 10), (i * 20, 90, 40)).save(root / label / f"{i}.png")
    folder = ImageFolderDataset(root, resolution=8)
    config = settings(100, batch_size=4)
    summary = run_summary("var", folder, vae_config, 1234, config, step=50)
    assert "16 images in 2 classes (cat, dog); 12×10 px images (the first) read at 8 px by preset tiny" in summary
    assert summary.endswith("1,234 parameters; 100 steps of 4 images = 25 epochs, from step 50")

    class Many(torch.utils.data.Dataset):  # a dataset of the user's own: its size on disk is unknown
        classes = [f"c{i}" for i in range(1000)]

        def __len__(self):
            return 1000

        def __getitem__(self, key):
            return torch.zeros(3, 8, 8), 0

    summary = run_summary("var", Many(), vae_config, 1, config, step=0)
    assert "1,000 images in 1,000 classes (c0, c1, c2, …, c999); 8 px images; 30 tokens per image" in summary


@pytest.mark.slow
def test_dataloader_workers_outlive_a_ctrl_c(tmp_path):
    """A terminal's Ctrl-C reaches the DataLoader's workers too: they must go on reading until the trainer has
    saved its checkpoint (a dead worker fails the next batch)."""
    import multiprocessing
    import os
    import signal

    from nextscale.training.feed import step_batches

    root = tmp_path / "data"
    for label in ("a", "b"):
        (root / label).mkdir(parents=True)
        for i in range(4):
            Image.new("RGB", (12, 10), (i * 40, 90, 40)).save(root / label / f"{i}.png")
    batches = step_batches(
        ImageFolderDataset(root, resolution=8),
        settings(12, batch_size=4, workers=1),
        slice(0, 4),
        0,
        12,
        torch.device("cpu"),
    )
    others = set(multiprocessing.active_children())
    next(batches)  # the worker is up
    (worker,) = set(multiprocessing.active_children()) - others
    os.kill(worker.pid, signal.SIGINT)
    assert len(list(batches)) == 11  # more than it had fetched ahead: the worker lived on


def seeded_tokenizer(seed: int) -> VQVAE:
    """A tiny tokenizer for the digits at 8 px: each seed gives other weights of the same shape."""
    torch.manual_seed(seed)
    return VQVAE(tiny_for_digits()[0])


def short(model) -> str:
    return f"{model.fingerprint()[:12]}…"


def one_image_per_class(root, classes: int = 10, tint: int = 0) -> ImageFolderDataset:
    for c in range(classes):
        (root / f"{c}").mkdir(parents=True)
        Image.new("RGB", (8, 8), (c * 20, 90, tint)).save(root / f"{c}" / "0.png")
    return ImageFolderDataset(root, 8, train=False)


def test_token_shards_of_another_tokenizer_are_refused_for_training_and_validation(tmp_path):
    from nextscale.data.tokens import TokenDataset, tokenize

    _, var_config = tiny_for_digits()
    images = one_image_per_class(tmp_path / "images")
    vae, other = seeded_tokenizer(0), seeded_tokenizer(1)
    tokenize(images, vae, tmp_path / "mine", progress=False)
    tokenize(images, other, tmp_path / "theirs", progress=False)
    mine, theirs = TokenDataset(tmp_path / "mine"), TokenDataset(tmp_path / "theirs")
    refusal = rf"theirs holds tokens made by tokenizer {short(other)}, not by this one \({short(vae)}\)"
    with pytest.raises(NextscaleError, match=refusal):
        train_var(var_config, vae, theirs, None, settings(1), tmp_path / "a", progress=False)
    with pytest.raises(NextscaleError, match=refusal):
        train_var(var_config, vae, mine, theirs, settings(1), tmp_path / "b", progress=False)


def test_token_shards_from_before_fingerprints_are_taken_with_a_note(tmp_path):
    from nextscale.data.tokens import TokenDataset, tokenize
    from nextscale.training.var_stage import check_token_data

    tokenize(one_image_per_class(tmp_path / "images"), seeded_tokenizer(0), tmp_path / "t", progress=False)
    index = json.loads((tmp_path / "t" / "index.json").read_text())
    (tmp_path / "t" / "index.json").write_text(json.dumps({**index, "format": 1, "tokenizer": "runs/tok/model"}))
    with pytest.warns(UserWarning, match="does not record the tokenizer that made its tokens.*cannot be checked"):
        check_token_data(TokenDataset(tmp_path / "t"), seeded_tokenizer(1))


def test_a_transformer_is_refused_data_of_another_class_count(tmp_path):
    _, var_config = tiny_for_digits()  # ten classes
    three = one_image_per_class(tmp_path / "images", classes=3)
    with pytest.raises(NextscaleError, match=r"the data has 3 classes and the model 10: .*\(num_classes=3\)"):
        train_var(var_config, seeded_tokenizer(0), three, None, settings(1), tmp_path / "run", progress=False)


@pytest.mark.slow
def test_a_run_records_its_data_and_tokenizer_and_resumes_on_nothing_else(tmp_path):
    from nextscale.data.tokens import TokenDataset, tokenize
    from nextscale.weights import load_model, save_model

    _, var_config = tiny_for_digits()
    images, look_alike = one_image_per_class(tmp_path / "a"), one_image_per_class(tmp_path / "b", tint=1)
    vae, other, run = seeded_tokenizer(0), seeded_tokenizer(1), tmp_path / "run"
    first, more = settings(1, batch_size=8), settings(2, batch_size=8)
    var, _ = train_var(var_config, vae, images, None, first, run, progress=False)
    recorded = {"tokenizer": vae.fingerprint(), "classes": [str(c) for c in range(10)]}
    _, exported, _ = export_checkpoint(run)
    assert var.provenance == exported.provenance == recorded
    save_model(vae, exported, tmp_path / "model")
    assert load_model(tmp_path / "model")[1].provenance == recorded

    with pytest.raises(NextscaleError, match=r"settings: data \(images:10:\w{12} → images:10:\w{12}\) differ"):
        train_var(var_config, vae, look_alike, None, more, run, resume=True, progress=False)
    tokenize(images, vae, tmp_path / "tokens", progress=False)  # the same images, as shards: another input
    with pytest.raises(NextscaleError, match=r"data \(images:10:\w{12} → tokens:10:\w{12}\)"):
        train_var(var_config, vae, TokenDataset(tmp_path / "tokens"), None, more, run, resume=True, progress=False)
    with pytest.raises(NextscaleError, match=rf"settings: tokenizer \({short(vae)} → {short(other)}\) differ"):
        train_var(var_config, other, images, None, more, run, resume=True, progress=False)
    train_var(var_config, vae, images, None, more, run, resume=True, progress=False)  # the same: it goes on
    assert (run / "ckpt-00000002").is_dir()

    record_path = run / "ckpt-00000002" / "trainer.json"  # as an older version wrote it: the tokenizer's path only
    record = json.loads(record_path.read_text())
    record["settings"]["train"]["extra"] = {"tokenizer": "runs/tok/model"}
    record_path.write_text(json.dumps(record))
    with pytest.warns(UserWarning, match="does not record its data and tokenizer: they cannot be checked"):
        train_var(var_config, vae, images, None, settings(3, batch_size=8), run, resume=True, progress=False)


@pytest.mark.slow
def test_the_commands_find_a_runs_tokenizer_by_content_from_any_directory(tmp_path, monkeypatch, capsys):
    import shutil

    from nextscale.cli import main
    from nextscale.weights import load_model

    seeded_tokenizer(0).save_pretrained(tmp_path / "tok")
    seeded_tokenizer(1).save_pretrained(tmp_path / "other")
    run, model = str(tmp_path / "run"), tmp_path / "model"
    common = ["--preset", "tiny", "--batch-size", "8", "--device", "cpu", "--quiet", "--run-dir", run]
    monkeypatch.chdir(tmp_path)
    assert main(["train", "--tokenizer", "tok", "--data", "digits", "--steps", "1", *common]) == 0
    monkeypatch.chdir(tmp_path / "run")  # the same tokenizer by another path, from another directory
    resume = ["train", "--data", "digits", "--resume", *common]
    assert main([*resume, "--tokenizer", f"{tmp_path / 'tok'}/", "--steps", "2"]) == 0
    assert main([*resume, "--tokenizer", "../other", "--steps", "3"]) == 2
    assert f"tokenizer ({short(seeded_tokenizer(0))} → {short(seeded_tokenizer(1))})" in capsys.readouterr().err
    one_image_per_class(tmp_path / "images")
    other_data = [*resume[:1], "--data", str(tmp_path / "images"), *resume[3:], "--tokenizer", "../tok"]
    assert main([*other_data, "--steps", "3"]) == 2
    assert "data (digits:1437:" in capsys.readouterr().err

    assert main(["export", run, str(model)]) == 0  # the recorded tokenizer, found from here
    vae, var = load_model(model)
    assert var.provenance["tokenizer"] == vae.fingerprint() == seeded_tokenizer(0).fingerprint()
    shutil.move(tmp_path / "tok", tmp_path / "moved")
    assert main(["export", run, str(model)]) == 2
    assert f"the run's tokenizer {tmp_path / 'tok'} cannot be read" in capsys.readouterr().err
    shutil.copytree(tmp_path / "other", tmp_path / "tok")  # another tokenizer where the run's was
    assert main(["export", run, str(model)]) == 2
    assert "has changed since the run trained with it" in capsys.readouterr().err
    assert main(["export", run, str(model), "--tokenizer", "../other"]) == 2
    assert "is not the tokenizer this run trained with" in capsys.readouterr().err
    assert main(["export", run, str(model), "--tokenizer", "../moved"]) == 0
    assert main(["export", run, str(tmp_path / "anyway"), "--tokenizer", "../other", "--any-tokenizer"]) == 0
    assert "load it with --any-tokenizer" in capsys.readouterr().out
    with pytest.raises(NextscaleError, match="was trained with tokenizer"):
        load_model(tmp_path / "anyway")
    assert load_model(tmp_path / "anyway", check_tokenizer=False)[0].fingerprint() == seeded_tokenizer(1).fingerprint()


def test_an_image_set_is_encoded_where_it_is_read_and_equals_encoding_it_whole():
    """A resumed finished run, or an evaluation of a few batches, must not encode a whole test set first."""
    from nextscale.data import stack_items
    from nextscale.training.var_stage import EncodedDataset

    vae, _ = tiny_pair()
    data = DigitsDataset("test", resolution=vae.config.resolution)
    calls = []
    encode = vae.img_to_idx
    vae.img_to_idx = lambda x, **kw: calls.append(len(x)) or encode(x, **kw)
    encoded = EncodedDataset(data, vae, "cpu", batch_size=32)
    assert len(encoded) == len(data) and calls == []
    ids, label = encoded[40]
    assert calls == [32]  # the chunk holding record 40, once
    encoded[33], encoded[63]
    assert calls == [32]
    x, y = stack_items([data[i] for i in range(32, 64)])
    whole = torch.cat(encode(x, check=False), dim=1)
    assert torch.equal(ids, whole[8]) and label == int(y[8])
