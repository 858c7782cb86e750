"""Starting a run from trained weights (`train --init`, `train-tokenizer --init`): where the weights come from,
which tokenizer goes with them, and how a transformer takes on the classes of new data.

The class rules: a class of the new data that the initial model also has (the same name, or mapped with
`--class-map OLD=NEW`) keeps its embedding row; a new class starts from the mean of the old classes' rows; the
null class (guidance's row) is kept and stays last.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, fields, replace
from pathlib import Path

import torch

from ..errors import NextscaleError, SettingError
from ..pretrained import CONFIG_NAME
from ..registry import BUILTIN, RELEASED, architecture
from ..tokenizer import VQVAE
from ..transformer import VAR
from ..weights import load_vae, load_var
from ..weights.classes import class_index, model_class_names
from ..weights.load import recorded_source


def _run_or_checkpoint(path: Path) -> bool:
    from .checkpoint import TRAINER_JSON, latest_checkpoint

    return path.is_dir() and ((path / TRAINER_JSON).is_file() or latest_checkpoint(path) is not None)


def _from_run(path: Path, stage: str):
    """A run's (or one checkpoint's) trained model, exported as `export` would, and the run's record."""
    from .export import export_checkpoint

    found, model, record = export_checkpoint(path)
    if found != stage:
        wanted = {"var": "a transformer", "tokenizer": "a tokenizer"}[stage]
        raise NextscaleError(f"--init {path} is a {found} run, not {wanted}'s")
    return model, record


def load_init_var(source: str | os.PathLike) -> tuple[VAR, str | None]:
    """The transformer a run starts from, on the CPU, and where the tokenizer it was trained with is (a model name
    or a path; None when the source does not say). `source`: a model name, a model or `var/` directory, a reference
    `.pth` (a trainer checkpoint's `trainer.var_wo_ddp` too), or a run directory or one of its checkpoints."""
    name = str(source)
    if name in BUILTIN or name in RELEASED:
        return load_var(name), name
    path = Path(source)
    if path.is_dir() and not (path / CONFIG_NAME).is_file() and not (path / "var" / CONFIG_NAME).is_file():
        if _run_or_checkpoint(path):
            var, record = _from_run(path, "var")
            return var, (record["settings"]["train"].get("extra") or {}).get("tokenizer_path")
    var = load_var(source)
    if path.is_dir():
        model_dir = path if (path / "var" / CONFIG_NAME).is_file() else path.parent
        return var, str(model_dir / "vae") if (model_dir / "vae" / CONFIG_NAME).is_file() else None
    if path.is_file():  # a trainer checkpoint holds its tokenizer; a bare released file pairs with the released one
        from ..weights.reference import read_reference_file, state_dict_kind

        if state_dict_kind(read_reference_file(path, "vqvae")) == "vqvae":
            return var, str(path)
        return var, next((n for n in RELEASED if architecture(n)[1] == var.config), None)
    return var, None


def load_init_vae(source: str | os.PathLike, patch_nums=None) -> VQVAE:
    """The tokenizer a run starts from: anything `load_vae` takes, or a tokenizer's run directory or checkpoint."""
    path = Path(source)
    if str(source) not in BUILTIN and str(source) not in RELEASED and _run_or_checkpoint(path):
        return _from_run(path, "tokenizer")[0]
    return load_vae(source, patch_nums=patch_nums)


def init_tokenizer(var_source: str, tokenizer_source: str | None, given: str | None) -> str:
    """The tokenizer of a run started from `var_source`: the one given, else the one it was trained with."""
    if given is not None:
        return given
    if tokenizer_source is None:
        raise NextscaleError(f"--init {var_source} does not say which tokenizer it was trained with: give --tokenizer")
    return (
        tokenizer_source
        if tokenizer_source in BUILTIN or tokenizer_source in RELEASED
        else recorded_source(tokenizer_source)
    )


def check_same_architecture(init, wanted, source: str, ignore: tuple[str, ...] = ()) -> None:
    """The flags given must describe the initial model's architecture: each difference is named, in one line."""
    differ = [
        f"{f.name} {getattr(init, f.name)} (flags: {getattr(wanted, f.name)})"
        for f in fields(init)
        if f.name not in ignore and getattr(init, f.name) != getattr(wanted, f.name)
    ]
    if differ:
        raise NextscaleError(
            f"--init {source} has another architecture than the flags ask for: {'; '.join(differ)}; leave out the "
            "architecture flags to take the initial model's"
        )


