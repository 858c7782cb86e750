"""A user's `torch.export` file (`.pt2`), loaded without running code from it.

`torch.export.load` unpickles whatever the archive marks as pickled: weights and constants saved with
`use_pickle` (tensor subclasses), opaque and custom-class constants (`opaque_obj_*`, `custom_obj_*`), the legacy
`data/{weights,constants}/{model}.pt`, and sample inputs that a weights-only read refuses; it also runs
AOTInductor's compiled code (`data/aotinductor/`). All of that is decided here from the archive's members before
torch reads any of them, and torch then reads the very bytes that were checked, from memory. Nothing process-wide
changes, so another thread that unpickles meanwhile gets the ordinary `pickle` and `torch.load`.
"""

from __future__ import annotations

import io
import json
import zipfile
from pathlib import Path

import torch
from torch.export.pt2_archive import constants as pt2

from ..errors import NextscaleError


def load_exported(path: Path) -> torch.nn.Module:
    """The program saved in `path` by `torch.export.save`, as a module."""
    data = path.read_bytes()
    try:
        archive = zipfile.ZipFile(io.BytesIO(data))
    except zipfile.BadZipFile:
        raise NextscaleError("not a torch.export archive (not a zip file)") from None
    with archive:
        _refuse_code(archive, _members(archive))
    return torch.export.load(io.BytesIO(data)).module()


def _members(archive: zipfile.ZipFile) -> dict[str, zipfile.ZipInfo]:
    """The members by their lower-cased names inside the archive's folder. torch's reader takes the folder from
    the first member and finds names ignoring case, so two names that differ only in case could be read as
    either; a member outside the folder would send `torch.export.load` to its older, pickling format."""
    infos = archive.infolist()
    folder = infos[0].filename.partition("/")[0] + "/" if infos else ""
    members = {}
    for info in infos:
        if not info.filename.startswith(folder):
            raise NextscaleError(f"not a torch.export archive ({info.filename} is outside its folder {folder})")
        name = info.filename[len(folder) :].lower()
        if name in members:
            raise NextscaleError(f"not a torch.export archive (two members named {name}, ignoring case)")
        members[name] = info
    return members


def _pickled(what: str) -> NextscaleError:
    return NextscaleError(f"it holds pickled Python objects ({what}), which nextscale never loads: export tensors only")


def _refuse_code(archive: zipfile.ZipFile, members: dict[str, zipfile.ZipInfo]) -> None:
    """Every member that `torch.export.load` would unpickle or run, for each program in the archive."""
    if any(name.startswith(pt2.AOTINDUCTOR_DIR) for name in members):
        raise NextscaleError("it holds AOTInductor's compiled code, which nextscale never runs: export the program")
    prefix, suffix = pt2.MODELS_FILENAME_FORMAT.split("{}")
    for model in [name[len(prefix) : -len(suffix)] for name in members if name.startswith(prefix)]:
        for legacy in (f"{pt2.WEIGHTS_DIR}{model}.pt", f"{pt2.CONSTANTS_DIR}{model}.pt"):
            if legacy in members:
                raise _pickled(legacy)
        for config, kind, raw in (
            (pt2.WEIGHTS_CONFIG_FILENAME_FORMAT, "weight", ""),  # torch reads raw weights by `use_pickle` alone
            (pt2.CONSTANTS_CONFIG_FILENAME_FORMAT, "constant", pt2.TENSOR_CONSTANT_FILENAME_PREFIX),
        ):
            for fqn, meta in _payloads(archive, members, config.format(model)):
                if meta.get("use_pickle") is not False or not str(meta.get("path_name")).startswith(raw):
                    raise _pickled(f"{kind} {fqn}")
        inputs = members.get(pt2.SAMPLE_INPUTS_FILENAME_FORMAT.format(model))
        data = archive.read(inputs) if inputs else b""
        if data:
            try:  # torch reads them weights-only first, and unpickles them whole where that fails
                torch.load(io.BytesIO(data), weights_only=True)
            except Exception:
                raise _pickled("its sample inputs") from None


def _payloads(archive: zipfile.ZipFile, members: dict[str, zipfile.ZipInfo], name: str) -> list[tuple[str, dict]]:
    """(name, how it is stored) of each weight or constant that a payload config lists; torch fails on a missing
    config by itself."""
    if name not in members:
        return []
    try:
        return [(fqn, dict(meta)) for fqn, meta in json.loads(archive.read(members[name]).decode())["config"].items()]
    except Exception:
        raise NextscaleError(f"not a torch.export archive ({name} is not a payload config)") from None
