"""`sampling/settings.py`: each sampler setting is defined once, and `sample()`'s keywords, the flags, the web
form, the records and the README's table are derived from that definition."""

import inspect
from dataclasses import FrozenInstanceError, fields
from pathlib import Path

import pytest

from nextscale.cli import build_parser
from nextscale.errors import NextscaleError, SettingError
from nextscale.sampling import SamplerConfig, sample, sample_many, sampler_config
from nextscale.sampling.settings import DEFAULTS, SETTINGS, flag, markdown_table

README = Path(__file__).resolve().parents[1] / "README.md"


def subparser(command: str):
    parser = build_parser()
    return next(a for a in parser._actions if a.dest == "command").choices[command]


def test_the_defaults_are_the_reference_readmes_fid_settings():
    assert (DEFAULTS.cfg, DEFAULTS.cfg_schedule, DEFAULTS.top_k, DEFAULTS.top_p) == (1.5, "linear", 900, 0.96)
    assert (DEFAULTS.temperature, DEFAULTS.more_smooth, DEFAULTS.guidance_scales) == (1.0, False, None)
    with pytest.raises(FrozenInstanceError):
        DEFAULTS.cfg = 2.0


@pytest.mark.parametrize("function", [sample, sample_many])
def test_the_library_keywords_are_the_settings(function):
    parameters = inspect.signature(function).parameters
    for f in fields(SamplerConfig):
        assert parameters[f.name].kind is inspect.Parameter.KEYWORD_ONLY and parameters[f.name].default == f.default
    assert "config" in parameters and not any(p.kind is p.VAR_KEYWORD for p in parameters.values())


@pytest.mark.parametrize("command", ["sample", "edit", "eval"])
def test_every_setting_is_a_flag_with_its_default_and_help(command):
    actions = {a.dest: a for a in subparser(command)._actions}
    for f in fields(SamplerConfig):
        if f.metadata["speed"] and command == "eval":
            assert f.name not in actions  # eval draws in fp32, uncompiled
            continue
        action = actions[f.name]
        assert flag(f.name) in action.option_strings and action.default == f.default
        assert action.help == f.metadata["help"]


def test_the_readme_table_is_the_definitions():
    regenerate = "print it with: python -c 'from nextscale.sampling.settings import markdown_table as t; print(t())'"
    assert markdown_table() in README.read_text(), regenerate


def test_the_web_form_offers_settings_with_their_definitions(tiny_models):
    from nextscale.web import Session

    vae, var = tiny_models
    session = Session(vae, var, ["--model", "tiny"], "tiny")
    offered = session.info()["settings"]
    assert offered and {s["name"] for s in offered} <= set(SETTINGS)
    for s in offered:
        assert s["default"] == getattr(DEFAULTS, s["name"]) == session.info()["defaults"][s["name"]]
        assert s["flag"] == flag(s["name"]) and s["help"]


def test_values_are_checked_once_where_they_enter(tiny_models, monkeypatch):
    vae, var = tiny_models
    made = []
    original = SamplerConfig.__post_init__
    monkeypatch.setattr(SamplerConfig, "__post_init__", lambda self: (made.append(1), original(self)))
    sample_many(vae, var, [0, 1, 2, 3], batch_size=1, progress=False, cfg=2.0, top_k=(4, 4, 4, 4))
    assert len(made) == 1  # one config for four batches: sample() takes it as it is


def test_a_config_and_keywords_combine():
    config = SamplerConfig(cfg=3.0, top_k=[5, 6, 7, 8])
    assert config.top_k == (5, 6, 7, 8)  # lists become tuples: frozen all the way down
    combined = sampler_config(config, top_p=0.5)
    assert (combined.cfg, combined.top_k, combined.top_p) == (3.0, (5, 6, 7, 8), 0.5)
    assert combined.changed() == {"cfg": 3.0, "top_k": (5, 6, 7, 8), "top_p": 0.5}
    assert combined.record()["top_k"] == [5, 6, 7, 8] and "precision" not in combined.record()
    assert sampler_config() is DEFAULTS


def test_bad_values_name_the_setting():
    with pytest.raises(SettingError, match="top_k must be an integer ≥ 0, got -1") as error:
        SamplerConfig(top_k=-1)
    assert error.value.setting == "top_k"
    with pytest.raises(NextscaleError, match="unknown sampler setting 'temprature'; the settings are: cfg"):
        sampler_config(temprature=0.5)
    with pytest.raises(SettingError, match="top_p has 2 entries; this model has 4 scales"):
        SamplerConfig(top_p=[0.5, 0.5]).for_model(4)
    with pytest.raises(SettingError, match="temperature is an empty list"):
        SamplerConfig(temperature=[])


def test_the_command_line_names_the_flag_of_a_bad_setting(capsys):
    from nextscale.cli import main

    for argv, message in (
        (["--top-k", "-1"], "--top-k must be an integer ≥ 0, got -1"),
        (["--guidance-scales", "0:4", "--cfg-schedule", "power:-1"], "--cfg-schedule power:P needs P ≥ 0, got -1"),
    ):
        assert main(["sample", "--model", "digits", "--out", "unused", *argv]) == 2
        assert capsys.readouterr().err.strip() == f"nextscale sample: error: {message}"
