"""The reference's released files: bare state dicts (`vae_*.pth`, `var_d*.pth`) and trainer checkpoints
(`ar-ckpt-*.pth`), read with `torch.load(weights_only=True)` only; the architecture is read off the tensors."""

from __future__ import annotations

import os
import re
from pathlib import Path

import torch

from ..errors import CheckpointError
from ..files import read_torch_weights
from ..pretrained import load_strict
from ..tokenizer import PATCH_NUMS_256, VQVAE, VQVAEConfig
from ..transformer import VAR, VARConfig

ROLES = {"vqvae": "a VQ-VAE tokenizer", "var": "a VAR transformer"}
TRAINER_KEYS = {"var": "var_wo_ddp", "vqvae": "vae_local"}  # where a reference trainer checkpoint keeps each


def state_dict_kind(sd: dict) -> str | None:
    if "quantize.embedding.weight" in sd and "encoder.conv_in.weight" in sd:
        return "vqvae"
    if "class_emb.weight" in sd and "head.weight" in sd:
        return "var"
    return None


def infer_vae_config(sd: dict, patch_nums=None) -> VQVAEConfig:
    """Reads the tokenizer's architecture off its tensor shapes."""
    vocab, z = sd["quantize.embedding.weight"].shape
    ch = sd["encoder.conv_in.weight"].shape[0]
    levels = sorted({int(m.group(1)) for k in sd if (m := re.match(r"encoder\.down\.(\d+)\.", k))})
    ch_mult = tuple(sd[f"encoder.down.{i}.block.0.conv1.weight"].shape[0] // ch for i in levels)
    blocks = {int(m.group(1)) for k in sd if (m := re.match(r"encoder\.down\.0\.block\.(\d+)\.", k))}
    phis = [k for k in sd if k.startswith("quantize.quant_resi.") and k.endswith(".weight")]
    if any(".qresi_ls." in k for k in phis):
        share, counts = len(phis), 0
    elif any(".qresi." in k for k in phis):
        share, counts = 1, 0
    else:
        share, counts = 0, len(phis)
    num_scales = sd["quantize.ema_vocab_hit_SV"].shape[0]
    if patch_nums is None:
        if num_scales != len(PATCH_NUMS_256):
            raise CheckpointError(f"this tokenizer was saved with {num_scales} scales: pass its patch numbers")
        patch_nums = PATCH_NUMS_256
    return VQVAEConfig(
        vocab_size=vocab,
        z_channels=z,
        ch=ch,
        ch_mult=ch_mult,
        num_res_blocks=len(blocks),
        using_sa=f"encoder.down.{levels[-1]}.attn.0.qkv.weight" in sd,
        using_mid_sa="encoder.mid.attn_1.qkv.weight" in sd,
        quant_conv_ks=sd["quant_conv.weight"].shape[-1],
        share_quant_resi=share,
        default_qresi_counts=counts,
        patch_nums=tuple(patch_nums),
    )


def infer_var_config(sd: dict) -> VARConfig:
    """Reads the transformer's architecture off its tensor shapes; the token-level buffer gives the schedule."""
    num_classes_plus_null, C = sd["class_emb.weight"].shape
    depth = len({int(m.group(1)) for k in sd if (m := re.match(r"blocks\.(\d+)\.", k))})
    levels = sd["lvl_1L"].flatten().tolist()
    patch_nums = tuple(round(levels.count(si) ** 0.5) for si in range(max(levels) + 1))
    scale_muls = [v for k, v in sd.items() if k.endswith("attn.scale_mul_1H11")]
    l2 = bool(scale_muls)
    heads = scale_muls[0].shape[1] if l2 else max(1, C // 64)
    return VARConfig(
        depth=depth,
        embed_dim=C,
        num_heads=heads,
        mlp_ratio=sd["blocks.0.ffn.fc1.weight"].shape[0] / C,
        num_classes=num_classes_plus_null - 1,
        vocab_size=sd["head.weight"].shape[0],
        latent_channels=sd["word_embed.weight"].shape[1],
        patch_nums=patch_nums,
        shared_aln="shared_ada_lin.1.weight" in sd,
        attn_l2_norm=l2,
    )


def describe_kind(sd: dict) -> str:
    kind = state_dict_kind(sd)
    return f"it is {ROLES[kind]}" if kind else "unknown keys"


def _check_kind(sd: dict, role: str, source: str) -> None:
    if state_dict_kind(sd) != role:
        raise CheckpointError(f"{source} does not hold {ROLES[role]} ({describe_kind(sd)})")


def vae_from_state_dict(sd: dict, config: VQVAEConfig | None = None, *, source="state dict", patch_nums=None):
    """A tokenizer that takes the given tensors as its own (built on the meta device: nothing is copied)."""
    _check_kind(sd, "vqvae", source)
    model = VQVAE(config or _inferred(infer_vae_config, sd, source, patch_nums), device="meta")
    load_strict(model, sd, source, assign=True)
    return model.eval()


def var_from_state_dict(sd: dict, config: VARConfig | None = None, *, source="state dict") -> VAR:
    """A transformer that takes the given tensors as its own (built on the meta device: nothing is copied)."""
    _check_kind(sd, "var", source)
    model = VAR(config or _inferred(infer_var_config, sd, source), device="meta")
    load_strict(model, sd, source, assign=True)
    return model.eval()


def _inferred(infer, sd: dict, source: str, *args):
    try:
        return infer(sd, *args)
    except (KeyError, IndexError, ValueError, ZeroDivisionError) as e:
        if isinstance(e, CheckpointError):
            raise
        raise CheckpointError(f"{source}: cannot read the architecture off its tensors: {e}") from None


def read_reference_file(path: str | os.PathLike, role: str) -> dict:
    """A released `.pth` (a bare state dict) or a reference trainer checkpoint `ar-ckpt-*.pth`, memory-mapped."""
    path = Path(path)
    obj = read_torch_weights(path)
    if isinstance(obj, dict) and isinstance(obj.get("trainer"), dict):
        inner = TRAINER_KEYS[role]
        if inner not in obj["trainer"]:
            raise CheckpointError(f"{path} is a trainer checkpoint without '{inner}'")
        obj = obj["trainer"][inner]
    if not isinstance(obj, dict) or not obj or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise CheckpointError(f"{path} does not hold a state dict of tensors")
    return obj
