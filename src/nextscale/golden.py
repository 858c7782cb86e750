"""Conformance check against reference tensors: `python -m nextscale.golden FILE [FILE ...]`.

Builds both models from the file's config with the public API, loads its `ckpt.*` weights through the same
loader users use, reruns every operation and compares every `out.*` tensor (tolerances in the shared README).
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from dataclasses import dataclass

import torch
from safetensors import safe_open

from .editing import edit, scale_keep_masks
from .errors import NextscaleError
from .files import first_line
from .sampling import sample
from .tokenizer import VQVAEConfig
from .transformer import VARConfig
from .weights import vae_from_state_dict, var_from_state_dict

FLOAT_TOL, IMAGE_TOL = 1e-5, 1e-4


@dataclass
class Result:
    name: str
    error: float  # relative L2 error for floats; number of differing entries for integers
    passed: bool
    note: str = ""


def relative_error(out: torch.Tensor, ref: torch.Tensor) -> float:
    out, ref = out.double().reshape(ref.shape), ref.double()
    return ((out - ref).norm() / ref.norm().clamp_min(1e-30)).item()


def read_reference(path: str) -> tuple[dict, dict[str, torch.Tensor]]:
    """A reference-tensor file's config and tensors; a file that is none names itself."""
    try:
        with safe_open(path, "pt") as fh:
            meta = json.loads((fh.metadata() or {})["config"])
            return meta, {k: fh.get_tensor(k) for k in fh.keys()}
    except KeyError:
        raise NextscaleError(f"{path} has no 'config' metadata: not a reference-tensor file") from None
    except Exception as e:  # safetensors and json raise their own types for other files
        raise NextscaleError(f"{path} is not a reference-tensor file: {first_line(e)}") from None


TRAINING_KWARGS = ("cond_drop_rate",)  # the reference's constructor mixes these into the architecture


def build_models(meta: dict, tensors: dict[str, torch.Tensor]):
    vae_kwargs = dict(meta["vae_kwargs"])
    vae_kwargs["patch_nums"] = vae_kwargs.pop("v_patch_nums")
    vae_kwargs.pop("beta", None)  # a loss weight, not architecture: compute_outputs passes it to the forwards
    vae_config = VQVAEConfig(**vae_kwargs)
    var_kwargs = {k: v for k, v in meta["var_kwargs"].items() if k not in TRAINING_KWARGS}
    var_config = VARConfig(vocab_size=vae_config.vocab_size, latent_channels=vae_config.z_channels, **var_kwargs)
    vae = vae_from_state_dict(
        {k[len("ckpt.vae.") :]: v for k, v in tensors.items() if k.startswith("ckpt.vae.")},
        vae_config,
        source="ckpt.vae.*",
    )
    var = var_from_state_dict(
        {k[len("ckpt.var.") :]: v for k, v in tensors.items() if k.startswith("ckpt.var.")},
        var_config,
        source="ckpt.var.*",
    )
    return vae, var


def compute_outputs(meta: dict, tensors: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Everything the reference computed, recomputed with nextscale, keyed like the file's `out.*`."""
    vae, var = build_models(meta, tensors)
    img, labels = tensors["in.img"], tensors["in.labels"]
    out: dict[str, torch.Tensor] = {}
    with torch.no_grad():
        out["out.vae.f"] = vae.encode(img)
        idx = vae.img_to_idx(img)
        out.update({f"out.vae.idx.{k}": t for k, t in enumerate(idx)})
        out.update({f"out.vae.fhat.{k}": t for k, t in enumerate(vae.img_to_fhats(img))})
        out["out.vae.recon"] = vae.reconstruct(img)
        out["out.vae.idx_to_img"] = vae.idx_to_img(idx)
        out["out.var.logits"] = var(labels, tensors["in.x_BLCv_wo_first_l"])
    out["in.x_BLCv_wo_first_l"] = vae.idx_to_var_input(idx)  # checked too: it is the reference's output
    beta = meta["vae_kwargs"].get("beta", 0.25)
    vae.quantize.train()
    q = vae.quantize(out["out.vae.f"], beta)
    out["out.vae.train_fhat"], out["out.vae.train_vq_loss"] = q.f_hat.detach(), q.vq_loss.detach()
    train_forward = vae(img, beta)
    out["out.vae.forward_rec"] = train_forward.reconstruction.detach()
    out["out.vae.forward_vq_loss"] = train_forward.vq_loss.detach()
    vae.eval()
    for run, s in meta["sampling"].items():
        settings = dict(
            generator=torch.Generator().manual_seed(s["g_seed"]),
            cfg=s["cfg"],
            top_k=s["top_k"],
            top_p=s["top_p"],
            more_smooth=s["more_smooth"],
        )
        if "keep_mask" in s:
            keep = scale_keep_masks(tensors[s["keep_mask"]], var.patch_nums)
            result = edit(vae, var, mask=keep, input_tokens=idx, labels=labels, **settings)
        else:
            result = sample(vae, var, labels, **settings)
        out[f"out.sample.{run}.img"] = result.images
        out.update({f"out.sample.{run}.idx.{k}": t for k, t in enumerate(result.tokens)})
    return out


def check_file(path: str) -> list[Result]:
    meta, tensors = read_reference(path)
    computed = compute_outputs(meta, tensors)
    results = []
    for name in sorted(k for k in tensors if k.startswith("out.")):
        if name not in computed:
            results.append(Result(name, float("nan"), False, "unknown output key"))
            continue
        got, ref = computed[name], tensors[name]
        if not ref.is_floating_point():
            wrong = int((got.reshape(ref.shape) != ref).sum()) if got.numel() == ref.numel() else ref.numel()
            results.append(Result(name, wrong, wrong == 0))
        else:
            tol = IMAGE_TOL if re.fullmatch(r"out\.sample\..*\.img", name) else FLOAT_TOL
            err = relative_error(got, ref)
            results.append(Result(name, err, err <= tol))
    ref_input = tensors["in.x_BLCv_wo_first_l"]
    err = relative_error(computed["in.x_BLCv_wo_first_l"], ref_input)
    results.append(Result("in.x_BLCv_wo_first_l (idx_to_var_input)", err, err <= FLOAT_TOL))
    missing = [k for k in computed if k.startswith("out.") and k not in tensors]
    results.extend(Result(k, float("nan"), False, "computed but absent from the file") for k in missing)
    return results


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m nextscale.golden", description=__doc__.splitlines()[0])
    parser.add_argument("files", nargs="+")
    args = parser.parse_args(argv)
    failed = 0
    for path in args.files:
        try:
            results = check_file(path)
        except (OSError, KeyError, ValueError) as e:  # NextscaleError included: a file that is not one
            print(f"python -m nextscale.golden: error: {path}: {first_line(e)}", file=sys.stderr)
            return 2
        for r in results:
            err = f"{r.error:.3e}" if isinstance(r.error, float) else f"{r.error} differ"
            print(f"{'pass' if r.passed else 'FAIL'}  {r.name:<40} {err} {r.note}".rstrip())
        bad = sum(not r.passed for r in results)
        print(f"{path}: {len(results) - bad} passed, {bad} failed")
        failed += bad > 0
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
