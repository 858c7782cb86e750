"""Sampling for evaluation: N images of every class, split over torchrun's processes, resumable, and merged into
one shuffled ADM `.npz` (what `nextscale sample --per-class` runs).

Image i of class c draws from its own generator, seeded with `image_seed(seed, c, i)`, so its random draws depend
on (seed, c, i) only: not on the batch, the process or the number of processes. The candidates are cut into
shards of `shard_size` in class order; each process draws the shards it is given, in batches, and writes each
one whole (temporary file, then rename) to `shards/`. A rerun draws only the missing shards. The first process
then merges them in an order shuffled with the seed (so the ADM evaluator's Inception Score, which splits the
file into consecutive blocks, never sees one class per block), and records everything in `samples.json`.
"""

from __future__ import annotations

import math
import os
import time
from collections.abc import Callable, Sequence
from contextlib import nullcontext
from pathlib import Path

import numpy as np
import torch
from tqdm.auto import tqdm

from ..distributed import Distributed
from ..errors import NextscaleError
from ..files import atomic_write
from ..pretrained import weights_fingerprint
from ..runtime import freed_memory_reused, is_int, versions
from ..seeding import check_seed, derive_seed
from ..sharded import ShardedOutput, shard_name
from ..tokenizer import VQVAE
from ..transformer import VAR
from ..weights.classes import model_class_names
from .batches import check_disk
from .outputs import NpzWriter, save_grid, save_png, to_uint8
from .sampler import check_sampling, sample
from .settings import SamplerConfig, sampler_config, with_settings_signature

RECORD, SHARDS, NPZ, PNGS = "samples.json", "shards", "samples.npz", "png"
MIN_KEEP_TOP = 0.01  # at most 100 candidates per image kept
Scorer = Callable[[torch.Tensor], torch.Tensor]  # uint8 (N, 3, H, W) → class logits (N, C)


def image_seed(seed: int, cls: int, index: int) -> int:
    """The seed of image `index` of class `cls`: `sample(vae, var, [cls], seed=image_seed(…))` draws it alone."""
    return derive_seed(seed, cls, index)


