"""The metrics, computed by torch-fidelity's own functions from features, so that any feature network (and
precomputed statistics) can feed them. The conventions are the ADM evaluator's where the two differ."""

from __future__ import annotations

import numpy as np
import torch
from torch_fidelity.metric_fid import fid_statistics_to_metric
from torch_fidelity.metric_isc import isc_features_to_metric
from torch_fidelity.metric_kid import kid_features_to_metric
from torch_fidelity.metric_prc import prc_features_to_metric

from ..errors import NextscaleError
from .imagesets import Statistics

IS_BLOCK = 5000  # the ADM evaluator splits the file into consecutive blocks of 5,000 (10 for 50,000 images)
PRC_NEIGHBOURS = 3  # the ADM evaluator's k for the manifold radii
KID_SUBSETS, KID_SUBSET_SIZE = 100, 1000


def frechet_distance(a: Statistics, b: Statistics) -> float:
    if a.features != b.features:
        raise NextscaleError(f"statistics of different features cannot be compared: {a.features} and {b.features}")
    if a.mu.shape != b.mu.shape:
        raise NextscaleError(f"statistics of {a.mu.shape[0]}-D and {b.mu.shape[0]}-D features cannot be compared")
    stat = lambda s: {"mu": s.mu.astype(np.float64), "sigma": s.sigma.astype(np.float64)}  # noqa: E731
    return float(fid_statistics_to_metric(stat(a), stat(b), verbose=False)["frechet_inception_distance"])


def inception_score(logits: np.ndarray, block: int = IS_BLOCK) -> tuple[float, float]:
    """Mean and std over consecutive blocks of `block` images in the file's order (the ADM evaluator's way: not
    shuffled, so a class-ordered file scores far lower; the last block may be shorter)."""
    logits = torch.from_numpy(np.asarray(logits))
    scores = [
        isc_features_to_metric(logits[i : i + block], splits=1, shuffle=False)["inception_score_mean"]
        for i in range(0, len(logits), block)
    ]
    return float(np.mean(scores)), float(np.std(scores))


def kernel_distance(
    a: np.ndarray, b: np.ndarray, subsets: int = KID_SUBSETS, subset_size: int = KID_SUBSET_SIZE
) -> tuple[float, float, int]:
    """KID mean and std over random subsets (torch-fidelity's cubic kernel); the subset size shrinks to the
    smaller set when it has fewer images, and is returned."""
    size = min(subset_size, len(a), len(b))
    out = kid_features_to_metric(
        torch.from_numpy(np.asarray(a)),
        torch.from_numpy(np.asarray(b)),
        kid_subsets=subsets,
        kid_subset_size=size,
        verbose=False,
    )
    return out["kernel_inception_distance_mean"], out["kernel_inception_distance_std"], size


def precision_recall(samples: np.ndarray, real: np.ndarray, k: int = PRC_NEIGHBOURS) -> tuple[float, float]:
    """Improved precision and recall (Kynkäänniemi et al.), with k-th-neighbour radii as in the ADM evaluator."""
    if min(len(samples), len(real)) <= k:
        raise NextscaleError(f"precision/recall need more than k={k} images in each set")
    # float32 and row blocks (torch-fidelity's save_cpu_ram): the full 50,000² float64 distance matrix is 20 GB.
    as_tensor = lambda x: torch.from_numpy(np.asarray(x, dtype=np.float32))  # noqa: E731
    out = prc_features_to_metric(
        as_tensor(samples), as_tensor(real), prc_neighborhood=k, save_cpu_ram=True, verbose=False
    )
    return out["precision"], out["recall"]
