"""Every training recipe builds into typed settings; the rules it follows follow what was given; a misspelt key
fails by name; the command line's training defaults are the recipes' and the library's."""

from dataclasses import asdict, replace

import pytest

from nextscale import registry
from nextscale.errors import SettingError
from nextscale.training import TokenizerOptions, TrainConfig, VAROptions
from nextscale.training.config import IMAGENET_TRAIN_IMAGES, curriculum_ramp, epoch_steps
from nextscale.training.recipes import RECIPES, Recipe, recipe, recipe_settings, setting_names

IMAGENET = IMAGENET_TRAIN_IMAGES


@pytest.mark.parametrize("name", list(RECIPES))
def test_every_recipe_builds(name):
    r = recipe(name)
    config, options = recipe_settings(name)
    assert isinstance(config, TrainConfig)
    assert isinstance(options, TokenizerOptions if r.stage == "tokenizer" else VAROptions)
    registry.architecture(r.architecture)
    if r.epochs:
        assert config.steps == epoch_steps(r.epochs, r.n_images, config.batch_size)


def test_the_recipes_values():
    config, options = recipe_settings("var-d16")
    steps = 200 * (IMAGENET // 768)
    assert (config.steps, config.batch_size, config.warmup_steps) == (steps, 768, steps // 50)
    assert config.lr == pytest.approx(3e-4) and config.lr_end_ratio == 0.1 and config.schedule == "lin0"
    assert config.weight_decay == config.weight_decay_end == 0.05 and config.precision == "fp16"
    assert options.drop_path_rate == pytest.approx(0.1 * 16 / 24) and options.init_adaln_gamma == 1e-3
    config, options = recipe_settings("var-d30")
    assert config.batch_size == 1024 and config.lr == pytest.approx(3.2e-4) and config.weight_decay_end == 0.08
    assert options.drop_path_rate == pytest.approx(0.125) and options.init_adaln_gamma == 1e-5
    config, options = recipe_settings("fashion-decoder", "tokenizer")  # after fashion-tokenizer, on its tokens
    assert options.trainable == "decoder" and options.adversarial_weight == 0.5 and config.steps == 1500
    config, options = recipe_settings("vqvae-256", "tokenizer")
    assert (config.steps, config.batch_size, config.warmup_steps) == (40 * (IMAGENET // 128), 128, 0)
    assert config.lr == pytest.approx(1e-4) and config.schedule == "cos" and config.precision == "bf16"
    assert (options.perceptual_weight, options.adversarial_weight, options.adversarial_start) == (1.0, 0.5, 20_000)
    config, _ = recipe_settings("digits-tokenizer")
    assert (config.steps, config.batch_size, config.lr, config.warmup_steps) == (1500, 32, 5e-4, 50)
    assert config.weight_decay == 0.0 and config.eval_every == config.save_every == 250 and config.seed == 0
    config, options = recipe_settings("digits-var")
    assert (config.steps, config.batch_size, config.lr, config.warmup_steps) == (3000, 64, 1e-3, 100)
    assert config.weight_decay == 0.05 and config.eval_every == config.save_every == 500
    assert (options.cond_drop_rate, options.drop_path_rate) == (0.1, 0.0)


def test_what_a_recipe_derives_follows_what_was_given():
    config, _ = recipe_settings("var-d16", n_images=10_000, batch_size=256)
    assert config.steps == 200 * 39 and config.warmup_steps == config.steps // 50
    assert config.lr == pytest.approx(1e-4)  # base LR 1e-4 per 256 images
    config, _ = recipe_settings("var-d16", steps=1000, weight_decay=0.1)
    assert config.warmup_steps == 20 and config.pgwp == 1 and config.weight_decay_end == 0.1
    assert recipe_settings("var-d16", lr=1e-3, base_lr=5e-4)[0].lr == 1e-3  # lr given wins
    assert recipe_settings("digits-var", base_lr=1e-3)[0].lr == pytest.approx(1e-3 * 64 / 256)
    assert recipe_settings("digits-var", warmup_steps=7, drop_path_rate=0.2)[1].drop_path_rate == 0.2


@pytest.mark.parametrize("where, cls", [("train", "TrainConfig"), ("options", "VAROptions")])
def test_a_misspelt_recipe_key_fails_where_the_recipe_is_written(where, cls):
    with pytest.raises(TypeError, match=f"a var recipe sets lr_ends: not a field of {cls}"):
        Recipe("var", "digits", "digits", **{where: {"lr_ends": 0.1}})
    with pytest.raises(TypeError, match="lr_ends"):
        recipe_settings("digits-var", lr_ends=0.1)


def test_settings_name_their_parameter():
    with pytest.raises(SettingError, match=r"^lr_end_ratio must lie in \[0, 1\]"):
        TrainConfig(lr_end_ratio=2)
    with pytest.raises(SettingError, match="^warmup_steps must be ≥ 0"):
        TrainConfig(warmup_steps=-1)
    with pytest.raises(SettingError, match="^drop_path_rate must lie in"):
        VAROptions(drop_path_rate=1)
    with pytest.raises(SettingError, match="^revive_every must be ≥ 0"):
        TokenizerOptions(revive_every=-1)
    assert TrainConfig(steps=3000).pgwp == 1 and curriculum_ramp(3000) == 10  # the command line's default


@pytest.mark.parametrize("command, stage", [("train-tokenizer", "tokenizer"), ("train", "var")])
def test_the_command_lines_defaults_are_the_recipes(command, stage):
    from nextscale.cli import build_parser
    from nextscale.cli.train import BUILT_IN_RECIPES, FromRecipe, run_settings

    parser = build_parser()
    sub = next(a for a in parser._actions if a.dest == "command").choices[command]
    names = setting_names(stage)
    flags = [a for a in sub._actions if a.dest in names]
    assert {a.dest for a in flags if not isinstance(a.default, FromRecipe)} == {
        "seed",
        "workers",
    }  # the command's own choices
    assert "base_lr" in {a.dest for a in sub._actions}  # a rule's input, not a setting
    argv = [command, "--data", "digits", "--run-dir", "r"] + (["--tokenizer", "digits"] if stage == "var" else [])
    args = parser.parse_args(argv)
    config, options = run_settings(args, stage, 1437)
    recipe_config, recipe_options = recipe_settings(BUILT_IN_RECIPES[stage])
    assert config.pgwp == curriculum_ramp(config.steps)  # the command line's rule; the library's default is 1
    recipe_config = replace(recipe_config, pgwp=config.pgwp)
    ours = {k: v for k, v in asdict(config).items() if k not in ("workers", "extra")}
    assert ours == {k: v for k, v in asdict(recipe_config).items() if k not in ("workers", "extra")}
    assert options == recipe_options and config.extra["options"] == vars(options)
