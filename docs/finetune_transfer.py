"""The README's transfer measurement: a transformer trained on Fashion-MNIST's first 5 classes, fine-tuned on the
other 5 (all weights, and LoRA), against the same transformer trained from scratch on those 5. Every run is the
`nextscale train` command on the built-in fashion tokenizer's tokens, with the fashion-var recipe at batch 32.

    .venv/bin/python docs/finetune_transfer.py [WORK_DIR]    # resumes: finished runs are kept

Writes WORK_DIR/transfer.json and prints the README's table.
"""

import json
import subprocess
import sys
from pathlib import Path

import torch

from nextscale.data.fashion import FASHION_CLASSES, FashionMNISTDataset
from nextscale.data.tokens import tokenize
from nextscale.weights import load_vae

BASE_STEPS, STEPS, BATCH = 800, 400, 32
HALVES = {"first": range(0, 5), "second": range(5, 10)}
RUNS = {  # name: (half, steps, extra arguments)
    "base": ("first", BASE_STEPS, []),
    "scratch": ("second", STEPS, []),
    "full": ("second", STEPS, ["--init", "{work}/base/model"]),
    "lora": ("second", STEPS, ["--init", "{work}/base/model", "--trainable", "lora:16,class"]),
}


class ClassSubset(torch.utils.data.Dataset):
    """Fashion-MNIST's images of some classes, relabelled 0 … k−1 and named."""

    def __init__(self, split: str, labels: range):
        self.full = FashionMNISTDataset(split)
        self.index = torch.nonzero(torch.isin(self.full.labels, torch.tensor(list(labels)))).flatten()
        self.classes = [FASHION_CLASSES[c] for c in labels]
        self.num_classes, self.first = len(self.classes), labels.start

    def __len__(self) -> int:
        return len(self.index)

    def __getitem__(self, key):
        x, y = self.full[int(self.index[key[0] if isinstance(key, tuple) else key])]
        return x, y - self.first


def tokens(work: Path) -> None:
    vae = load_vae("fashion")
    for half, labels in HALVES.items():
        for split in ("train", "test"):
            out = work / "tokens" / f"{half}-{split}"
            if not (out / "index.json").is_file():
                tokenize(ClassSubset(split, labels), vae, out, progress=False, tokenizer_name="fashion")


def train(work: Path, name: str) -> None:
    half, steps, extra = RUNS[name]
    run = work / name
    if (run / "model" / "var").is_dir():
        return
    args = [sys.executable, "-m", "nextscale", "train", "--recipe", "fashion-var", "--tokenizer", "fashion"]
    args += ["--data", str(work / "tokens" / f"{half}-train"), "--val-data", str(work / "tokens" / f"{half}-test")]
    args += ["--steps", str(steps), "--batch-size", str(BATCH), "--eval-every", "50", "--save-every", "100"]
    args += ["--run-dir", str(run), "--quiet", *(a.format(work=work) for a in extra)]
    args += ["--resume"] if (run / "latest").exists() else []
    subprocess.run(args, check=True)


def curve(work: Path, name: str) -> list[tuple[int, float]]:
    records = [json.loads(line) for line in (work / name / "log.jsonl").read_text().splitlines()]
    return [(r["step"], r["val_loss"]) for r in records if "val_loss" in r]


def first_below(points, loss: float) -> int | None:
    return next((step for step, value in points if value <= loss), None)


def main(work: Path) -> None:
    work.mkdir(parents=True, exist_ok=True)
    tokens(work)
    for name in RUNS:
        train(work, name)
    curves = {name: curve(work, name) for name in RUNS}
    scratch_final = curves["scratch"][-1][1]
    result = {
        name: {
            "final_val_loss": points[-1][1],
            "steps": points[-1][0],
            "steps_to_scratch_final": first_below(points, scratch_final),
            "curve": points,
        }
        for name, points in curves.items()
    }
    (work / "transfer.json").write_text(json.dumps(result, indent=1) + "\n")
    print("| run | test loss after its steps | steps to the scratch run's final loss |")
    print("|---|---:|---:|")
    for name, r in result.items():
        print(f"| {name} | {r['final_val_loss']:.3f} after {r['steps']} | {r['steps_to_scratch_final'] or '—'} |")


if __name__ == "__main__":
    main(Path(sys.argv[1] if len(sys.argv) > 1 else "outputs/finetune-transfer"))
