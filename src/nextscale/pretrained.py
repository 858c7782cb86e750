"""The project's own weight format: a directory with `config.json` and `model.safetensors`."""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

from .errors import CheckpointError

FORMAT_VERSION = 1
CONFIG_NAME, WEIGHTS_NAME = "config.json", "model.safetensors"


def atomic_write(path: Path, write) -> None:
    """Calls `write(tmp_path)` and moves the result into place, so a crash never leaves a half-written file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    try:
        write(tmp)
        os.chmod(tmp, 0o666 & ~_umask())  # mkstemp makes 0600 files; a result should read like any other file
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.remove(tmp)
        raise


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def atomic_write_text(path: Path, text: str) -> None:
    atomic_write(path, lambda tmp: Path(tmp).write_text(text))


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


def load_strict(model: torch.nn.Module, state_dict: dict, source: str) -> None:
    """`load_state_dict(strict=True)` with an error that names every missing, unexpected or misshapen key."""
    own = model.state_dict()
    missing = set(own) - set(state_dict)
    unexpected = set(state_dict) - set(own)
    mismatched = [
        f"{k} {tuple(state_dict[k].shape)} vs {tuple(own[k].shape)}"
        for k in set(own) & set(state_dict)
        if tuple(state_dict[k].shape) != tuple(own[k].shape) and k != "quantize.ema_vocab_hit_SV"
    ]
    if missing or unexpected or mismatched:
        raise CheckpointError(
            f"{source} does not fit {type(model).__name__}: " + describe_key_mismatch(missing, unexpected, mismatched)
        )
    model.load_state_dict(state_dict, strict=True)


class PretrainedMixin:
    """`save_pretrained(dir)` / `from_pretrained(dir)` for a module with a dataclass `config`."""

    model_type: str
    config_class: type

    def save_pretrained(self, directory: str | os.PathLike) -> Path:
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        tensors = {k: v.detach().cpu().contiguous() for k, v in self.state_dict().items()}
        atomic_write(directory / WEIGHTS_NAME, lambda tmp: save_file(tensors, tmp, metadata={"format": "pt"}))
        meta = {
            "model_type": self.model_type,
            "format_version": FORMAT_VERSION,
            "config": self.config.to_dict(),
        }
        atomic_write_text(directory / CONFIG_NAME, json.dumps(meta, indent=2) + "\n")
        return directory

    @classmethod
    def from_pretrained(cls, directory: str | os.PathLike, *, device: str | torch.device = "cpu"):
        directory = Path(directory)
        config_path, weights_path = directory / CONFIG_NAME, directory / WEIGHTS_NAME
        for p in (config_path, weights_path):
            if not p.is_file():
                raise CheckpointError(f"{p} not found: a saved model directory holds {CONFIG_NAME} and {WEIGHTS_NAME}")
        try:
            meta = json.loads(config_path.read_text())
        except (OSError, json.JSONDecodeError) as e:
            raise CheckpointError(f"{config_path} is not readable JSON: {e}") from None
        if meta.get("model_type") != cls.model_type:
            raise CheckpointError(
                f"{directory} holds a {meta.get('model_type')!r} model, not a {cls.model_type!r} model"
            )
        model = cls(cls.config_class(**meta["config"]))
        try:
            state = load_file(str(weights_path))
        except Exception as e:  # safetensors raises its own error types for corrupt files
            raise CheckpointError(f"{weights_path} is not a readable safetensors file: {e}") from None
        load_strict(model, state, str(weights_path))
        return model.to(device).eval()
