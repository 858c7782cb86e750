"""Training checkpoints with `torch.distributed.checkpoint`: one shard per rank, resharded on load (a run saved
by N processes resumes on M), complete or absent.

`ckpt-STEP/` holds the DCP files (tensors only: model, optimizer, EMA, discriminator) and `trainer.json`
(step, settings, loss scaler, counters). It is written as `.partial-ckpt-STEP/` and renamed when whole, so a
`ckpt-STEP/` with its `.metadata` and `trainer.json` is complete. Resuming, exporting and pruning use the newest
complete checkpoint; the `latest` pointer, written after the rename, is for people only: a kill between the two
leaves it missing or one checkpoint behind, which changes nothing. DCP's own index (`.metadata`) is a pickle: it
is read with an unpickler that accepts DCP's metadata classes only, and must list tensors only.
"""

from __future__ import annotations

import io
import json
import os
import pickle
import shutil
import warnings
from pathlib import Path

import torch
import torch.distributed.checkpoint as dcp
from torch.distributed.checkpoint import FileSystemReader
from torch.distributed.checkpoint.api import CheckpointException

from ..errors import CheckpointError
from ..files import atomic_write_text, first_line
from .distributed import Distributed

LATEST, LOG, TRAINER_JSON, PARTIAL = "latest", "log.jsonl", "trainer.json", ".partial-"
FORMAT = 1


def checkpoint_step(path: Path) -> int | None:
    name = path.name
    return int(name[5:]) if name.startswith("ckpt-") and name[5:].isdigit() else None


def checkpoint_dir(run_dir: Path, step: int) -> Path:
    return run_dir / f"ckpt-{step:08d}"


class _MetadataUnpickler(pickle.Unpickler):
    """DCP's index names its own dataclasses, torch sizes, layouts and dtypes, paths, and nothing else. Tensors
    only: an index entry for pickled bytes (which DCP would unpickle freely) cannot even be built."""

    METADATA = (
        "Metadata",
        "MetadataIndex",
        "TensorStorageMetadata",
        "ChunkStorageMetadata",
        "TensorProperties",
        "StorageMeta",
        "_MEM_FORMAT_ENCODING",
    )
    ALLOWED = {
        *(("torch.distributed.checkpoint.metadata", name) for name in METADATA),
        ("torch.distributed.checkpoint.filesystem", "_StorageInfo"),
        ("torch", "Size"),
        ("torch.serialization", "_get_layout"),
        ("collections", "OrderedDict"),
        ("pathlib", "PosixPath"),
        ("pathlib", "PurePosixPath"),
        ("pathlib", "WindowsPath"),
        ("pathlib", "PureWindowsPath"),
    }

    def find_class(self, module: str, name: str):
        if "." not in name and ((module, name) in self.ALLOWED or (module == "torch" and name in _DTYPE_NAMES)):
            return super().find_class(module, name)
        raise pickle.UnpicklingError(f"{module}.{name} is not part of a checkpoint index")


_DTYPE_NAMES = tuple(n for n in dir(torch) if isinstance(getattr(torch, n, None), torch.dtype))


class SafeReader(FileSystemReader):
    def read_metadata(self, *args, **kwargs):
        from torch.distributed.checkpoint.metadata import StorageMeta

        path = Path(self.path) / ".metadata"
        try:
            metadata = _MetadataUnpickler(io.BytesIO(path.read_bytes())).load()
        except (OSError, pickle.UnpicklingError, EOFError, AttributeError, ValueError) as e:
            raise CheckpointError(f"{path} is not a readable checkpoint index ({first_line(e)})") from None
        self._check(metadata, path)
        if getattr(metadata, "storage_meta", None) is None:
            metadata.storage_meta = StorageMeta()
        metadata.storage_meta.load_id = self.load_id
        return metadata

    @staticmethod
    def _check(metadata, path: Path) -> None:
        """Tensor entries only, stored in files inside the checkpoint."""
        from torch.distributed.checkpoint.metadata import Metadata, TensorStorageMetadata

        if not isinstance(metadata, Metadata):
            raise CheckpointError(f"{path} is not a checkpoint index")
        if not all(isinstance(m, TensorStorageMetadata) for m in metadata.state_dict_metadata.values()):
            raise CheckpointError(f"{path} lists entries that are not tensors: not a nextscale checkpoint")
        for info in (metadata.storage_data or {}).values():
            relative = Path(str(getattr(info, "relative_path", "")))
            if relative.is_absolute() or ".." in relative.parts:
                raise CheckpointError(f"{path} points outside its checkpoint ({relative})")


