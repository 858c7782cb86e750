"""Weights in: built-in and released models by name, the reference's `.pth` files, the project's directories."""

from .load import (
    check_compatible,
    check_pair,
    fetch_released,
    load_model,
    load_pair,
    load_vae,
    load_var,
    model_home,
    save_model,
)
from .reference import infer_vae_config, infer_var_config, read_reference_file, vae_from_state_dict, var_from_state_dict

__all__ = [
    "check_compatible",
    "check_pair",
    "fetch_released",
    "infer_vae_config",
    "infer_var_config",
    "load_model",
    "load_pair",
    "load_vae",
    "load_var",
    "model_home",
    "read_reference_file",
    "save_model",
    "vae_from_state_dict",
    "var_from_state_dict",
]