@with_settings_signature
def sample_per_class(
    vae: VQVAE,
    var: VAR,
    out_dir: str | os.PathLike,
    *,
    per_class: int,
    classes: Sequence[int] | None = None,
    seed: int = 0,
    batch_size: int = 16,
    shard_size: int = 256,
    scorer: Scorer | None = None,
    keep_top: float | None = None,
    pngs: bool = False,
    model: dict | None = None,
    dist: Distributed | None = None,
    progress: bool = True,
    config: SamplerConfig | None = None,
    fine_var: VAR | None = None,
    handoff: int | None = None,
    **settings,
) -> Path:
    """Draws `per_class` images of each class in `classes` (default: all) into `out_dir/samples.npz`.

    With `scorer` (a classifier: images → logits) and `keep_top` F in [0.01, 1], draws ceil(per_class / F)
    candidates per class and keeps the `per_class` the classifier gives the highest probability of their class
    (rejection sampling). `model` describes the weights for the record. The sampler settings are those of
    `sample` (a `config` and/or keywords); `samples.json` records them. Returns the `.npz` path (written by the
    first process: under torchrun the others return once their shards are on disk).
    """
    dist = dist or Distributed()
    config = sampler_config(config, **settings)
    device = check_sampling(vae, var, config, fine_var, handoff)
    draw = dict(config=config, fine_var=fine_var, handoff=handoff)
    plan = _plan(vae, var, per_class, classes, seed, shard_size, scorer, keep_top, model, draw)
    if not is_int(batch_size) or batch_size < 1:
        raise NextscaleError(f"batch_size must be an integer ≥ 1, got {batch_size!r}")
    out = Path(out_dir)
    side, total = vae.config.resolution, plan["candidates_per_class"] * len(plan["classes"])
    output = ShardedOutput(
        out,
        plan,
        -(-total // shard_size),
        dist,
        record=RECORD,
        plan_key="plan",
        shards=SHARDS,
        contents="samples drawn",
        place="output directory",
    )
    started = time.time()

    def whole(k: int) -> bool:
        return _shard_whole(output.path(k, ".npy"), len(_shard_range(k, total, shard_size)), side, scorer is not None)

    def prepare() -> tuple[dict, list[int]]:
        record = output.claim(runs=[], complete=False)
        if record.get("complete"):
            _check_complete(out, record, pngs)
            return record, []
        missing = output.missing(whole)  # damaged ones (a crash's, another run's) are drawn again
        drawn = sum(len(_shard_range(k, total, plan["shard_size"])) for k in missing)
        kept = plan["per_class"] * len(plan["classes"])
        check_disk(out, drawn + kept * (2 if pngs else 1), side)  # shards to draw, then the npz (and PNGs)
        names = model_class_names(var)  # not in the plan: a name never changes an image
        record["class_names"] = {str(c): names[c] for c in plan["classes"]}
        record["runs"].append(
            {
                "started": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
                "world_size": dist.world,
                "device": str(device),
                "batch_size": batch_size,
                "versions": versions(),
            }
        )
        output.save(record)
        return record, missing

    record, missing = output.on_main(prepare)
    if record.get("complete"):
        return out / NPZ
    mine = output.share(missing)
    bar = tqdm(
        total=sum(len(_shard_range(k, total, shard_size)) for k in mine),
        unit="img",
        desc=f"sampling (rank {dist.rank})" if dist.enabled else "sampling",
        disable=not progress or not dist.is_main,
    )
    memory = freed_memory_reused() if device.type == "cpu" else nullcontext()
    with memory:
        for k in mine:
            _draw_shard(
                out,
                k,
                _shard_range(k, total, shard_size),
                plan,
                vae,
                var,
                device,
                batch_size,
                scorer,
                bar,
                draw,
            )
    bar.close()
    dist.barrier()
    if dist.is_main:  # alone: the others need not wait (a 10 GB merge could outlast the process group's timeout)
        record["runs"][-1].update(shards_drawn=len(missing), seconds=round(time.time() - started, 1))
        _merge(output, record, side, pngs, progress)
    return out / NPZ


def _check_complete(out: Path, record: dict, pngs: bool) -> None:
    if not (out / NPZ).is_file():
        raise NextscaleError(
            f"{out / RECORD} says the samples are complete, but {NPZ} is gone (and so are their "
            "shards): use a new output directory"
        )
    if pngs and not record.get("pngs"):
        raise NextscaleError(
            f"{out / NPZ} is complete and was written without --png; its images are arr_0 of "
            "that file (or rerun into a new output directory with --png)"
        )


def _plan(vae, var, per_class, classes, seed, shard_size, scorer, keep_top, model, draw: dict) -> dict:
    """Everything the images depend on; a rerun in the same folder must match it to resume there."""
    if not is_int(per_class) or per_class < 1:
        raise NextscaleError(f"per_class must be an integer ≥ 1, got {per_class!r}")
    if not is_int(shard_size) or shard_size < 1:
        raise NextscaleError(f"shard_size must be an integer ≥ 1, got {shard_size!r}")
    classes = list(range(var.num_classes)) if classes is None else list(classes)
    bad = [c for c in classes if not is_int(c) or not 0 <= c < var.num_classes]
    if bad or not classes:
        what = f"class {bad[0]!r} is out of range" if bad else "no classes given"
        raise NextscaleError(f"{what}: this model has classes 0..{var.num_classes - 1}")
    if len(set(classes)) != len(classes):
        raise NextscaleError("each class may be listed once")
    if (scorer is None) != (keep_top is None):
        raise NextscaleError("rejection sampling needs both a classifier and the fraction to keep")
    candidates = per_class
    if keep_top is not None:
        if not isinstance(keep_top, int | float) or not MIN_KEEP_TOP <= keep_top <= 1:
            raise NextscaleError(f"keep_top must be a fraction in [{MIN_KEEP_TOP}, 1], got {keep_top!r}")
        candidates = math.ceil(round(per_class / keep_top, 6))  # rounded first: 0.3 keeps 3 of 10, not of 11
    settings = draw["config"].record()
    model = {**(model or {}), "weights": weights_fingerprint(vae, var)}  # the same path may hold other weights
    if draw["fine_var"] is not None:
        settings.update(handoff=draw["handoff"], fine_weights=weights_fingerprint(draw["fine_var"]))
    return {
        "format": 1,
        "model": model,
        "classes": classes,
        "per_class": per_class,
        "candidates_per_class": candidates,
        "keep_top": keep_top,
        "seed": check_seed(seed),
        "image_seeds": "nextscale.sampling.image_seed(seed, class, index)",
        "sampler": settings,
        "precision": draw["config"].precision,
        "resolution": vae.config.resolution,
        "shard_size": shard_size,
        "shuffle": "numpy.random.default_rng(seed).permutation",
    }


def _shard_range(k: int, total: int, shard_size: int) -> range:
    return range(k * shard_size, min(total, (k + 1) * shard_size))


def _shard_whole(path: Path, count: int, side: int, scored: bool) -> bool:
    try:
        images = np.load(path, mmap_mode="r", allow_pickle=False)
        whole = images.shape == (count, side, side, 3) and images.dtype == np.uint8
        if scored:
            scores = np.load(path.with_suffix(".scores.npy"), allow_pickle=False)
            whole = whole and scores.shape == (count,)
        return whole
    except (OSError, ValueError, EOFError):
        return False


def _draw_shard(out, k, indices: range, plan, vae, var, device, batch_size, scorer, bar, draw: dict) -> None:
    m, classes = plan["candidates_per_class"], plan["classes"]
    images, scores = [], []
    for start in range(indices.start, indices.stop, batch_size):
        batch = range(start, min(indices.stop, start + batch_size))
        labels = [classes[j // m] for j in batch]
        generators = [
            torch.Generator(device).manual_seed(image_seed(plan["seed"], classes[j // m], j % m)) for j in batch
        ]
        result = sample(vae, var, labels, generator=generators, reuse_memory=False, **draw)
        uint8 = to_uint8(result.images)
        if scorer is not None:
            scores.append(_confidence(scorer, uint8, labels, device))
        images.append(uint8)
        bar.update(len(batch))
    shard = out / SHARDS / shard_name(k, ".npy")  # as `ShardedOutput.path` names it
    if scorer is not None:  # the scores first: the images file marks a shard complete
        atomic_write(shard.with_suffix(".scores.npy"), lambda tmp: _save_npy(tmp, np.concatenate(scores)))
    atomic_write(shard, lambda tmp: _save_npy(tmp, np.concatenate(images)))


def _save_npy(path: str, array: np.ndarray) -> None:
    with open(path, "wb") as fh:
        np.save(fh, array)


@torch.no_grad()
def _confidence(scorer: Scorer, images_NHW3: np.ndarray, labels: list[int], device) -> np.ndarray:
    logits = scorer(torch.from_numpy(images_NHW3).permute(0, 3, 1, 2).to(device))
    if not torch.is_tensor(logits) or logits.ndim != 2 or logits.shape[0] != len(labels):
        shape = tuple(logits.shape) if torch.is_tensor(logits) else type(logits).__name__
        raise NextscaleError(f"the classifier must map N images to N×C logits; it gave {shape} for N={len(labels)}")
    if max(labels) >= logits.shape[1]:
        raise NextscaleError(f"the classifier gives {logits.shape[1]} classes; class {max(labels)} is beyond them")
    # Log-probabilities: a confident classifier's probabilities all round to 1.0 in float32 and would tie.
    log_probs = logits.double().log_softmax(dim=1)
    return log_probs[torch.arange(len(labels)), torch.as_tensor(labels, device=log_probs.device)].cpu().numpy()


def _kept_candidates(output: ShardedOutput, total: int) -> np.ndarray:
    """Indices of the candidates kept, in class order: all, or per class the most confidently classified."""
    plan = output.plan
    if plan["keep_top"] is None:
        return np.arange(total)
    m, n = plan["candidates_per_class"], plan["per_class"]
    scores = np.concatenate([np.load(output.path(k, ".scores.npy")) for k in range(output.shard_count)])
    kept = []
    for c in range(len(plan["classes"])):
        block = scores[c * m : (c + 1) * m]
        best = np.lexsort((np.arange(m), -block))[:n]  # highest confidence first, ties to the earlier candidate
        kept.append(c * m + np.sort(best))
    return np.concatenate(kept)


def _merge(output: ShardedOutput, record: dict, side: int, pngs: bool, progress: bool) -> None:
    out, plan = output.folder, output.plan
    m, classes, size = plan["candidates_per_class"], plan["classes"], plan["shard_size"]
    total = m * len(classes)
    shards = [  # each checked whole after the draws
        np.load(output.path(k, ".npy"), mmap_mode="r", allow_pickle=False) for k in range(output.shard_count)
    ]
    kept = _kept_candidates(output, total)
    order = kept[np.random.default_rng(plan["seed"]).permutation(len(kept))]
    labels = np.asarray(classes, dtype=np.int64)[order // m]
    writer = NpzWriter(out / NPZ, len(order), side, side)
    if pngs:
        (out / PNGS).mkdir(exist_ok=True)
    try:
        for start in tqdm(range(0, len(order), 256), desc="writing samples.npz", disable=not progress):
            chunk = order[start : start + 256]
            images = np.stack([shards[j // size][j % size] for j in chunk])
            writer.write(images)
            for i, image in enumerate(images if pngs else ()):
                save_png(image, out / PNGS / f"{start + i:06d}.png")
            if start == 0:
                save_grid(images[:64], out / "grid.png", nrow=8)
        writer.close(labels)
    except BaseException:
        writer.abort()
        raise
    record.update(complete=True, count=len(order), candidates_drawn=total, pngs=pngs)
    output.save(record)
    for path in output.shard_dir.iterdir():  # every image is in samples.npz now
        path.unlink()
    output.shard_dir.rmdir()
