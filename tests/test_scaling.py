"""Scaling laws: the fits on exact and noisy power laws, the compute frontier, the irreducible term, and a sweep
of tiny depths on the digits end to end (resumed, re-run, refused)."""

import json
import shutil

import numpy as np
import pytest

from nextscale.cli import main
from nextscale.errors import NextscaleError
from nextscale.scaling import fit_power_law, fit_with_irreducible, pareto_frontier
from nextscale.scaling.results import fit_sweep


def test_an_exact_power_law_is_recovered():
    x = np.array([1e5, 3e5, 1e6, 3e6, 1e7])
    fit = fit_power_law(x, (2.0 * x) ** -0.23)
    assert fit.alpha == pytest.approx(-0.23, abs=1e-9) and fit.beta == pytest.approx(2.0, rel=1e-9)
    assert fit.r == pytest.approx(-1.0, abs=1e-12) and fit.n == 5
    noisy = (2.0 * x) ** -0.23 * np.exp(np.random.default_rng(0).normal(0, 0.01, x.size))
    r = np.corrcoef(np.log(x), np.log(noisy))[0, 1]
    assert fit_power_law(x, noisy).r == pytest.approx(r, abs=1e-12) and -1 < r < -0.9


def test_the_irreducible_term_is_recovered():
    x = np.geomspace(1e4, 1e8, 9)
    fit = fit_with_irreducible(x, 4.5 + (3e-3 * x) ** -0.3)
    assert fit.q_inf == pytest.approx(4.5, rel=1e-4) and fit.alpha == pytest.approx(-0.3, rel=1e-3)
    given = fit_with_irreducible(x, 4.5 + (3e-3 * x) ** -0.3, q_inf=4.5)
    assert given.q_inf == 4.5 and given.beta == pytest.approx(3e-3, rel=1e-9)
    with pytest.raises(NextscaleError, match="not below every measurement"):
        fit_with_irreducible(x, 4.5 + x**-0.3, q_inf=9.0)


def test_the_compute_frontier_of_hand_made_curves():
    # two curves: a small model (fast start, plateau) and a big one (slow start, lower end); a zero-compute point
    flops = [0, 1, 2, 4, 8, 2, 4, 8, 16]
    loss = [9, 5, 4, 3.5, 3.4, 6, 3.6, 3.0, 2.0]
    assert pareto_frontier(flops, loss).tolist() == [1, 2, 3, 7, 8]
    assert pareto_frontier([1, 1], [2, 2]).tolist() == [0, 1]  # equal points both stay


def test_fits_refuse_what_they_cannot_fit():
    for x, q in (([1], [1]), ([1, 2], [1]), ([1, -2], [1, 1]), ([1, 2], [0, 1])):
        with pytest.raises(NextscaleError):
            fit_power_law(x, q)


@pytest.fixture(scope="module")
def tokenizer(tmp_path_factory):
    import torch

    from nextscale.registry import architecture
    from nextscale.tokenizer import VQVAE

    torch.manual_seed(0)
    out = tmp_path_factory.mktemp("tok") / "vae"
    VQVAE(architecture("tiny")[0]).save_pretrained(out)
    return out


def sweep_args(tokenizer, out, depths="1,2,3", steps="4"):
    return [
        "scaling", "run", "--data", "digits", "--tokenizer", str(tokenizer), "--depths", depths, "--out", str(out),
        "--width-per-depth", "8", "--head-dim", "8", "--steps", steps, "--batch-size", "8", "--eval-every", "2",
        "--save-every", "2", "--device", "cpu", "--quiet", "--workers", "0",
    ]  # fmt: skip


