"""The README's "VAR against next-token prediction" on Fashion-MNIST: VAR and the raster-order baseline at depths 1
and 2 (width 32·depth), trained with the fashion-var recipe on the same images and the same token budget, each
judged at its best guidance from a small sweep, and the cost of an image at two latent sizes. Every step is a
`nextscale` command; each is skipped once its output exists, so a stopped run resumes where it stopped.

    .venv/bin/python docs/orders_fashion.py [WORK_DIR]    # default outputs/orders-fashion

Writes WORK_DIR/orders.json and docs/orders-samples.png, and prints the README's tables.
"""

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
from fashion_samples import grid  # docs/ is the script's folder
from PIL import Image

from nextscale import load_model, sample
from nextscale.data.fashion import fashion_split, fashion_to_images
from nextscale.registry import FASHION_PATCH_NUMS
from nextscale.scaling.results import read_run
from nextscale.tokenizer.vqvae import pyramid_tokens

DEPTHS, WIDTH_PER_DEPTH, LATENTS = (1, 2), 32, (8, 16)
KINDS = {"VAR": "var", "raster": "raster-ar"}
# The scaling showcase's VAR runs (2,000 steps of 64 images); the raster runs get the same tokens, not the same steps.
TOKENS = 2000 * 64 * pyramid_tokens(FASHION_PATCH_NUMS)
# No guidance, and linear (VAR's schedule: 0 at the first step up to the weight at the last) and constant weights
# (as raster-order models are usually guided).
GUIDANCE = [("linear", 0.0), ("linear", 2.0), ("linear", 4.0), ("constant", 1.0), ("constant", 2.0)]
SWEEP_PER_CLASS, FINAL_PER_CLASS, FIGURE_ROWS = 200, 500, 8


def nextscale(*args, skip_if: Path | None = None) -> None:
    if skip_if is not None and skip_if.exists():
        return
    subprocess.run([sys.executable, "-m", "nextscale", *map(str, args)], check=True)


def prepare(work: Path) -> dict[str, tuple[str, Path]]:
    """The two tokenizers and their token shards: {order: (tokenizer, tokens)}. Both are the fashion-tokenizer
    recipe's, VAR's with its pyramid (the recipe of the built-in fashion tokenizer before its fashion-decoder run)
    and the raster model's with one 8×8 scale, so that neither has a decoder the other lacks."""
    tokenizers = {}
    for order, scales in (("VAR", []), ("raster", ["--patch-nums", "8"])):
        run = work / ("tok-pyramid" if order == "VAR" else "tok-8x8")
        resume = ["--resume"] if (run / "latest").exists() else []
        nextscale(
            "train-tokenizer", "--recipe", "fashion-tokenizer", *scales, "--data", "fashion-mnist",
            "--run-dir", run, "--workers", "0", "--quiet", *resume, skip_if=run / "model",
        )  # fmt: skip
        tokenizers[order] = str(run / "model")
    out = {}
    for order, tokenizer in tokenizers.items():
        tokens = work / f"tokens-{KINDS[order]}"
        nextscale("tokenize", "--data", "fashion-mnist", "--tokenizer", tokenizer, "--out", tokens, "--quiet")
        out[order] = (tokenizer, tokens)
    return out


def reconstruction(work: Path, order: str, tokenizer: str) -> dict:
    """The tokenizer's own quality on the test images: it bounds what its samples can reach."""
    out = work / f"tokenizer-{KINDS[order]}.json"
    nextscale(
        "eval-tokenizer", "--tokenizer", tokenizer, "--data", "fashion-mnist", "--features", "fashion",
        "--json", out, "--quiet", skip_if=out,
    )  # fmt: skip
    r = json.loads(out.read_text())
    return {"psnr": r["psnr"], "ssim": r["ssim"], "rfid": r["rfid"], "usage_last": r["scales"][-1]["usage"]}


def train(work: Path, order: str, tokenizer: str, tokens: Path) -> None:
    depths = ",".join(map(str, DEPTHS))
    nextscale(
        "scaling", "run", "--kind", KINDS[order], "--recipe", "fashion-var", "--tokenizer", tokenizer,
        "--data", tokens, "--val-data", "fashion-mnist", "--depths", depths, "--width-per-depth", WIDTH_PER_DEPTH,
        "--train-tokens", TOKENS, "--eval-every", 200, "--out", work / KINDS[order], "--workers", 0, "--quiet",
    )  # fmt: skip


def evaluate(work: Path, model: Path, name: str, schedule: str, cfg: float, per_class: int) -> dict:
    out = work / "eval" / f"{name}-{schedule}-{cfg:g}-{per_class}.json"
    out.parent.mkdir(exist_ok=True)
    nextscale(
        "eval", "--preset", "fashion", "--model", model, "--skip-edits", "--n-per-class", per_class,
        "--cfg-schedule", schedule, "--cfg", cfg, "--seed", 0, "--json", out, skip_if=out,
    )  # fmt: skip
    return json.loads(out.read_text())