class ModuleAndOptimizer:
    """A module and its optimizer as DCP tensors (the optimizer's state flattened, by parameter name: any world
    size and any sharding read it back) and back again.

    Only tensors are saved: the optimizer's other settings (betas, learning rate …) come from the run's
    settings. DCP gives an optimizer that has not stepped yet a zero step so that there is something to save;
    `fresh` says so, for the record, and `forget_steps` undoes it on loading.
    """

    def __init__(self, module: torch.nn.Module, optimizer: torch.optim.Optimizer):
        self.module, self.optimizer, self.fresh, self._settings = module, optimizer, False, {}

    def tensors(self) -> tuple[dict, dict]:
        from torch.distributed.checkpoint.state_dict import StateDictOptions, get_state_dict

        self.fresh = not self.optimizer.state
        options = StateDictOptions(flatten_optimizer_state_dict=True)
        model_sd, optim_sd = get_state_dict(self.module, self.optimizer, options=options)
        if self.fresh:
            self.forget_steps()
        self._settings = {k: v for k, v in optim_sd.items() if not torch.is_tensor(v)}
        return model_sd, {k: v for k, v in optim_sd.items() if torch.is_tensor(v)}

    def load(self, model_tensors: dict, optim_tensors: dict) -> None:
        """After `tensors()` (which gave the structures DCP filled in place)."""
        from torch.distributed.checkpoint.state_dict import StateDictOptions, set_state_dict

        options = StateDictOptions(flatten_optimizer_state_dict=True)
        set_state_dict(
            self.module,
            self.optimizer,
            model_state_dict=model_tensors,
            optim_state_dict={**self._settings, **optim_tensors},
            options=options,
        )

    def forget_steps(self) -> None:
        self.optimizer.state.clear()


def save(run_dir: Path, step: int, tensors: dict, record: dict, dist_info: Distributed, keep: int) -> Path:
    """Collective: every rank writes its shard of `tensors`; rank 0 writes `record` and publishes the checkpoint,
    then prunes this run's checkpoints older than the `keep` newest up to `step`."""
    final = checkpoint_dir(run_dir, step)
    partial = run_dir / f"{PARTIAL}{final.name}"
    if dist_info.is_main:
        for crashed in run_dir.glob(f"{PARTIAL}ckpt-*"):  # saves that crashed earlier
            shutil.rmtree(crashed, ignore_errors=True)
        partial.mkdir(parents=True)
    dist_info.barrier()
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="torch.distributed is disabled")  # one process: as meant
        dcp.save(tensors, checkpoint_id=partial)
    dist_info.barrier()
    if dist_info.is_main:
        atomic_write_text(partial / TRAINER_JSON, json.dumps({"format": FORMAT, **record}, indent=1) + "\n")
        if final.exists():  # the same step saved again (a stop signal right after a scheduled save)
            shutil.rmtree(final)
        os.replace(partial, final)
        point_latest(run_dir, final)
        prune(run_dir, step, keep)
    dist_info.barrier()
    return final


def point_latest(run_dir: Path, ckpt: Path) -> None:
    """The pointer people read; nothing depends on it (a kill before it lands loses nothing)."""
    atomic_write_text(run_dir / LATEST, ckpt.name + "\n")


def prune(run_dir: Path, step: int, keep: int) -> None:
    """Removes this run's checkpoints up to `step` older than its `keep` newest complete ones (later steps belong
    to a run this one did not make)."""
    kept = [ckpt for ckpt in complete_checkpoints(run_dir) if checkpoint_step(ckpt) <= step][-keep:]
    if not kept:
        return
    oldest_kept = checkpoint_step(kept[0])
    for path in run_dir.iterdir():
        if (s := checkpoint_step(path)) is not None and s < oldest_kept:
            shutil.rmtree(path, ignore_errors=True)


def is_complete(ckpt: Path) -> bool:
    return (ckpt / ".metadata").is_file() and (ckpt / TRAINER_JSON).is_file()


def complete_checkpoints(run_dir: Path) -> list[Path]:
    """The complete checkpoints in `run_dir`, oldest first."""
    if not run_dir.is_dir():
        return []
    found = [p for p in run_dir.iterdir() if checkpoint_step(p) is not None and p.is_dir() and is_complete(p)]
    return sorted(found, key=checkpoint_step)


def read_record(ckpt: Path) -> dict:
    path = ckpt / TRAINER_JSON
    try:
        record = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, ValueError) as e:
        raise CheckpointError(f"{path} is missing or unreadable ({first_line(e)})") from None
    if not isinstance(record, dict) or record.get("format") != FORMAT or "step" not in record:
        raise CheckpointError(f"{path} is not a nextscale training checkpoint")
    return record


def load(ckpt: Path, tensors: dict) -> None:
    """Collective: fills `tensors` (this rank's shards, in place) from `ckpt`, whatever world size wrote it."""
    SafeReader(ckpt).read_metadata()  # a broken index is named here, not wrapped in DCP's per-rank report
    try:
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message="torch.distributed is disabled")
            dcp.load(tensors, storage_reader=SafeReader(ckpt))
    except CheckpointError:
        raise
    except (Exception, CheckpointException) as e:  # DCP's own is a BaseException; name the checkpoint instead
        raise CheckpointError(f"{ckpt} could not be loaded ({first_line(e)[:300]})") from None


def run_contents(run_dir: Path) -> list[str]:
    """What marks `run_dir` as holding a run: its `latest` pointer, checkpoints, or log."""
    if not run_dir.is_dir():
        return []
    marks = [p.name for p in run_dir.iterdir() if p.name in (LATEST, LOG) or checkpoint_step(p) is not None]
    return sorted(marks)


def latest_checkpoint(run_dir: Path) -> Path | None:
    """The newest complete checkpoint in `run_dir` (None where there is none), whatever `latest` says: a kill
    between publishing a checkpoint and moving the pointer must not strand the run or lose a save interval.
    Its `trainer.json` is read, so that a damaged one is named here rather than half-way through a resume."""
    complete = complete_checkpoints(run_dir)
    if not complete:
        return None
    read_record(complete[-1])
    return complete[-1]
