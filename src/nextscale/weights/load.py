"""Loading models by name or path: built-in models, the reference's released files (from $NEXTSCALE_HOME or the
Hugging Face Hub), the project's own directories and single reference `.pth` files."""

from __future__ import annotations

import json
import os
from pathlib import Path

from ..errors import CheckpointError, NextscaleError
from ..pretrained import CONFIG_NAME, short_fingerprint
from ..registry import (
    BUILTIN,
    BUILTIN_TOKENIZER,
    HUB_REPO,
    MODEL_NAMES,
    RELEASED,
    RELEASED_TOKENIZER_FILE,
    architecture,
)
from ..tokenizer import VQVAE
from ..transformer import VAR, RasterAR
from .reference import read_reference_file, vae_from_state_dict, var_from_state_dict


def model_home() -> Path:
    return Path(os.environ.get("NEXTSCALE_HOME", Path.home() / ".cache" / "nextscale"))


def check_pair(vae, var, what: str = "the model pair") -> None:
    """`(vae, var)`, the order every public function takes them in: a swapped or wrong pair is named in one line
    instead of failing inside torch."""
    if isinstance(vae, VAR) and isinstance(var, VQVAE):
        raise NextscaleError(f"{what} is swapped: pass (vae, var), the tokenizer first, then the transformer")
    if not isinstance(vae, VQVAE):
        raise NextscaleError(f"{what}: the first model must be the tokenizer (a VQVAE), got {type(vae).__name__}")
    if not isinstance(var, VAR):
        raise NextscaleError(f"{what}: the second model must be the transformer (a VAR), got {type(var).__name__}")


def check_compatible(vae: VQVAE, var: VAR) -> None:
    """Raises naming every way the tokenizer and transformer disagree (or that the pair is swapped)."""
    if isinstance(var, RasterAR) and isinstance(vae, VQVAE):
        return check_raster_tokenizer(vae, var)
    check_pair(vae, var)
    problems = []
    if var.config.vocab_size != vae.config.vocab_size:
        problems.append(f"codebook size: VAR {var.config.vocab_size}, VAE {vae.config.vocab_size}")
    if var.config.latent_channels != vae.config.z_channels:
        problems.append(f"latent channels: VAR {var.config.latent_channels}, VAE {vae.config.z_channels}")
    if var.config.patch_nums != vae.config.patch_nums:
        problems.append(f"patch numbers: VAR {var.config.patch_nums}, VAE {vae.config.patch_nums}")
    if problems:
        raise NextscaleError("the VAR and VAE do not fit together: " + "; ".join(problems))


def check_raster_tokenizer(vae: VQVAE, model: RasterAR) -> None:
    """The tokenizer that decodes a raster model's tokens: one scale, the model's grid, its codebook."""
    cfg, grid = vae.config, model.config.grid
    if tuple(cfg.patch_nums) != (grid,) or cfg.vocab_size != model.config.vocab_size:
        raise NextscaleError(
            f"a raster-order model of a {grid}×{grid} map of {model.config.vocab_size} codes needs a single-scale "
            f"tokenizer of that map and codebook (patch_nums ({grid},)); this one has scales "
            f"{','.join(map(str, cfg.patch_nums))} and {cfg.vocab_size} codes"
        )


def check_trained_with(vae: VQVAE, var: VAR, vae_name, var_name) -> None:
    """A transformer that records the tokenizer it was trained with (`provenance["tokenizer"]`) is paired with that
    tokenizer only, by content: another of the same shape gives it tokens it never learned. One that records
    none (released files, older saves) has nothing to check."""
    recorded = var.provenance.get("tokenizer")
    if recorded is None or recorded == vae.tokens_fingerprint():
        return
    raise NextscaleError(
        f"{var_name} was trained with tokenizer {short_fingerprint(recorded)} and {vae_name} is another "
        f"({short_fingerprint(vae.tokens_fingerprint())}): give the tokenizer it was trained with, or pair them anyway "
        "(--any-tokenizer; check_tokenizer=False)"
    )


def fetch_released(*filenames: str) -> list[Path]:
    """Released files from $NEXTSCALE_HOME, else from the Hub (cached by huggingface_hub). Offline, the error
    names every file that is missing and where to put it."""
    paths, missing = [], []
    for filename in filenames:
        local = model_home() / filename
        if local.is_file():
            paths.append(local)
            continue
        try:
            from huggingface_hub import hf_hub_download

            paths.append(Path(hf_hub_download(HUB_REPO, filename)))
        except Exception as e:  # offline, no such file, no access: the user needs the same advice
            missing.append((filename, type(e).__name__))
    if missing:
        names = ", ".join(f"{name} ({why})" for name, why in missing)
        raise CheckpointError(
            f"cannot get {names}; offline, download from https://huggingface.co/{HUB_REPO} "
            f"and put them in {model_home()}"
        )
    return paths


def _part_dir(path: Path, part: str) -> Path | None:
    """`path` itself when it is a saved `part` directory, `path/part` when it is a model directory."""
    if (path / CONFIG_NAME).is_file():
        return path
    if (path / part / CONFIG_NAME).is_file():
        return path / part
    return None


