"""The shipped digits model, the demo and the digits evaluation."""

import numpy as np
import pytest
import torch
from PIL import Image

from nextscale import load_model, sample
from nextscale.cli import main
from nextscale.data import DigitsDataset, digits8_to_images, digits_splits, images_to_digits8
from nextscale.evaluation import Statistics, evaluate_digits, frechet_distance
from nextscale.registry import BUILTIN


@pytest.mark.slow
def test_shipped_model_is_small_loads_strictly_and_samples_every_class():
    files = [p for name in BUILTIN for p in BUILTIN[name].rglob("*") if p.is_file()]
    assert sum(p.stat().st_size for p in files) < 20 * 2**20  # every built-in model together
    small = [p for p in BUILTIN["digits-small"].rglob("*") if p.is_file()]
    assert sum(p.stat().st_size for p in small) < 3 * 2**20
    vae, var = load_model("digits")  # strict: any missing or unexpected key raises
    out = sample(vae, var, list(range(10)), seed=0, cfg=3.0)
    assert out.images.shape == (10, 3, 32, 32) and torch.isfinite(out.images).all()
    assert out.labels.tolist() == list(range(10))


@pytest.mark.slow
def test_demo_writes_a_png(tmp_path, capsys):
    assert main(["demo", "--out", str(tmp_path / "demo.png")]) == 0
    assert "wrote" in capsys.readouterr().out
    with Image.open(tmp_path / "demo.png") as im:
        im.verify()
    with Image.open(tmp_path / "demo.png") as im:
        assert im.mode == "RGB" and im.width > 300 and im.height > 300


def test_digits_round_trip_through_32px_is_exact():
    _, test = digits_splits()
    back = images_to_digits8((digits8_to_images(test.images8) + 1) / 2)
    np.testing.assert_allclose(back, test.images8, atol=1e-4)
    data = DigitsDataset("test")
    assert len(data) == 360 and data.images.shape[1:] == (3, 32, 32)
    assert -1 <= float(data.images.min()) and float(data.images.max()) <= 1


def test_frechet_distance_is_zero_for_identical_sets_and_grows_with_a_shift():
    rng = np.random.default_rng(0)
    a = rng.normal(size=(500, 8))
    stats = Statistics.of(a, "f")
    assert abs(frechet_distance(stats, stats)) < 1e-6
    assert frechet_distance(stats, Statistics.of(a + 1.0, "f")) > 7.9


@pytest.mark.slow
def test_digits_evaluation_reports_every_number():
    vae, var = load_model("digits")
    report = evaluate_digits(vae, var, n_per_class=3, progress=False)
    assert 0 <= report.guided_accuracy <= 1 and 0 <= report.unguided_accuracy <= 1
    assert report.classifier_test_accuracy > 0.98
    assert report.train_test_fd > 0 and report.sample_fd > 0
    assert "Fréchet" in report.summary()


@pytest.mark.slow
def test_the_readme_python_example_runs_as_written(tmp_path, monkeypatch):
    import re
    from pathlib import Path

    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text()
    section = readme[readme.index("## Python API") :]
    code = re.search(r"```python\n(.*?)```", section, re.S).group(1)
    monkeypatch.chdir(tmp_path)  # it saves "my-model" in the working directory
    namespace: dict = {}
    exec(compile(code, "README.md", "exec"), namespace)
    assert namespace["out"].images.shape == (3, 3, 32, 32)
    assert (tmp_path / "my-model" / "var" / "model.safetensors").is_file()
    assert namespace["var"].head.weight.is_meta  # the last line builds var-d16 shapes only


def test_the_shipped_digits_split_is_scikit_learns():
    import numpy as np
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    from nextscale.data import digits_splits

    digits = load_digits()
    x_tr, x_te, y_tr, y_te = train_test_split(
        digits.images, digits.target, test_size=0.2, random_state=0, stratify=digits.target
    )
    train, test = digits_splits(0)
    assert np.array_equal(train.images8, x_tr) and np.array_equal(train.labels, y_tr)
    assert np.array_equal(test.images8, x_te) and np.array_equal(test.labels, y_te)


@pytest.mark.slow
def test_the_small_digits_model_takes_over_the_fine_scales():
    vae, var = load_model("digits")
    small_vae, small = load_model("digits-small")  # strict, and on the digits tokenizer
    assert all(torch.equal(a, b) for a, b in zip(vae.state_dict().values(), small_vae.state_dict().values()))
    plain = sample(vae, var, [7] * 4, seed=3)
    handed = sample(vae, var, [7] * 4, seed=3, fine_var=small, handoff=4)
    assert all(torch.equal(a, b) for a, b in zip(plain.tokens[:4], handed.tokens[:4]))
    assert not all(torch.equal(a, b) for a, b in zip(plain.tokens[4:], handed.tokens[4:]))