def metrics(record: dict) -> dict:
    """FID, IS, precision, recall and KID of the samples, and the share read as their class (at the run's cfg)."""
    s = record["samples"]
    return {k: s[k] for k in ("fid", "is", "precision", "recall", "kid")} | {
        "class_accuracy": record["guided_accuracy"]
    }


def cost(work: Path, depth: int) -> dict:
    out = work / f"cost-d{depth}.json"
    latents = ",".join(map(str, LATENTS))
    nextscale(
        "bench", "--orders", "--preset", "fashion", "--depth", depth, "--width-per-depth", WIDTH_PER_DEPTH,
        "--latents", latents, "--batch-sizes", "1,64", "--runs", 2, "--json", out, skip_if=out,
    )  # fmt: skip
    return json.loads(out.read_text())


def training_record(run: Path) -> dict:
    """The run's steps, counted FLOPs, parameters and final held-out loss, as `scaling fit` reads them."""
    r = read_run(run)
    return {"steps": r["steps"], "train_flops": r["flops"], "parameters": r["params_total"], "val_loss": r["loss_mean"]}


def figure(work: Path, best: dict, out: Path) -> None:
    """Real test garments, then each order's samples at the largest depth and its best guidance: the same
    classes, and seed 0 for both."""
    grey, labels = fashion_split("test")
    first = np.concatenate([np.flatnonzero(labels == c)[:FIGURE_ROWS] for c in range(10)])
    panels = [grid(fashion_to_images(grey[first]).add(1).div(2))]
    classes = [c for c in range(10) for _ in range(FIGURE_ROWS)]
    for order in KINDS:
        vae, model = load_model(str(work / KINDS[order] / f"d{DEPTHS[-1]}" / "model"))
        schedule, cfg = best[order, DEPTHS[-1]]
        panels.append(grid(sample(vae, model, classes, seed=0, cfg=cfg, cfg_schedule=schedule).images.cpu()))
    gap = np.full((panels[0].shape[0], 12, 3), 255, np.uint8)
    picture = Image.fromarray(np.concatenate([panels[0], gap, panels[1], gap, panels[2]], axis=1))
    picture.resize((picture.width * 2, picture.height * 2), Image.NEAREST).save(out)


def main(work: Path) -> None:
    work.mkdir(parents=True, exist_ok=True)
    data = prepare(work)
    for order, (tokenizer, tokens) in data.items():
        train(work, order, tokenizer, tokens)
    tokenizers = {order: reconstruction(work, order, tokenizer) for order, (tokenizer, _) in data.items()}
    rows, best = [], {}
    for depth in DEPTHS:
        for order, kind in KINDS.items():
            model = work / kind / f"d{depth}" / "model"
            name = f"{kind}-d{depth}"
            sweep = {g: metrics(evaluate(work, model, name, *g, SWEEP_PER_CLASS)) for g in GUIDANCE}
            best[order, depth] = min(sweep, key=lambda g: sweep[g]["fid"])
            final = metrics(evaluate(work, model, name, *best[order, depth], FINAL_PER_CLASS))
            sweep_fid = {f"{s} {w:g}": round(m["fid"], 3) for (s, w), m in sweep.items()}
            rows.append(
                {"order": order, "depth": depth, "guidance": best[order, depth], **final, "sweep_fid": sweep_fid}
                | training_record(work / kind / f"d{depth}")
            )
    costs = {depth: cost(work, depth) for depth in DEPTHS}
    figure(work, best, Path(__file__).parent / "orders-samples.png")
    (work / "orders.json").write_text(
        json.dumps({"tokenizers": tokenizers, "quality": rows, "cost": costs}, indent=1) + "\n"
    )
    for order, t in tokenizers.items():
        print(
            f"{order} tokenizer on the test images: PSNR {t['psnr']:.2f} dB, SSIM {t['ssim']:.3f}, rFID {t['rfid']:.2f}"
        )
    print("| depth | order | parameters | train TFLOP | best guidance | FID | IS | precision | recall | class acc |")
    print("|---|---|---:|---:|---|---:|---:|---:|---:|---:|")
    for r in rows:
        print(
            f"| {r['depth']} | {r['order']} | {r['parameters'] / 1e3:.0f}k | {r['train_flops'] / 1e12:.1f} "
            f"| {r['guidance'][0]} {r['guidance'][1]:g} "
            f"| {r['fid']:.2f} | {r['is']:.2f} | {r['precision']:.3f} | {r['recall']:.3f} "
            f"| {r['class_accuracy']:.1%} |"
        )
    for depth, c in costs.items():
        print(f"\ncost of an image, depth {depth}:")
        for r in c["rows"]:
            print(
                f"  {r['order']:>6} {r['latent']}×{r['latent']} batch {r['batch_size']:>2}: {r['forward_passes']} "
                f"passes, {r['gflop_per_image']:.3f} GFLOP ({r['decode_gflop_per_image']:.3f} decoding), "
                f"{r['seconds_per_image'] * 1e3:.1f} ms ({r['decode_seconds_per_image'] * 1e3:.1f} decoding)"
            )


if __name__ == "__main__":
    main(Path(sys.argv[1] if len(sys.argv) > 1 else "outputs/orders-fashion"))
