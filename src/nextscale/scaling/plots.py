"""`scaling.png`: VAR's Fig. 5 (the four quantities against the blocks' parameters N, log-log, with the fitted
law) and Fig. 6 (the test-loss curves against training compute, each size, with the frontier and its law)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from .fit import PowerLaw
from .results import QUANTITIES

LABELS = {
    "loss_last": "test loss, last scale",
    "loss_mean": "test loss, all scales",
    "error_last": "token error, last scale",
    "error_mean": "token error, all scales",
}


def _law(fit: dict) -> PowerLaw:
    return PowerLaw(**{k: fit[k] for k in ("alpha", "beta", "r", "n", "q_inf")})


def draw(result: dict, out: str | Path) -> Path:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        from ..errors import NextscaleError

        raise NextscaleError("the figure needs matplotlib: pip install 'nextscale[plots]'") from None
    runs, fits = result["runs"], result["fits"]
    fig, axes = plt.subplots(2, 4, figsize=(18, 8.5))
    params = np.array([r["params"] for r in runs], dtype=float)
    for ax, q in zip(axes[0], QUANTITIES):
        ax.scatter(params, [r[q] for r in runs], color="C0", zorder=3)
        law = _law(fits[f"{q}_vs_params"])
        xs = np.geomspace(params.min() / 1.3, params.max() * 1.3, 50)
        ax.plot(xs, law(xs), "C1--", label=law.equation("N", "Q"))
        ax.set(xscale="log", yscale="log", xlabel="N (blocks' parameters)", title=LABELS[q])
        ax.legend(fontsize=8)
    for ax, q in zip(axes[1], ("loss_last", "loss_mean")):
        for i, r in enumerate(runs):
            points = [(p["flops"], p[q]) for p in r["curve"] if p["flops"] > 0]
            if points:
                ax.plot(*zip(*points), color=f"C{i % 10}", alpha=0.8, label=f"depth {r['depth']}")
        fit = fits.get(f"{q}_vs_compute")
        if fit:
            front = np.array(fit["frontier"])
            ax.scatter(front[:, 0], front[:, 1], color="black", s=10, zorder=3, label="frontier")
            xs = np.geomspace(front[:, 0].min(), front[:, 0].max(), 50)
            ax.plot(xs, _law(fit)(xs), "k--", label=_law(fit).equation("C", "L"))
        ax.set(xscale="log", yscale="log", xlabel="training FLOPs (counted)", title=f"{LABELS[q]} against compute")
        ax.legend(fontsize=7)
    for ax in axes[1][2:]:
        ax.axis("off")
    fig.suptitle(f"Scaling: {len(runs)} sizes ({result['sweep']})")
    fig.tight_layout()
    out = Path(out)
    tmp = out.with_name(f".{out.name}.partial.png")
    fig.savefig(tmp, dpi=100)
    plt.close(fig)
    tmp.replace(out)
    return out
