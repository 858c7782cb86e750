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


def test_image_folder_with_a_corrupt_file_trains_with_a_warning(tmp_path):
    root = tmp_path / "data"
    for label in ("a", "b"):
        (root / label).mkdir(parents=True)
        for i in range(10):
            color = (i * 20, 100 if label == "a" else 200, 50)
            Image.new("RGB", (12, 10), color).save(root / label / f"{i}.png")
    (root / "a" / "broken.png").write_bytes(b"not a png at all")
    (root / "b" / "notes.txt").write_text("not an image")
    data = ImageFolderDataset(root, resolution=8, train=True)  # lists names only: nothing is opened yet
    assert len(data) == 21 and data.num_classes == 2  # the .txt file is not an image name
    img, label = data[0]
    assert img.shape == (3, 8, 8) and -1 <= img.min() and img.max() <= 1
    with pytest.warns(UserWarning, match=r"skipping unreadable image .*broken\.png"):
        img, label = data[10]  # "broken.png", after a/0 … a/9: read, named, and replaced by the next image
    assert label == 1
    vae_config, _ = preset_configs("tiny")
    with warnings.catch_warnings(record=True) as seen:
        warnings.simplefilter("always")
        _, metrics = train_tokenizer(
            vae_config, data, None, settings(6, batch_size=8), tmp_path / "run", progress=False
        )
    assert metrics["psnr"] > 0
    assert {str(w.message).split(":")[0] for w in seen} <= {f"skipping unreadable image {root / 'a' / 'broken.png'}"}


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
    resumed, _ = train_var(var_config, vae, train, test, settings(3), tmp_path / "run", resume=True, progress=False)
    assert same_weights(whole, resumed)
