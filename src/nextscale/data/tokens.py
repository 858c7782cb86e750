"""Token shards: a dataset encoded once by a tokenizer, so training the transformer needs neither the encoder
nor the images.

A token directory holds `shard-KKKKK.u16` files (uint16 ids, one row of L ids per image and orientation,
read as numpy memory maps), one `shard-KKKKK.json` per shard (labels, source files, size, SHA-256), and
`index.json`, written last, that lists them. Shards are written whole or not at all (temporary file, then
rename), so a stopped `nextscale tokenize` resumes at the first missing shard; every shard is checked against
its size and checksum when opened, and a bad one is named. The tokenizer that made the tokens is recorded by its
fingerprint (`model.tokens_fingerprint()`, its content), so tokens are never resumed, rebuilt or trained on with
another.
"""

from __future__ import annotations

import bisect
import hashlib
import json
import re
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, Subset
from tqdm.auto import tqdm

from ..distributed import Distributed
from ..errors import NextscaleError
from ..files import atomic_write_text, file_sha256, first_line
from ..pretrained import short_fingerprint
from ..sharded import ShardedOutput, shard_name
from .common import class_names, identity, stack_items

INDEX, PLAN = "index.json", "tokenize.json"
FORMAT, UNCHECKED_FORMAT = 2, 1  # format 1 did not record the tokenizer's fingerprint: it is read, not checked


def _read_json(path: Path, what: str) -> dict:
    try:
        return json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, ValueError) as e:
        raise NextscaleError(f"{path}: unreadable {what} ({first_line(e)})") from None


class TokenDataset(Dataset):
    """The records of a token directory: `dataset[key]` → (ids (L,) int64, label). `key` is an index or the
    trainer's (index, sample seed, flip bit); the flip bit picks the flipped orientation where there is one."""

    deterministic = True
    in_memory = True  # rows are read from memory maps in the main process: no worker processes needed

    def __init__(self, root: str | Path, verify: bool = True):
        root = Path(root)
        index_path = root / INDEX
        if not index_path.is_file():
            raise NextscaleError(f"{root} is not a token directory (no {INDEX}; write one with nextscale tokenize)")
        index = _read_json(index_path, "token index")
        if index.get("format") not in (FORMAT, UNCHECKED_FORMAT):
            raise NextscaleError(f"{index_path}: not a nextscale token index (format {index.get('format')!r})")
        self.root, self.index = root, index
        self.index_sha256 = hashlib.sha256(index_path.read_bytes()).hexdigest()  # what `identity` names them by
        self.tokenizer = index.get("tokenizer") if index["format"] == FORMAT else None  # a fingerprint, or unknown
        self.vocab_size, self.patch_nums = index["vocab_size"], tuple(index["patch_nums"])
        self.num_tokens = sum(pn * pn for pn in self.patch_nums)
        self.orientations, self.classes = index["orientations"], index["classes"]
        self.num_classes = len(self.classes)
        self.arrays, self.labels, self.starts = [], [], [0]
        for name in index["shards"]:
            meta = _read_json(root / name, "shard record")
            data = root / meta["file"]
            shape = (meta["records"], self.orientations, self.num_tokens)
            expected = int(np.prod(shape)) * 2
            size = data.stat().st_size if data.is_file() else -1
            if size != expected:
                raise NextscaleError(
                    f"{data}: truncated or missing token shard ({size} bytes, expected {expected}); "
                    "rerun nextscale tokenize to rewrite it"
                )
            if verify and file_sha256(data) != meta["sha256"]:
                raise NextscaleError(
                    f"{data}: corrupt token shard (its checksum does not match {root / name}); "
                    "rerun nextscale tokenize to rewrite it"
                )
            if len(meta.get("orientations", [])) != self.orientations:
                raise NextscaleError(f"{root / name} does not hold the {self.orientations} orientation(s) {INDEX} says")
            self.arrays.append(np.memmap(data, dtype=np.uint16, mode="r", shape=shape))
            self.labels.append(meta["labels"])
            self.starts.append(self.starts[-1] + meta["records"])
        if self.starts[-1] != index.get("records"):
            raise NextscaleError(
                f"{index_path} lists {index.get('records')} records but its shards hold "
                f"{self.starts[-1]}: rerun nextscale tokenize"
            )

    def __len__(self) -> int:
        return self.starts[-1]

    def __getitem__(self, key) -> tuple[torch.Tensor, int]:
        i, _, flip = key if isinstance(key, tuple) else (key, None, 0)
        shard = bisect.bisect_right(self.starts, i) - 1
        row = i - self.starts[shard]
        ids = self.arrays[shard][row, flip % self.orientations].astype(np.int64)
        return torch.from_numpy(ids), int(self.labels[shard][row])


def _image_source(dataset, i: int) -> str:
    samples = getattr(dataset, "samples", None)
    return str(samples[i][0].relative_to(dataset.root)) if samples is not None else f"{type(dataset).__name__}[{i}]"


