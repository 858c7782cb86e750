"""Training checkpoints with `torch.distributed.checkpoint`: one shard per rank, resharded on load (a run saved
by N processes resumes on M), complete or absent.

`ckpt-STEP/` holds the DCP files (tensors only: model, optimizer, EMA, discriminator) and `trainer.json`
(step, settings, loss scaler, counters). It is written as `.partial-ckpt-STEP/` and renamed when whole;
`latest` then names it. A crash at any moment leaves `latest` naming a complete checkpoint. DCP's own index
(`.metadata`) is a pickle: it is read with an unpickler that accepts DCP's metadata classes only, and must list
tensors only.
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
        atomic_write_text(run_dir / LATEST, final.name + "\n")
        earlier = sorted((s, p) for p in run_dir.iterdir() if (s := checkpoint_step(p)) is not None and s <= step)
        for _, old in earlier[:-keep]:
            shutil.rmtree(old, ignore_errors=True)
    dist_info.barrier()
    return final


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
    """The checkpoint `latest` names; None where there is no `latest`. A pointer to nothing is an error that
    names it: resuming must never fall back to step 0 over a run's files."""
    pointer = run_dir / LATEST
    if not pointer.is_file():
        return None
    try:
        name = pointer.read_text().strip()
    except (OSError, UnicodeDecodeError) as e:
        raise CheckpointError(f"{pointer} is unreadable: {e}") from None
    ckpt = run_dir / name
    if not name or checkpoint_step(ckpt) is None or not ckpt.is_dir():
        raise CheckpointError(f"{pointer} names {name!r}, which is not a checkpoint in {run_dir}")
    read_record(ckpt)
    if not (ckpt / ".metadata").is_file():
        raise CheckpointError(f"{ckpt} has no .metadata: it is not a complete checkpoint")
    return ckpt
