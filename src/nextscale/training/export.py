"""A training checkpoint → the project's safetensors format, in one process, whatever world size wrote it."""

from __future__ import annotations

import warnings
from pathlib import Path

import torch
import torch.distributed.checkpoint as dcp
from torch.distributed.checkpoint.api import CheckpointException

from ..errors import CheckpointError, NextscaleError
from ..files import first_line
from ..pretrained import config_from_dict
from ..registry import TRANSFORMER_KINDS
from ..tokenizer import VQVAE, VQVAEConfig
from ..transformer import VAR, RasterAR, RasterConfig, VARConfig
from . import checkpoint
from .trainable import apply_trainable, merge_lora

STAGES = {"tokenizer": (VQVAE, VQVAEConfig), "var": (VAR, VARConfig), "raster-ar": (RasterAR, RasterConfig)}
TRANSFORMER_STAGES = TRANSFORMER_KINDS


def find_checkpoint(path: str | Path) -> Path:
    """A checkpoint directory itself, or a run directory's newest complete checkpoint."""
    path = Path(path)
    if not path.is_dir():
        raise NextscaleError(f"{path}: not a run directory or checkpoint")
    if (path / checkpoint.TRAINER_JSON).is_file():
        return path
    ckpt = checkpoint.latest_checkpoint(path)
    if ckpt is None:
        held = checkpoint.run_contents(path)
        what = f"only {', '.join(held[:3])}" if held else "nothing of a run"
        raise NextscaleError(f"{path} holds no complete checkpoint ({what})")
    return ckpt


def export_checkpoint(path: str | Path, weights: str = "auto") -> tuple[str, torch.nn.Module, dict]:
    """(stage, model, record) from a checkpoint: `weights` "ema", "raw", or "auto" (EMA when the run kept one)."""
    ckpt = find_checkpoint(path)
    record = checkpoint.read_record(ckpt)
    stage = record.get("stage")
    if stage not in STAGES:
        raise CheckpointError(f"{ckpt / checkpoint.TRAINER_JSON} names no training stage")
    has_ema = record["settings"]["train"].get("ema", 0) > 0
    if weights not in ("auto", "ema", "raw"):
        raise NextscaleError(f"weights must be auto, ema or raw, got {weights!r}")
    if weights == "ema" and not has_ema:
        raise NextscaleError(f"{ckpt} has no EMA weights (the run kept no EMA): export the raw weights")
    use_ema = weights == "ema" or (weights == "auto" and has_ema)
    model_class, config_class = STAGES[stage]
    model = model_class(
        config_from_dict(config_class, record["settings"]["model"], model_class.legacy_config_keys), device="meta"
    )
    model.to_empty(device="cpu")
    extra = record["settings"]["train"].get("extra") or {}
    if stage in TRANSFORMER_STAGES:  # the run's frozen parameters and LoRA adapters: what its checkpoint holds
        model = apply_trainable(model, extra.get("trainable", "all"))
    elif extra.get("trainable") == "decoder":  # its EMA covers the decoder alone
        model.train_decoder_only()
    own = model.state_dict()
    tensors = {"model": own}
    if use_ema:  # the run keeps an EMA of what it trains
        tensors["ema"] = {
            n: torch.empty_like(p, dtype=torch.float32) for n, p in model.named_parameters() if p.requires_grad
        }
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # DCP's note that it reads in one process: that is the point here
        try:
            dcp.load(tensors, storage_reader=checkpoint.SafeReader(ckpt), no_dist=True)
        except CheckpointError:
            raise
        except (Exception, CheckpointException) as e:  # DCP's exception is a BaseException
            raise CheckpointError(f"{ckpt} could not be read ({first_line(e)[:300]})") from None
    model.load_state_dict(own)
    if use_ema:
        with torch.no_grad():
            for name, p in model.named_parameters():
                if name in tensors["ema"]:
                    p.copy_(tensors["ema"][name])
    model.requires_grad_(True)
    if stage in TRANSFORMER_STAGES:
        model = merge_lora(model)
    model.provenance = run_provenance(extra)
    return stage, model.eval(), record


# What a run records in its settings' `extra` of what it trained on, by content (`data.identity`, the tokenizer's
# fingerprint, the class names). Runs made before (or by a Trainer used directly) recorded none of it, and the
# command line recorded the tokenizer as the path given: what they trained on is unknown.
TRAINED_ON = ("data", "val_data", "tokenizer", "classes")


def records_what_it_trained_on(extra: dict) -> bool:
    return "data" in extra


def run_provenance(extra: dict) -> dict:
    """What a model records of the run that trained it (its `provenance`), from the run's saved `extra`: a
    transformer, the fingerprint of its tokenizer and its data's class names; a tokenizer whose decoder alone was
    trained, whose tokens it makes (`VQVAE.tokens_fingerprint`)."""
    if not records_what_it_trained_on(extra):
        return {}
    keys = ("tokenizer", "classes", "tokens_of", "token_parts")
    return {key: extra[key] for key in keys if extra.get(key) is not None}
