"""What a transformer run trains (`VAROptions.trainable`, `--trainable`): everything, named parameter groups, or
LoRA adapters (through `peft`) on the attention and feed-forward linears, with or without groups beside them.

The spec is text, so that a run records it and a resumed run compares it: `all`; groups such as `class,adaln,head`;
`lora:16` (rank 16; `lora` alone: rank 16); or both, `lora:8,class`. Frozen parameters get no gradients and no
optimizer state (the trainer optimises what requires a gradient). Reading the spec needs no torch.
"""

from __future__ import annotations

from dataclasses import dataclass

from ..errors import SettingError

# The transformer's parameters by what they do, as prefixes of their names (the reference's layout). Together they
# cover every parameter, so `all` is every group.
PARAMETER_GROUPS = {
    "class": ("class_emb.",),  # the class embedding, the null class (guidance's row) included
    "adaln": ("shared_ada_lin.", "head_nm.", ".ada_lin.", ".ada_gss"),  # every AdaLN scale, shift and gate
    "head": ("head.",),  # the logits
    "embed": ("word_embed.", "pos_start", "pos_1LC", "lvl_embed."),  # token, position and scale embeddings
    "attn": (".attn.",),  # attention: q/v biases, projections, the l2-norm temperature
    "ffn": (".ffn.",),  # the feed-forward layers
}
LORA_TARGETS = ("mat_qkv", "proj", "fc1", "fc2")  # the linears of attention and feed-forward, in every block
DEFAULT_LORA_RANK = 16


@dataclass(frozen=True)
class Trainable:
    """A parsed `--trainable`: the groups that learn in full, and the LoRA rank (0: no LoRA)."""

    groups: tuple[str, ...]
    lora_rank: int = 0

    @property
    def everything(self) -> bool:
        return self.lora_rank == 0 and set(self.groups) == set(PARAMETER_GROUPS)

    def trains(self, name: str) -> bool:
        """Whether the (un-adapted) parameter `name` learns in full."""
        return any(_in_group(name, group) for group in self.groups)


def _in_group(name: str, group: str) -> bool:
    return any(name.startswith(p) if not p.startswith(".") else p in "." + name for p in PARAMETER_GROUPS[group])


def parse_trainable(spec: str) -> Trainable:
    """`all`, comma-separated group names, `lora[:RANK]`, or LoRA with groups; anything else is refused naming the
    choices."""
    items = [item.strip() for item in str(spec).split(",") if item.strip()]
    choices = f"all, lora[:RANK], or groups of {', '.join(PARAMETER_GROUPS)} (comma-separated)"
    if not items:
        raise SettingError("trainable", f"is empty: use {choices}")
    if items == ["all"]:
        return Trainable(tuple(PARAMETER_GROUPS))
    groups, rank = [], 0
    for item in items:
        name, _, value = item.partition(":")
        if name == "lora":
            if rank:
                raise SettingError("trainable", f"names LoRA twice in {spec!r}")
            if not value:
                rank = DEFAULT_LORA_RANK
            elif value.isdecimal() and int(value) > 0:
                rank = int(value)
            else:
                raise SettingError("trainable", f"takes a positive LoRA rank (lora:16), got {item!r}")
        elif item == "all":
            raise SettingError("trainable", f"'all' stands alone, got {spec!r}")
        elif item in PARAMETER_GROUPS and not value:
            if item not in groups:
                groups.append(item)
        else:
            raise SettingError("trainable", f"has {item!r}: use {choices}")
    return Trainable(tuple(groups), rank)


def apply_trainable(var, spec: str):
    """Freezes what `spec` does not train and adds LoRA adapters (their B starts at zero: the model computes what
    it did), in place; returns `var`. LoRA needs the `peft` library (the `finetune` extra)."""
    trainable = parse_trainable(spec)
    if trainable.everything:
        return var.requires_grad_(True)
    for name, p in var.named_parameters():
        p.requires_grad_(trainable.trains(name))
    if trainable.lora_rank:
        try:
            from peft import LoraConfig, inject_adapter_in_model
        except ImportError:
            raise SettingError("trainable", "LoRA needs the peft library: pip install 'nextscale[finetune]'") from None
        config = LoraConfig(
            r=trainable.lora_rank, lora_alpha=trainable.lora_rank, lora_dropout=0.0, target_modules=list(LORA_TARGETS)
        )
        inject_adapter_in_model(config, var)  # peft freezes everything but the adapters: the groups learn again
        for name, p in var.named_parameters():
            adapter = ".lora_A." in name or ".lora_B." in name
            p.requires_grad_(adapter or trainable.trains(name.replace(".base_layer.", ".")))
    return var


def merge_lora(var):
    """Folds every LoRA adapter into the linear it adapts and puts the plain linear back, in place: the model is an
    ordinary `VAR` again (saves, loads and samples without peft). Returns `var`."""
    import torch

    adapted = [(name, module) for name, module in var.named_modules() if hasattr(module, "lora_A")]
    with torch.no_grad():
        for name, module in adapted:
            module.merge()
            parent_name, _, child = name.rpartition(".")
            setattr(var.get_submodule(parent_name) if parent_name else var, child, module.get_base_layer())
    return var


def uses_lora(spec: str) -> bool:
    return parse_trainable(spec).lora_rank > 0
