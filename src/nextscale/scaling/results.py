"""A sweep's measurements (`SWEEP/d{depth}` runs, as `nextscale scaling run` leaves them) → `scaling.json`: each
size's final test values and curve, and every fit of `fit.py` against parameters and against compute."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from ..errors import NextscaleError
from .fit import fit_power_law, fit_with_irreducible, pareto_frontier

QUANTITIES = ("loss_last", "loss_mean", "error_last", "error_mean")
MIN_SIZES = 3


def size_dirs(sweep: Path) -> list[Path]:
    return sorted((p for p in Path(sweep).glob("d*") if p.name[1:].isdecimal()), key=lambda p: int(p.name[1:]))


def block_parameters(config: dict, kind: str = "var") -> tuple[int, int]:
    """(the transformer blocks' parameters, all parameters) of a saved `var/config.json`'s model of `kind` (its
    `model_type`): N, as the paper counts it, leaves out the embeddings and the head."""
    from ..pretrained import config_from_dict
    from ..transformer import VAR, RasterAR

    model_class = {m.model_type: m for m in (VAR, RasterAR)}[kind]
    var = model_class(config_from_dict(model_class.config_class, config, model_class.legacy_config_keys), device="meta")
    blocks = sum(p.numel() for p in var.blocks.parameters())
    return blocks, sum(p.numel() for p in var.parameters())


def _point(record: dict) -> dict | None:
    """An evaluation record of log.jsonl → {step, flops, the four quantities}, or None (no evaluation)."""
    prefix = "val_" if "val_loss" in record else "train_" if "train_loss" in record else None
    if prefix is None:
        return None
    scales = sorted(int(k[len(prefix) + 5 :]) for k in record if k.startswith(f"{prefix}loss_"))
    last = scales[-1]
    return {
        "step": record["step"],
        "flops": record.get("flops", 0),
        "loss_last": record[f"{prefix}loss_{last}"],
        "loss_mean": record[f"{prefix}loss"],
        "error_last": 1 - record[f"{prefix}acc_{last}"],
        "error_mean": 1 - record[f"{prefix}acc"],
    }


def read_run(run: Path) -> dict:
    """One size's record: architecture, parameter counts, what it trained on, and its evaluation curve."""
    config_path = run / "model" / "var" / "config.json"
    if not config_path.is_file():
        raise NextscaleError(f"{run} has no exported model ({config_path}): finish it with `nextscale scaling run`")
    config = json.loads(config_path.read_text())
    params, total = block_parameters(config["config"], config.get("model_type", "var"))
    records = [json.loads(line) for line in (run / "log.jsonl").read_text().splitlines() if line.strip()]
    # A resumed run logs again the evaluations after its checkpoint: the last record of a step is the one kept.
    curve = sorted({p["step"]: p for p in map(_point, records) if p is not None}.values(), key=lambda p: p["step"])
    if not curve:
        raise NextscaleError(f"{run}/log.jsonl holds no evaluation")
    from ..training.checkpoint import latest_checkpoint, read_record

    extra = read_record(latest_checkpoint(run))["settings"]["train"].get("extra") or {}
    arch = config["config"]
    return {
        "kind": config.get("model_type", "var"),
        "depth": arch["depth"],
        "width": arch["embed_dim"],
        "params": params,
        "params_total": total,
        "steps": curve[-1]["step"],
        "flops": curve[-1]["flops"],
        **{q: curve[-1][q] for q in QUANTITIES},
        "curve": curve,
        "_trained_on": {k: extra.get(k) for k in ("data", "val_data", "tokenizer")},
    }


def fit_sweep(sweep: str | Path, irreducible: float | None = None) -> dict:
    """`scaling.json`'s contents for the sweep in `sweep` (written there too)."""
    sweep = Path(sweep)
    if not sweep.is_dir():
        raise NextscaleError(f"{sweep}: no such sweep folder (`nextscale scaling run --out` makes one)")
    runs = [read_run(d) for d in size_dirs(sweep)]
    if len(runs) < MIN_SIZES:
        raise NextscaleError(f"{sweep} holds {len(runs)} finished sizes: a fit needs at least {MIN_SIZES}")
    kinds = {r["kind"] for r in runs}
    if len(kinds) > 1:
        raise NextscaleError(
            f"the runs in {sweep} are of different kinds ({', '.join(sorted(kinds))}): one sweep, one kind"
        )
    for what in ("data", "tokenizer"):
        seen = {json.dumps(r["_trained_on"][what]) for r in runs}
        if len(seen) > 1:
            raise NextscaleError(f"the runs in {sweep} were trained on different {what}: one sweep, one {what}")
    for r in runs:
        del r["_trained_on"]
    params = np.array([r["params"] for r in runs], dtype=float)
    fits = {}
    for q in QUANTITIES:
        values = np.array([r[q] for r in runs])
        fits[f"{q}_vs_params"] = fit_power_law(params, values, what=f"{q} against parameters").to_dict()
        fits[f"{q}_vs_params_irreducible"] = fit_with_irreducible(
            params, values, q_inf=irreducible, what=f"{q} against parameters"
        ).to_dict()
        points = [(p["flops"], p[q]) for r in runs for p in r["curve"]]
        flops, values = (np.array(v, dtype=float) for v in zip(*points))
        front = pareto_frontier(flops, values)
        if len(front) >= 2:
            fits[f"{q}_vs_compute"] = fit_power_law(flops[front], values[front], what=f"{q} against compute").to_dict()
            fits[f"{q}_vs_compute"]["frontier"] = [[float(flops[i]), float(values[i])] for i in front]
    result = {"sweep": str(sweep), "runs": runs, "fits": fits}
    from ..files import atomic_write_text

    atomic_write_text(sweep / "scaling.json", json.dumps(result, indent=1) + "\n")
    return result


def table(result: dict) -> str:
    lines = ["| quantity | against | α | β | r | points |", "|---|---|---:|---:|---:|---:|"]
    for key, f in result["fits"].items():
        quantity, _, against = key.partition("_vs_")
        lines.append(f"| {quantity} | {against} | {f['alpha']:.4f} | {f['beta']:.3g} | {f['r']:.4f} | {f['n']} |")
    return "\n".join(lines)
