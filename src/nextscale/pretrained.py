"""The project's own weight format: a directory with `config.json` and `model.safetensors`, loaded strictly and
without copies (the model is built on the meta device, then takes the memory-mapped tensors as they are)."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
from collections.abc import Mapping
from pathlib import Path
from types import MappingProxyType

import torch

from .errors import CheckpointError, NextscaleError
from .files import atomic_write, atomic_write_text, read_safetensors

FORMAT_VERSION = 2  # 2: architecture-only configs (version 1 also held training settings, dropped on load)
CONFIG_NAME, WEIGHTS_NAME = "config.json", "model.safetensors"


def describe_key_mismatch(missing, unexpected, mismatched=()) -> str:
    def show(keys):
        keys = sorted(keys)
        return ", ".join(keys[:8]) + (f" … (+{len(keys) - 8} more)" if len(keys) > 8 else "")

    parts = []
    if missing:
        parts.append(f"missing keys: {show(missing)}")
    if unexpected:
        parts.append(f"unexpected keys: {show(unexpected)}")
    if mismatched:
        parts.append(f"shape mismatches: {show(mismatched)}")
    return "; ".join(parts)


def load_strict(model: torch.nn.Module, state_dict: dict, source: str, *, assign: bool = False) -> None:
    """`load_state_dict(strict=True)` with an error that names every missing, unexpected or misshapen key.

    `assign=True` makes the model's tensors the given ones (for a model built on the meta device): no copy,
    and memory-mapped tensors stay mapped. Floating tensors of another dtype are converted to the model's.
    """
    own = model.state_dict()
    lenient = getattr(model, "shape_lenient_keys", ())
    missing = set(own) - set(state_dict)
    unexpected = set(state_dict) - set(own)
    mismatched = [
        f"{k} {tuple(state_dict[k].shape)} vs {tuple(own[k].shape)}"
        for k in set(own) & set(state_dict)
        if tuple(state_dict[k].shape) != tuple(own[k].shape) and k not in lenient
    ]
    if missing or unexpected or mismatched:
        raise CheckpointError(
            f"{source} does not fit {type(model).__name__}: " + describe_key_mismatch(missing, unexpected, mismatched)
        )
    converted = {
        k: v.to(own[k].dtype) if v.is_floating_point() and v.dtype != own[k].dtype else v for k, v in state_dict.items()
    }
    model.load_state_dict(converted, strict=True, assign=assign)


def config_from_dict(config_class, values: dict, legacy_keys: tuple[str, ...] = (), source: str = "config"):
    """A config dataclass from saved values; keys of older formats are dropped, unknown keys refused."""
    names = {f.name for f in dataclasses.fields(config_class)}
    unknown = set(values) - names - set(legacy_keys)
    if unknown:
        raise CheckpointError(f"{source} has settings this version does not know: {', '.join(sorted(unknown))}")
    try:
        return config_class(**{k: v for k, v in values.items() if k in names})
    except (TypeError, ValueError) as e:
        raise CheckpointError(f"{source} holds an invalid configuration: {e}") from None


def weights_fingerprint(*models: torch.nn.Module, skip: tuple[str, ...] = ()) -> str:
    """A SHA-256 over every tensor's name, shape and an even sample of ~1,000 of its values: other weights under
    the same name are caught without hashing gigabytes. Tensors whose names end in one of `skip` are left out."""
    digest = hashlib.sha256()
    for model in models:
        for name, tensor in model.state_dict().items():
            if skip and name.endswith(skip):
                continue
            flat = tensor.detach().flatten()
            sample = flat[:: max(1, flat.numel() // 1024)].float().cpu().numpy()
            digest.update(f"{name}{tuple(tensor.shape)}".encode() + sample.tobytes())
    return digest.hexdigest()


def short_fingerprint(fingerprint: str) -> str:
    """A fingerprint as messages show it: its first 12 hex digits tell two models apart."""
    return f"{fingerprint[:12]}…"


class PretrainedMixin:
    """`save_pretrained(dir)` / `from_pretrained(dir)` for a module with a dataclass `config` whose constructor
    takes `(config, device=…)` and builds nothing but shapes on the meta device."""

    model_type: str
    config_class: type
    legacy_config_keys: tuple[str, ...] = ()
    # Where the weights came from, saved beside the config (not part of the architecture): e.g. a transformer's
    # {"tokenizer": the fingerprint of the tokenizer it was trained with, "classes": its class names}.
    provenance: Mapping = MappingProxyType({})  # assign a new dict to a model's own; this one is read-only

    def fingerprint(self) -> str:
        """Identifies these weights and this architecture by content (the same weights by any path). The config
        counts by its values that differ from the defaults, so that a setting added later, with a default, leaves
        every recorded fingerprint as it was."""
        defaults = self.config_class().to_dict()
        changed = {k: v for k, v in self.config.to_dict().items() if defaults.get(k) != v}
        config = hashlib.sha256(json.dumps(changed, sort_keys=True).encode()).hexdigest()
        return f"{weights_fingerprint(self)[:32]}:{config[:16]}"

    def save_pretrained(self, directory: str | os.PathLike, *, dtype: torch.dtype | None = None) -> Path:
        """`dtype` (e.g. torch.float16) stores the floating tensors narrower, to ship a model in half the bytes;
        loading widens them back to the model's own dtype, so the model computes as before on rounded weights."""
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        from safetensors.torch import save_file

        tensors = {
            k: (v.to(dtype) if dtype is not None and v.is_floating_point() else v).detach().cpu().contiguous()
            for k, v in self.state_dict().items()
        }
        atomic_write(directory / WEIGHTS_NAME, lambda tmp: save_file(tensors, tmp, metadata={"format": "pt"}))
        meta = {"model_type": self.model_type, "format_version": FORMAT_VERSION, "config": self.config.to_dict()}
        if self.provenance:
            meta["provenance"] = self.provenance
        atomic_write_text(directory / CONFIG_NAME, json.dumps(meta, indent=2) + "\n")
        return directory

    @classmethod
    def read_config(cls, directory: str | os.PathLike):
        config_path = Path(directory) / CONFIG_NAME
        if not config_path.is_file():
            raise CheckpointError(
                f"{config_path} not found: a saved model directory holds {CONFIG_NAME} and {WEIGHTS_NAME}"
            )
        try:
            meta = json.loads(config_path.read_text())
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
            raise CheckpointError(f"{config_path} is not readable JSON: {e}") from None
        if not isinstance(meta, dict) or meta.get("model_type") != cls.model_type:
            kind = meta.get("model_type") if isinstance(meta, dict) else None
            raise CheckpointError(f"{directory} holds a {kind!r} model, not a {cls.model_type!r} model")
        if not isinstance(meta.get("config"), dict):
            raise CheckpointError(f"{config_path} has no 'config' object")
        return config_from_dict(cls.config_class, meta["config"], cls.legacy_config_keys, str(config_path))

    @staticmethod
    def read_provenance(directory: str | os.PathLike) -> dict:
        """The provenance a saved model directory records ({} where none: older saves, released files)."""
        try:
            meta = json.loads((Path(directory) / CONFIG_NAME).read_text())
        except (OSError, UnicodeDecodeError, json.JSONDecodeError):
            return {}
        provenance = meta.get("provenance") if isinstance(meta, dict) else None
        return provenance if isinstance(provenance, dict) else {}

    @classmethod
    def from_pretrained(cls, directory: str | os.PathLike, *, device: str | torch.device = "cpu"):
        """Builds the model's shapes only, then takes the file's memory-mapped tensors as its own."""
        directory = Path(directory)
        config = cls.read_config(directory)
        model = cls(config, device="meta")
        weights_path = directory / WEIGHTS_NAME
        if not weights_path.is_file():
            raise CheckpointError(
                f"{weights_path} not found: a saved model directory holds {CONFIG_NAME} and {WEIGHTS_NAME}"
            )
        load_strict(model, read_safetensors(weights_path), str(weights_path), assign=True)
        model.provenance = cls.read_provenance(directory)
        return model.to(device).eval()


def check_config(condition: bool, message: str) -> None:
    """Config validation: a message that names the setting, as a user error."""
    if not condition:
        raise NextscaleError(message)


def shapes_only_embedding(num: int, dim: int) -> torch.nn.Embedding:
    """An `nn.Embedding` whose weight is allocated but not initialised (the model's `init_weights` does that).

    PyTorch's own constructor draws a normal, and the first `normal_` on the meta device imports torch's Python
    decompositions: about 2 s of every process's start-up.
    """
    return torch.nn.Embedding(num, dim, _weight=torch.empty(num, dim))