def test_a_sweep_end_to_end_resumes_reruns_and_fits(tokenizer, tmp_path, capsys):
    from nextscale import VAR

    out = tmp_path / "sweep"
    assert main(sweep_args(tokenizer, out, depths="1,2")) == 0
    assert main(["scaling", "fit", str(out)]) == 2  # two sizes: too few
    assert "at least 3" in capsys.readouterr().err
    assert main(sweep_args(tokenizer, out)) == 0  # d1, d2 trained already; d3 now
    logs = {d: (out / f"d{d}" / "log.jsonl").read_text() for d in (1, 2)}
    assert main(sweep_args(tokenizer, out)) == 0  # a rerun trains nothing
    assert all((out / f"d{d}" / "log.jsonl").read_text() == logs[d] for d in (1, 2))
    whole = json.loads((out / "d3" / "log.jsonl").read_text().splitlines()[-1])
    shutil.rmtree(out / "d3" / "model")  # d3 as a kill after its checkpoint of step 2 leaves it
    shutil.rmtree(out / "d3" / "ckpt-00000004")
    (out / "d3" / "latest").unlink()
    assert main(sweep_args(tokenizer, out)) == 0
    assert json.loads((out / "d3" / "log.jsonl").read_text().splitlines()[-1]) == whole  # resumed exactly
    assert main(sweep_args(tokenizer, out, steps="6")) == 0  # a longer run resumes every size
    capsys.readouterr()
    assert main([*sweep_args(tokenizer, out, steps="6"), "--lr", "1e-2"]) == 2  # a changed setting is named
    assert "lr (" in capsys.readouterr().err
    assert main(["scaling", "fit", str(out)]) == 0
    result = json.loads((out / "scaling.json").read_text())
    assert (out / "scaling.png").stat().st_size > 10_000
    assert [r["depth"] for r in result["runs"]] == [1, 2, 3]
    for r in result["runs"]:
        var = VAR.from_pretrained(out / f"d{r['depth']}" / "model" / "var")
        assert r["params"] == sum(p.numel() for p in var.blocks.parameters())
        assert r["params_total"] == sum(p.numel() for p in var.parameters()) and r["width"] == 8 * r["depth"]
        assert r["steps"] == 6 and r["flops"] > 0 and len(r["curve"]) == 3
        assert {"step", "flops", "loss_last", "loss_mean", "error_last", "error_mean"} == set(r["curve"][0])
        flops = [p["flops"] for p in r["curve"]]
        assert flops == sorted(flops) and flops[1] == 2 * flops[0]  # counted per step, carried over the resume
    for q in ("loss_last", "loss_mean", "error_last", "error_mean"):
        assert {"alpha", "beta", "r", "n"} <= set(result["fits"][f"{q}_vs_params"])
        assert result["fits"][f"{q}_vs_params"]["n"] == 3 and f"{q}_vs_params_irreducible" in result["fits"]


def test_sweeps_of_other_data_are_refused(tokenizer, tmp_path):
    out = tmp_path / "sweep"
    assert main(sweep_args(tokenizer, out, depths="1,2")) == 0
    other = tmp_path / "other"
    assert main([*sweep_args(tokenizer, other, depths="3"), "--seed", "1"]) == 0  # another split of the digits
    (other / "d3").rename(out / "d3")
    with pytest.raises(NextscaleError, match="different data"):
        fit_sweep(out)
    for bad in ("1,x", "0,1", "2,2"):
        assert main(sweep_args(tokenizer, tmp_path / "bad", depths=bad)) == 2
    assert main(["scaling", "fit", str(tmp_path / "nowhere")]) == 2


def test_a_token_budget_sets_the_steps(tokenizer, tmp_path, capsys):
    def budget(tokens, out):
        args = sweep_args(tokenizer, tmp_path / out, depths="1")
        at = args.index("--steps")
        return [*args[:at], "--train-tokens", tokens, *args[at + 2 :]]

    # 8 images × 30 tokens (scales 1, 2, 3, 4) a step: 1,000 tokens are 4.17 steps, rounded up
    assert main(budget("1000", "a")) == 0
    assert json.loads((tmp_path / "a" / "d1" / "log.jsonl").read_text().splitlines()[-1])["step"] == 5
    for tokens, error in (("100", "less than one step"), ("nan", "less than one step")):
        assert main(budget(tokens, "b")) == 2
        assert error in capsys.readouterr().err
    assert main([*budget("1000", "c"), "--steps", "3"]) == 2
    assert "not both" in capsys.readouterr().err


@pytest.mark.distributed
def test_a_sweep_under_torchrun_counts_the_flops_of_one_process(tokenizer, tmp_path):
    from tests.helpers import run_nextscale

    one, two = tmp_path / "one", tmp_path / "two"
    assert main(sweep_args(tokenizer, one, depths="1,2")) == 0
    run_nextscale(sweep_args(tokenizer, two, depths="1,2"), nproc=2)
    for d in (1, 2):
        curves = [
            [json.loads(line) for line in (s / f"d{d}" / "log.jsonl").read_text().splitlines()] for s in (one, two)
        ]
        flops = [[r["flops"] for r in curve if "flops" in r] for curve in curves]
        assert flops[0] == flops[1] and flops[0][0] > 0  # the global batch's FLOPs, summed over the ranks
