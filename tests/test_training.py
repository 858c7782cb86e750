"""Training both stages on tiny models: the loss falls, resumed runs match uninterrupted ones exactly."""

import warnings

import pytest
import torch
from PIL import Image

from nextscale.data import DigitsDataset, ImageFolderDataset
from nextscale.errors import NextscaleError
from nextscale.registry import architecture as preset_configs
from nextscale.training import TokenizerOptions, TrainConfig, train_tokenizer, train_var
from nextscale.training.common import batch_indices, lr_factor, param_groups, weight_decay_at


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
    whole, _ = train_tokenizer(vae_config, train, test, settings(6), tmp_path / "t-whole", options=options,
                               progress=False)  # fmt: skip
    train_tokenizer(vae_config, train, test, settings(6), tmp_path / "t-split", options=options, progress=False,
                    stop_after=3)  # fmt: skip
    resumed, _ = train_tokenizer(vae_config, train, test, settings(6), tmp_path / "t-split", options=options,
                                 progress=False)  # fmt: skip
    assert same_weights(whole, resumed)

    var_config.cond_drop_rate, var_config.drop_path_rate = 0.5, 0.2  # random label dropout and drop path
    whole_v, _ = train_var(var_config, whole, train, test, settings(6), tmp_path / "v-whole", progress=False)
    train_var(var_config, whole, train, test, settings(6), tmp_path / "v-split", progress=False, stop_after=4)
    resumed_v, _ = train_var(var_config, whole, train, test, settings(6), tmp_path / "v-split", progress=False)
    assert same_weights(whole_v, resumed_v)


def test_resume_refuses_other_settings(digits8, tmp_path):
    vae_config, _ = preset_configs("tiny")
    train, test = digits8
    train_tokenizer(vae_config, train, test, settings(2), tmp_path / "r", progress=False)
    with pytest.raises(NextscaleError, match="other training settings"):
        train_tokenizer(vae_config, train, test, settings(2, lr=1e-4), tmp_path / "r", progress=False)


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
        _, metrics = train_tokenizer(vae_config, data, None, settings(6, batch_size=8), tmp_path / "run",
                                     progress=False)  # fmt: skip
    assert metrics["psnr"] > 0
    assert {str(w.message).split(":")[0] for w in seen} <= {f"skipping unreadable image {root / 'a' / 'broken.png'}"}


def test_training_commands_end_to_end(tmp_path, capsys):
    from nextscale.cli import main
    from nextscale.weights import load_model

    common = ["--data", "digits", "--steps", "2", "--batch-size", "8", "--eval-every", "2", "--device", "cpu",
              "--quiet"]  # fmt: skip
    tok = ["train-tokenizer", "--preset", "tiny", "--run-dir", str(tmp_path / "tok"), *common]
    assert main(tok) == 0
    assert "tokenizer saved to" in capsys.readouterr().out
    assert main(tok) == 2  # the run directory holds a run: refuse to overwrite it
    assert "pass --resume" in capsys.readouterr().err
    assert main([*tok, "--resume"]) == 0  # already at its last step: nothing more to do
    var = ["train", "--tokenizer", str(tmp_path / "tok" / "model"), "--preset", "tiny", "--run-dir",
           str(tmp_path / "var"), *common]  # fmt: skip
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
    _, metrics = train_tokenizer(vae_config, train, test, settings(2), tmp_path / "gan", options=options,
                                 progress=False)  # fmt: skip
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