def load_vae(source: str | os.PathLike, *, device="cpu", patch_nums=None) -> VQVAE:
    """A tokenizer: a model name (`digits`, `var-d16` …: that model's tokenizer), a saved directory (or a model
    directory with `vae/`), or a reference `.pth` file."""
    name = str(source)
    if name in BUILTIN:
        return VQVAE.from_pretrained(BUILTIN[BUILTIN_TOKENIZER[name]] / "vae", device=device)
    if name in RELEASED:
        (path,) = fetch_released(RELEASED_TOKENIZER_FILE)
        return load_vae(path, device=device, patch_nums=patch_nums or architecture(name)[0].patch_nums)
    path = Path(source)
    if path.is_dir():
        found = _part_dir(path, "vae")
        if found is None:
            raise CheckpointError(f"{path} is not a saved tokenizer: it holds no {CONFIG_NAME} (nor vae/{CONFIG_NAME})")
        return VQVAE.from_pretrained(found, device=device)
    _refuse_unknown_name(path, "tokenizer")
    return vae_from_state_dict(read_reference_file(path, "vqvae"), source=str(path), patch_nums=patch_nums).to(device)


def load_var(source: str | os.PathLike, *, device="cpu") -> VAR:
    """A transformer: a model name, a saved directory (or a model directory with `var/`), or a reference `.pth`
    (or `ar-ckpt-*.pth`) file."""
    name = str(source)
    if name in BUILTIN:
        return VAR.from_pretrained(BUILTIN[name] / "var", device=device)
    if name in RELEASED:
        (path,) = fetch_released(RELEASED[name])
        return load_var(path, device=device)
    path = Path(source)
    if path.is_dir():
        found = _part_dir(path, "var")
        if found is None:
            raise CheckpointError(
                f"{path} is not a saved transformer: it holds no {CONFIG_NAME} (nor var/{CONFIG_NAME})"
            )
        return transformer_class(found).from_pretrained(found, device=device)
    _refuse_unknown_name(path, "transformer")
    return var_from_state_dict(read_reference_file(path, "var"), source=str(path)).to(device)


def transformer_class(directory: Path) -> type[VAR] | type[RasterAR]:
    """The kind of transformer a saved directory holds, by its config's `model_type` (VAR when unreadable: loading
    then names the problem)."""
    try:
        kind = json.loads((directory / CONFIG_NAME).read_text()).get("model_type")
    except (OSError, ValueError, AttributeError):
        return VAR
    return RasterAR if kind == RasterAR.model_type else VAR


def recorded_source(source: str | os.PathLike) -> str:
    """A model source as a record keeps it for later commands: a model name as it is, a path made absolute (a
    later command may run in another directory)."""
    name = str(source)
    return name if name in MODEL_NAMES else str(Path(name).resolve())


def _refuse_unknown_name(path: Path, what: str) -> None:
    if not path.exists() and not path.suffix and os.sep not in str(path):
        raise CheckpointError(
            f"unknown {what} {str(path)!r}: give a file, a directory, or one of {', '.join(MODEL_NAMES)}"
        )


def load_pair(vae_source, var_source, *, device="cpu", check_tokenizer: bool = True) -> tuple[VQVAE, VAR]:
    """A tokenizer and a transformer that fit together; `check_tokenizer=False` pairs a transformer with a tokenizer
    other than the one it records it was trained with."""
    var = load_var(var_source, device=device)
    vae = load_vae(vae_source, device=device, patch_nums=var.patch_nums)
    check_compatible(vae, var)
    if check_tokenizer:
        check_trained_with(vae, var, vae_source, var_source)
    return vae, var


def save_model(vae: VQVAE, var: VAR | RasterAR, directory: str | os.PathLike) -> Path:
    """A model directory: `vae/` and `var/` (the transformer, of either kind), each in the project's format."""
    if isinstance(var, RasterAR):
        check_raster_tokenizer(vae, var)
    else:
        check_pair(vae, var)
    directory = Path(directory)
    vae.save_pretrained(directory / "vae")
    var.save_pretrained(directory / "var")
    return directory


def load_model(name_or_dir: str | os.PathLike, *, device="cpu", check_tokenizer: bool = True) -> tuple[VQVAE, VAR]:
    """A (tokenizer, transformer) pair by name (`digits`, `var-d16` …; names come first, as everywhere) or from a
    directory with `vae/` and `var/` (`check_tokenizer` as for `load_pair`)."""
    name = str(name_or_dir)
    if name in BUILTIN:
        return load_pair(name, name, device=device, check_tokenizer=check_tokenizer)
    if name in RELEASED:
        vae_path, var_path = fetch_released(RELEASED_TOKENIZER_FILE, RELEASED[name])  # both named if missing
        return load_pair(vae_path, var_path, device=device, check_tokenizer=check_tokenizer)
    path = Path(name)
    if path.is_dir():
        if (path / "vae" / CONFIG_NAME).is_file() and (path / "var" / CONFIG_NAME).is_file():
            return load_pair(path / "vae", path / "var", device=device, check_tokenizer=check_tokenizer)
        raise CheckpointError(f"{path} is not a model directory: it needs vae/ and var/ sub-directories")
    raise CheckpointError(
        f"unknown model {name!r}: use a directory with vae/ and var/, or one of {', '.join(MODEL_NAMES)}"
    )