# ---- classes -------------------------------------------------------------------------------------------------


def parse_class_map(text: str | None) -> dict[str, str]:
    """`--class-map OLD=NEW,…` → {NEW: OLD}: the initial model's class OLD (a name or an id) gives its row to the
    data's class NEW."""
    if not text:
        return {}
    pairs = {}
    for item in text.split(","):
        old, eq, new = (part.strip() for part in item.partition("="))
        if not eq or not old or not new:
            raise SettingError("class_map", f"takes OLD=NEW pairs separated by commas, got {item.strip()!r}")
        if new in pairs:
            raise SettingError("class_map", f"maps {new!r} twice")
        pairs[new] = old
    return pairs


@dataclass(frozen=True)
class ClassPlan:
    """Where each of the new classes' embedding rows comes from: a row of the initial model, or None (the mean of
    its class rows)."""

    old_names: tuple[str, ...]
    new_names: tuple[str, ...]
    rows: tuple[int | None, ...]

    @property
    def unchanged(self) -> bool:
        return self.rows == tuple(range(len(self.old_names))) and len(self.old_names) == len(self.new_names)

    def describe(self) -> str:
        kept = [f"{new}←{self.old_names[row]}" if new != self.old_names[row] else new for new, row in self._kept()]
        new = [name for name, row in zip(self.new_names, self.rows) if row is None]
        parts = [f"{len(kept)} kept ({_few(kept)})"] if kept else []
        parts += [f"{len(new)} new, from the mean of the old rows ({_few(new)})"] if new else []
        return f"classes: {', '.join(parts)}"

    def _kept(self):
        return [(name, row) for name, row in zip(self.new_names, self.rows) if row is not None]


def _few(names: list[str], shown: int = 6) -> str:
    return ", ".join(names[:shown]) + (f", … {len(names) - shown} more" if len(names) > shown else "")


def class_plan(old_names, new_names, class_map: dict[str, str] | None = None) -> ClassPlan:
    """The rows the new classes take (`parse_class_map`'s {NEW: OLD} first, then the same name)."""
    old_names, new_names, class_map = tuple(old_names), tuple(new_names), class_map or {}
    unknown = [new for new in class_map if new not in new_names]
    if unknown:
        raise SettingError(
            "class_map", f"names {unknown[0]!r}, which is not a class of the data ({_few(list(new_names))})"
        )
    rows = []
    for name in new_names:
        if name in class_map:
            try:
                rows.append(class_index(class_map[name], old_names))
            except SettingError as e:  # a class of the initial model: named as --class-map's
                raise SettingError("class_map", f"names {class_map[name]!r}: {e.problem}") from None
        else:
            rows.append(old_names.index(name) if name in old_names else None)
    return ClassPlan(old_names, new_names, tuple(rows))


@torch.no_grad()
def adapt_classes(var: VAR, new_names, class_map: dict[str, str] | None = None) -> tuple[VAR, ClassPlan]:
    """`var` with the classes `new_names` (the data's), by `class_plan`: every other weight is kept as it is."""
    plan = class_plan(model_class_names(var), new_names, class_map)
    if plan.unchanged:
        return var, plan
    old = var.class_emb.weight
    adapted = VAR(replace(var.config, num_classes=len(plan.new_names)), device="meta")
    adapted.to_empty(device=old.device)
    state = {k: v for k, v in var.state_dict().items() if not k.startswith("class_emb.")}
    class_mean = old[: var.num_classes].mean(0)
    rows = [old[row] if row is not None else class_mean for row in plan.rows] + [old[var.num_classes]]
    state["class_emb.weight"] = torch.stack(rows)
    adapted.load_state_dict(state)
    adapted.provenance = dict(var.provenance, classes=list(plan.new_names))
    return adapted.eval(), plan


def refuse_other_tokenizer_shape(vae: VQVAE, var: VAR, source: str) -> None:
    """A tokenizer other than the initial model's must give it tokens of the same shape."""
    differ = [
        f"{what} {mine} (--init {source}: {theirs})"
        for what, mine, theirs in (
            ("scales", tuple(vae.config.patch_nums), tuple(var.config.patch_nums)),
            ("codebook size", vae.config.vocab_size, var.config.vocab_size),
            ("latent channels", vae.config.z_channels, var.config.latent_channels),
        )
        if mine != theirs
    ]
    if differ:
        raise NextscaleError(f"the tokenizer does not fit --init's transformer: {'; '.join(differ)}")
