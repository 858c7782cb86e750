"""`evaluate`: a sample set against a reference, every requested metric from one pass of features per set."""

from __future__ import annotations

import os

from tqdm.auto import tqdm

from ..errors import NextscaleError
from ..runtime import versions
from .features import FeatureNetwork, extract
from .imagesets import ImageSet, Statistics, open_set
from .metrics import (
    IS_BLOCK,
    KID_SUBSETS,
    PRC_NEIGHBOURS,
    frechet_distance,
    inception_score,
    kernel_distance,
    precision_recall,
)

METRICS = ("fid", "is", "prc", "kid")
NEEDS_REF = ("fid", "prc", "kid")


def check_metrics(metrics) -> tuple[str, ...]:
    metrics = tuple(dict.fromkeys(m.strip().lower() for m in metrics if m.strip()))
    unknown = [m for m in metrics if m not in METRICS]
    if unknown or not metrics:
        raise NextscaleError(
            f"metrics: unknown {unknown[0]!r}; choose from {', '.join(METRICS)}"
            if unknown
            else f"metrics: name at least one of {', '.join(METRICS)}"
        )
    return metrics


def evaluate(
    samples: str | os.PathLike | ImageSet,
    ref: str | os.PathLike | ImageSet | None,
    network: FeatureNetwork,
    *,
    metrics=None,
    batch_size: int = 100,
    save_stats: str | os.PathLike | None = None,
    progress: bool = True,
) -> dict:
    """Returns {"metrics": {name: value}, "settings": {…}}; `save_stats` writes the samples' statistics.

    `metrics` None: every metric the inputs allow (IS alone without a reference; FID and IS where either set
    holds statistics only).
    """
    a = samples if isinstance(samples, ImageSet) else open_set(samples, "SAMPLES")
    b = None if ref is None else ref if isinstance(ref, ImageSet) else open_set(ref, "--ref", a.size)
    if metrics is None:
        metrics = METRICS if b is not None else ("is",)
        metrics = [m for m in metrics if m == "fid" or a.has_images and (m == "is" or b.has_images)]
    metrics = check_metrics(metrics) if metrics else ()
    if b is None and any(m in NEEDS_REF for m in metrics):
        raise NextscaleError(f"{', '.join(m for m in metrics if m in NEEDS_REF)} compare with a reference: give --ref")
    needs_a = bool({"is", "prc", "kid"} & set(metrics)) or a.statistics is None
    needs_b = b is not None and (bool({"prc", "kid"} & set(metrics)) or ("fid" in metrics and b.statistics is None))
    for s, needed, role, uses in ((a, needs_a, "SAMPLES", ("is", "prc", "kid")), (b, needs_b, "--ref", ("prc", "kid"))):
        if needed and not s.has_images:
            wanted = " and ".join(m for m in metrics if m in uses) or "this"
            raise NextscaleError(f"{role} {s.source} holds statistics only: {wanted} need(s) its images")
    if "fid" in metrics:  # before any work: statistics must be of the features this run computes
        for s in (a.statistics, b.statistics):
            if s is not None and s.features != network.name:
                raise NextscaleError(
                    f"statistics of {s.features} features cannot be compared with --features {network.name}"
                )
    feats_a = _features(a, network, batch_size, progress) if needs_a else (None, None)
    feats_b = _features(b, network, batch_size, progress) if needs_b else (None, None)
    stats_a = a.statistics or (Statistics.of(feats_a[0], network.name) if feats_a[0] is not None else None)
    if save_stats is not None:
        stats_a.save(save_stats)
    results: dict[str, float] = {}
    settings = {
        "samples": a.source,
        "samples_count": a.count,
        "ref": b.source if b else None,
        "ref_count": b.count if b else None,
        "features": network.name,
        "notes": a.notes + (b.notes if b else []),
    }
    if "fid" in metrics:
        stats_b = b.statistics or Statistics.of(feats_b[0], network.name)
        results["fid"] = frechet_distance(stats_a, stats_b)
        settings["fid_ref"] = "precomputed mu/sigma (float64)" if b.statistics else "computed from its images"
    if "is" in metrics:
        results["is"], results["is_std"] = inception_score(feats_a[1])
        blocks = -(-len(feats_a[1]) // IS_BLOCK)
        settings["is"] = f"{blocks} consecutive block(s) of up to {IS_BLOCK} in the file's order (ADM)"
        if network.gives_logits is False:
            settings["is"] += "; the network gives no logits, so its features served as logits (meaningful only "
            settings["is"] += "if they are class logits)"
    if "prc" in metrics:
        results["precision"], results["recall"] = precision_recall(feats_a[0], feats_b[0])
        settings["prc"] = f"k={PRC_NEIGHBOURS} nearest neighbours on the {network.name} features (ADM: pool, k=3)"
    if "kid" in metrics:
        results["kid"], results["kid_std"], size = kernel_distance(feats_a[0], feats_b[0])
        settings["kid"] = f"{KID_SUBSETS} subsets of {size}, cubic polynomial kernel"
    settings["versions"] = versions("torch-fidelity")
    return {"metrics": results, "settings": settings}


def _features(s: ImageSet, network: FeatureNetwork, batch_size: int, progress: bool):
    with tqdm(
        total=s.count, desc=f"features of {os.path.basename(s.source.rstrip('/'))}", unit="img", disable=not progress
    ) as bar:
        features, logits = extract(network, s.batches(batch_size), bar)
    if len(features) < 2:
        raise NextscaleError(f"{s.source} holds {len(features)} image(s): the metrics need at least 2")
    return features, logits


def table(result: dict) -> str:
    names = {
        "fid": "FID",
        "is": "IS",
        "is_std": "IS std",
        "precision": "precision",
        "recall": "recall",
        "kid": "KID",
        "kid_std": "KID std",
    }
    rows = [(names.get(k, k), f"{v:.4f}") for k, v in result["metrics"].items()]
    width = max((len(n) for n, _ in rows), default=0)
    s = result["settings"]
    head = f"{s['samples']} ({s['samples_count'] or 'statistics'}) vs {s['ref'] or '—'}, {s['features']} features"
    return "\n".join([head] + [f"  {n:<{width}}  {v}" for n, v in rows] + notes(result))


def notes(result: dict) -> list[str]:
    """The lines that say what was done to the inputs, and what IS used as logits where the network had none."""
    s = result["settings"]
    extra = [f"IS {s['is'].split('; ', 1)[1]}"] if "; " in s.get("is", "") else []
    return [f"  note: {n}" for n in s.get("notes", []) + extra]