@torch.no_grad()
def tokenize(
    dataset: Dataset,
    vae,
    out: str | Path,
    *,
    flip: bool = False,
    batch_size: int = 256,
    shard_size: int = 4096,
    dist: Distributed | None = None,
    device="cpu",
    progress: bool = True,
    tokenizer_name: str = "",
    workers: int = 0,
    rebuild: bool = False,
) -> Path:
    """Encodes `dataset` (centre crops) into token shards in `out`; under torchrun (`dist`) the processes share
    the shards. Shards already complete are kept, so a stopped run resumes; tokens of another tokenizer are
    refused, or with `rebuild` removed first. Returns the index path (written by the first process).
    `tokenizer_name` (where the tokenizer was read) is noted in the record for people; `vae` is what is checked."""
    out, dist = Path(out), dist or Distributed()
    n, L = len(dataset), vae.config.num_tokens
    if vae.config.vocab_size > 65536:
        raise NextscaleError(f"token shards hold uint16 ids: a codebook of {vae.config.vocab_size} does not fit")
    plan = {
        "format": FORMAT,
        "records": n,
        "data": identity(dataset),
        "vocab_size": vae.config.vocab_size,
        "patch_nums": list(vae.config.patch_nums),
        "orientations": 2 if flip else 1,
        "classes": class_names(dataset),
        "shard_size": shard_size,
    }
    fingerprint = vae.tokens_fingerprint()
    # A rerun resumes only the tokenization it would have done: the same data, tokenizer and layout. The
    # tokenizer is checked apart from the plan, so that its refusal can name both fingerprints.
    output = ShardedOutput(out, plan, -(-n // shard_size), dist, record=PLAN, contents="tokens made", place="--out")

    def prepare() -> list[int]:
        if rebuild:
            remove_tokens(out)
        _refuse_unchecked(out)
        record = output.claim()
        if "tokenizer" not in record:  # a new folder: what the shards will be checked against from now on
            output.save({**record, "tokenizer": fingerprint, "tokenizer_name": tokenizer_name})
        elif record["tokenizer"] != fingerprint:
            raise NextscaleError(
                f"{out} holds tokens made by another tokenizer ({short_fingerprint(record['tokenizer'])}, not "
                f"{short_fingerprint(fingerprint)}): pass --rebuild to replace them, or use a new --out"
            )
        return output.missing(lambda k: _shard_complete(output, k))

    mine = output.share(output.on_main(prepare))
    bar = tqdm(
        total=sum(min(shard_size, n - k * shard_size) for k in mine),
        desc="tokenizing",
        unit="img",
        disable=not progress,
    )
    vae = vae.to(device).eval()
    for k in mine:
        begin, end = k * shard_size, min(n, (k + 1) * shard_size)
        rows, labels = np.empty((end - begin, 2 if flip else 1, L), dtype=np.uint16), []
        loader = DataLoader(
            Subset(dataset, range(begin, end)), batch_size=batch_size, num_workers=workers, collate_fn=stack_items
        )
        for img, y in loader:
            at = len(labels)
            img = img.to(device)
            labels += y.tolist()
            for o, view in enumerate((img, img.flip(-1)) if flip else (img,)):
                ids = torch.cat(vae.img_to_idx(view, check=False), dim=1)
                rows[at : at + len(img), o] = ids.cpu().numpy().astype(np.uint16)
            bar.update(len(img))
        _write_shard(output, k, rows, labels, [_image_source(dataset, i) for i in range(begin, end)])
    bar.close()
    dist.barrier()
    if dist.is_main:
        shards = [shard_name(k, ".json") for k in range(output.shard_count)]
        index = {**plan, "tokenizer": fingerprint, "shards": shards}
        atomic_write_text(out / INDEX, json.dumps(index, indent=1) + "\n")
    dist.barrier()
    return out / INDEX


def _shard_complete(output: ShardedOutput, k: int) -> bool:
    try:
        meta = json.loads(output.path(k, ".json").read_text())
        return (output.folder / meta["file"]).stat().st_size == meta["bytes"]
    except (OSError, ValueError, KeyError, TypeError):
        return False


def _write_shard(output: ShardedOutput, k: int, rows: np.ndarray, labels: list[int], sources: list[str]) -> None:
    data = output.publish(k, ".u16", lambda tmp: rows.tofile(tmp))
    meta = {
        "file": data.name,
        "records": len(labels),
        "bytes": rows.nbytes,
        "sha256": file_sha256(data),
        "labels": labels,
        "sources": sources,
        "orientations": ["original", "flipped"][: rows.shape[1]],
    }
    output.publish(k, ".json", lambda tmp: Path(tmp).write_text(json.dumps(meta) + "\n"))  # last: marks it whole


_OWN = rf"(?:shard-\d{{5,}}\.(?:u16|json)|{re.escape(INDEX)}|{re.escape(PLAN)})"
TOKEN_FILE = re.compile(rf"{_OWN}|\.{_OWN}\..+\.tmp")  # with the temporary files of a stopped write


def remove_tokens(folder: Path) -> int:
    """Removes a token directory's own files and what a stopped write left of them: the index first, so that a
    stopped removal never leaves an index over missing shards, the record last. Anything else stays (and the
    claim that follows refuses a folder that holds it). Returns how many files went."""
    if not folder.is_dir():
        return 0
    ours = [p for p in folder.iterdir() if p.is_file() and TOKEN_FILE.fullmatch(p.name)]
    ours.sort(key=lambda p: (p.name != INDEX, p.name == PLAN))
    for path in ours:
        path.unlink()
    return len(ours)


def _refuse_unchecked(folder: Path) -> None:
    record = folder / PLAN
    try:
        format_ = json.loads(record.read_text()).get("format") if record.is_file() else None
    except (OSError, UnicodeDecodeError, ValueError, AttributeError):
        return  # not a record this can read: the claim names it
    if format_ == UNCHECKED_FORMAT:
        raise NextscaleError(
            f"{folder} holds tokens of an older nextscale that did not record their tokenizer: pass --rebuild to "
            "replace them, or use a new --out"
        )
