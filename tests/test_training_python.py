"""Training from Python as the README shows it: its "Training from Python" block runs as written (with fewer
steps), and the settings it takes from the recipes are the commands' own."""

import re
from dataclasses import fields
from pathlib import Path

import pytest

from nextscale.cli import build_parser
from nextscale.cli.train import run_settings
from nextscale.training.recipes import recipe_settings
from nextscale.weights import load_model

README = Path(__file__).resolve().parents[1] / "README.md"
HEADING = "### Training from Python"


def first_python_block(text: str, heading: str) -> str:
    """The first ```python block after the line `heading`."""
    lines = text.splitlines()
    assert heading in lines, f"README.md has no {heading!r} section: the test runs its first python block"
    after = "\n".join(lines[lines.index(heading) + 1 :])
    block = re.search(r"^```python\n(.*?)^```$", after, flags=re.S | re.M)
    assert block, f"no ```python block after {heading!r} in README.md"
    return block.group(1)


def with_steps(code: str, steps: int) -> str:
    """The block with its one `steps = N` line set to `steps`: the README trains for a minute, the test for less."""
    code, found = re.subn(r"^steps = \d+$", f"steps = {steps}", code, flags=re.M)
    assert found == 1, "the README block must set `steps = N` on a line of its own, once"
    return code


@pytest.mark.slow
def test_the_readme_block_trains_both_stages_and_exports_a_model(tmp_path, monkeypatch):
    code = with_steps(first_python_block(README.read_text(), HEADING), 2)
    monkeypatch.chdir(tmp_path)  # the block writes runs/ where it runs
    run = {}
    exec(compile(code, f"{README}: {HEADING}", "exec"), run)
    assert run["out"].images.shape == (3, 3, 32, 32)
    assert (tmp_path / "runs" / "py-tok" / "ckpt-00000002").is_dir()
    vae, var = load_model(tmp_path / "runs" / "py-model")
    assert (vae.fingerprint(), var.fingerprint()) == (run["vae"].fingerprint(), run["var"].fingerprint())
    again = {}  # as the README says: a second run finds both runs complete and trains nothing
    exec(compile(code, f"{README}: {HEADING}", "exec"), again)
    assert again["var"].fingerprint() == var.fingerprint()


@pytest.mark.parametrize(
    "stage, argv, recipe",
    [
        ("tokenizer", ["train-tokenizer", "--data", "digits"], "digits-tokenizer"),
        ("var", ["train", "--data", "digits", "--tokenizer", "digits"], "digits-var"),
    ],
)
def test_the_recipes_the_readme_names_give_the_commands_settings(stage, argv, recipe):
    """Everything but `pgwp`, which the command derives from the steps, and `workers`, which it sets from the CPUs
    (the README says to give both)."""
    args = build_parser().parse_args([*argv, "--run-dir", "unused"])
    command, command_options = run_settings(args, stage, n_images=1437)
    python, python_options = recipe_settings(recipe, stage)
    differ = [f.name for f in fields(python) if getattr(python, f.name) != getattr(command, f.name)]
    assert differ == ["workers", "pgwp", "extra"] and python_options == command_options
