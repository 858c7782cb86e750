"""Files in and out: atomic writes, outputs checked before any work, and weight files read without copies."""

from __future__ import annotations

import os
import tempfile
from collections.abc import Callable
from pathlib import Path

from .errors import CheckpointError, NextscaleError


def atomic_write(path: str | os.PathLike, write: Callable[[str], None]) -> Path:
    """Calls `write(tmp_path)` and moves the result into place, so a crash never leaves a half-written file."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    try:
        write(tmp)
        _flush_to_disk(tmp)  # the rename must never publish a file whose bytes a power loss could still lose
        os.chmod(tmp, 0o666 & ~_umask())  # mkstemp makes 0600 files; a result should read like any other file
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.remove(tmp)
        raise
    return path


def _flush_to_disk(path: str) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def atomic_write_text(path: str | os.PathLike, text: str) -> Path:
    return atomic_write(path, lambda tmp: Path(tmp).write_text(text))


def ensure_writable_dir(path: str | os.PathLike, what: str) -> Path:
    """Creates `path` if needed and proves a file can be written in it, before any long computation."""
    path = Path(path)
    if path.exists() and not path.is_dir():
        raise NextscaleError(f"{what} {path} is a file, not a directory")
    _refuse_a_file_above(path, what)
    try:
        path.mkdir(parents=True, exist_ok=True)
        fd, probe = tempfile.mkstemp(dir=path, prefix=".nextscale-probe.")
        os.close(fd)
        os.remove(probe)
    except OSError as e:
        raise NextscaleError(f"{what} {path} is not writable: {e.strerror or e}") from None
    return path


def ensure_creatable_dir(path: str | os.PathLike, what: str) -> Path:
    """Checks that `path` is a writable folder, or could be made as one, without making it: a run that is then
    refused leaves nothing behind."""
    path = Path(path)
    if path.exists():
        return ensure_writable_dir(path, what)  # probes with a file it removes
    _refuse_a_file_above(path, what)
    existing = next(p for p in path.parents if p.exists())
    if not os.access(existing, os.W_OK | os.X_OK):
        raise NextscaleError(f"{what} {path} is not writable: {existing} is not writable")
    return path


def ensure_writable_file(path: str | os.PathLike, what: str, suffixes: tuple[str, ...] = ()) -> Path:
    """Checks that `path` can be written (its folder is made and probed) and has one of `suffixes`."""
    path = Path(path)
    if suffixes and path.suffix.lower() not in suffixes:
        raise NextscaleError(f"{what} {path} must end in {' or '.join(suffixes)}")
    if path.is_dir():
        raise NextscaleError(f"{what} {path} is a directory, not a file")
    _refuse_a_file_above(path, what)
    ensure_writable_dir(path.parent, f"the folder of {what} {path}")
    return path


def _refuse_a_file_above(path: Path, what: str) -> None:
    blocking = next((p for p in path.parents if p.exists() and not p.is_dir()), None)
    if blocking is not None:
        raise NextscaleError(f"{what} {path} is not writable: {blocking} is a file")


def file_sha256(path: str | os.PathLike) -> str:
    """The SHA-256 of a file, read in 16 MB blocks (shards and networks can be gigabytes)."""
    import hashlib

    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        while chunk := fh.read(1 << 24):
            digest.update(chunk)
    return digest.hexdigest()


def first_line(error: BaseException) -> str:
    """An exception's message on one line (its type where it has none)."""
    lines = [line for line in str(error).splitlines() if line.strip()]
    return lines[0].strip() if lines else type(error).__name__


def read_safetensors(path: str | os.PathLike) -> dict:
    """A `.safetensors` file as CPU tensors backed by a private memory map: nothing is copied until written."""
    from safetensors.torch import load_file

    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: no such file")
    try:
        return load_file(str(path))
    except Exception as e:  # safetensors raises its own error types for truncated or corrupt files
        raise CheckpointError(f"{path} is not a readable safetensors file: {first_line(e)}") from None


def read_torch_weights(path: str | os.PathLike):
    """`torch.load(weights_only=True)` (never unpickles anything but tensors and plain containers), memory-mapped
    where the file is in the zip format of torch ≥ 1.6 (the released files are)."""
    import torch

    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: no such file")
    if path.stat().st_size == 0:
        raise CheckpointError(f"{path} is empty (0 bytes): not a torch weights file")
    try:
        try:
            return torch.load(path, map_location="cpu", weights_only=True, mmap=True)
        except RuntimeError as e:
            if "mmap can only be used" not in str(e):
                raise
            return torch.load(path, map_location="cpu", weights_only=True)  # the legacy format cannot be mapped
    except Exception as e:  # torch raises several types for corrupt, truncated or unsafe pickles
        raise CheckpointError(f"{path} is not a readable weights-only torch file: {first_line(e)}") from None


OUTPUTS_MANIFEST = "nextscale-outputs.json"


def claim_output_dir(directory: str | os.PathLike, command: str, files: list[str], numbered: int = 0) -> str | None:
    """Makes `directory` hold one run's outputs only, before any work: what an earlier nextscale run listed in
    its manifest there is removed, and a file this run would write that something else made is refused.

    `files` are names inside `directory`; `numbered` more are `000000.png` … (one per image). Returns a note of
    what was removed, or None.
    """
    import json
    import re

    directory = ensure_writable_dir(directory, "output directory")
    manifest = directory / OUTPUTS_MANIFEST
    previous: dict = {"files": [], "numbered": 0}
    if manifest.is_file():
        try:
            previous = json.loads(manifest.read_text())
            previous = {"files": [str(f) for f in previous["files"]], "numbered": int(previous["numbered"])}
        except (OSError, ValueError, KeyError, TypeError):
            raise NextscaleError(
                f"{manifest} is not a nextscale outputs list: remove it or pick another output directory"
            ) from None

    def numbered_index(name: str, count: int) -> bool:
        return re.fullmatch(r"\d{6,}\.png", name) is not None and int(name[:-4]) < count

    ours_before = set(previous["files"])
    existing = [p.name for p in directory.iterdir() if p.is_file()]
    wanted = set(files)
    clash = [
        n
        for n in existing
        if (n in wanted or numbered_index(n, numbered))
        and n not in ours_before
        and not numbered_index(n, previous["numbered"])
    ]
    if clash:
        raise NextscaleError(
            f"{directory / sorted(clash)[0]} exists and was not written by nextscale "
            f"({len(clash)} such file(s)): pick another output directory"
        )
    removed = [n for n in existing if n in ours_before or numbered_index(n, previous["numbered"])]
    for name in removed:
        (directory / name).unlink()
    atomic_write_text(manifest, json.dumps({"command": command, "files": files, "numbered": numbered}) + "\n")
    if not removed:
        return None
    return f"{directory}: removed {len(removed)} file(s) an earlier nextscale run wrote there"
