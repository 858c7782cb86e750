"""Loading weights: released reference `.pth` files, reference trainer checkpoints, the project's own
directories, and named models that resolve to a local path or the Hugging Face Hub."""

from __future__ import annotations

import os
import re
from pathlib import Path

import torch

from .errors import CheckpointError
from .pretrained import CONFIG_NAME, load_strict
from .sampling import check_compatible
from .tokenizer import PATCH_NUMS_256, PATCH_NUMS_512, VQVAE, VQVAEConfig
from .transformer import VAR, VARConfig

HUB_REPO = "FoundationVision/var"
REFERENCE_VAE_FILE = "vae_ch160v4096z32.pth"
# name → (VAR file in the Hub repo, patch numbers); every one pairs with the same released tokenizer.
RELEASED = {
    "var-d16": ("var_d16.pth", PATCH_NUMS_256),
    "var-d20": ("var_d20.pth", PATCH_NUMS_256),
    "var-d24": ("var_d24.pth", PATCH_NUMS_256),
    "var-d30": ("var_d30.pth", PATCH_NUMS_256),
    "var-d36": ("var_d36.pth", PATCH_NUMS_512),
}
BUILTIN_DIR = Path(__file__).parent / "assets"
BUILTIN = {"digits": BUILTIN_DIR / "digits"}


def model_home() -> Path:
    return Path(os.environ.get("NEXTSCALE_HOME", Path.home() / ".cache" / "nextscale"))


# ---- state dict → model ---------------------------------------------------------------------------------


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
        patch_nums = PATCH_NUMS_256 if num_scales == len(PATCH_NUMS_256) else None
        if patch_nums is None:
            raise CheckpointError(f"this tokenizer was saved with {num_scales} scales: pass its patch numbers")
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
        drop_path_rate=0.1 * depth / 24 if C == 64 * depth else 0.0,
    )


def vae_from_state_dict(
    sd: dict, config: VQVAEConfig | None = None, *, source: str = "state dict", patch_nums=None
) -> VQVAE:
    if state_dict_kind(sd) != "vqvae":
        raise CheckpointError(f"{source} does not hold a VQ-VAE tokenizer ({describe_kind(sd)})")
    model = VQVAE(config or infer_vae_config(sd, patch_nums))
    load_strict(model, sd, source)
    return model.eval()


def var_from_state_dict(sd: dict, config: VARConfig | None = None, *, source: str = "state dict") -> VAR:
    if state_dict_kind(sd) != "var":
        raise CheckpointError(f"{source} does not hold a VAR transformer ({describe_kind(sd)})")
    model = VAR(config or infer_var_config(sd))
    load_strict(model, sd, source)
    return model.eval()


def describe_kind(sd: dict) -> str:
    kind = state_dict_kind(sd)
    return {"vqvae": "it is a VQ-VAE tokenizer", "var": "it is a VAR transformer"}.get(kind, "unknown keys")


# ---- files ----------------------------------------------------------------------------------------------


def read_reference_file(path: str | os.PathLike, role: str) -> dict:
    """A released `.pth` (a bare state dict) or a reference trainer checkpoint `ar-ckpt-*.pth`.

    Only `torch.load(weights_only=True)`: nothing but tensors and plain containers is unpickled.
    """
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: no such file")
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # torch raises several types for corrupt or unsafe pickles
        raise CheckpointError(f"{path} is not a readable weights-only torch file: {str(e).splitlines()[0]}") from None
    if isinstance(obj, dict) and "trainer" in obj and isinstance(obj["trainer"], dict):
        inner = {"var": "var_wo_ddp", "vqvae": "vae_local"}[role]
        if inner not in obj["trainer"]:
            raise CheckpointError(f"{path} is a trainer checkpoint without '{inner}'")
        obj = obj["trainer"][inner]
    if not isinstance(obj, dict) or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise CheckpointError(f"{path} does not hold a state dict of tensors")
    return obj


def load_vae(source: str | os.PathLike, *, device="cpu", patch_nums=None) -> VQVAE:
    """A tokenizer from a saved directory or a reference `.pth` file."""
    path = Path(source)
    if path.is_dir():
        return VQVAE.from_pretrained(path, device=device)
    return vae_from_state_dict(read_reference_file(path, "vqvae"), source=str(path), patch_nums=patch_nums).to(device)


def load_var(source: str | os.PathLike, *, device="cpu") -> VAR:
    """A transformer from a saved directory or a reference `.pth` file."""
    path = Path(source)
    if path.is_dir():
        return VAR.from_pretrained(path, device=device)
    return var_from_state_dict(read_reference_file(path, "var"), source=str(path)).to(device)


def load_pair(vae_source, var_source, *, device="cpu") -> tuple[VQVAE, VAR]:
    var = load_var(var_source, device=device)
    vae = load_vae(vae_source, device=device, patch_nums=var.config.patch_nums)
    check_compatible(var, vae)
    return vae, var


def save_model(vae: VQVAE, var: VAR, directory: str | os.PathLike) -> Path:
    """A model directory: `vae/` and `var/`, each in the project's format."""
    directory = Path(directory)
    vae.save_pretrained(directory / "vae")
    var.save_pretrained(directory / "var")
    return directory


def load_model(name_or_dir: str | os.PathLike, *, device="cpu") -> tuple[VQVAE, VAR]:
    """A (tokenizer, transformer) pair by name (`digits`, `var-d16`, …) or from a directory with `vae/` and `var/`."""
    name = str(name_or_dir)
    if name in BUILTIN:
        return load_pair(BUILTIN[name] / "vae", BUILTIN[name] / "var", device=device)
    path = Path(name)
    if path.is_dir():
        if (path / "vae" / CONFIG_NAME).is_file() and (path / "var" / CONFIG_NAME).is_file():
            return load_pair(path / "vae", path / "var", device=device)
        raise CheckpointError(f"{path} is not a model directory: it needs vae/ and var/ sub-directories")
    if name in RELEASED:
        var_file, _ = RELEASED[name]
        return load_pair(fetch_released(REFERENCE_VAE_FILE), fetch_released(var_file), device=device)
    known = ", ".join([*BUILTIN, *RELEASED])
    raise CheckpointError(f"unknown model {name!r}: use a directory with vae/ and var/, or one of {known}")


def fetch_released(filename: str) -> Path:
    """A released file from $NEXTSCALE_HOME, else from the Hub (cached by huggingface_hub)."""
    local = model_home() / filename
    if local.is_file():
        return local
    try:
        from huggingface_hub import hf_hub_download

        return Path(hf_hub_download(HUB_REPO, filename))
    except Exception as e:
        raise CheckpointError(
            f"cannot get {filename} ({type(e).__name__}); offline, download it from "
            f"https://huggingface.co/{HUB_REPO} and put it at {local}"
        ) from None
