"""A model's classes by name: the names it was trained with (`var.provenance["classes"]`), ImageNet's for a
1,000-class model, else the ids; and a class as a user writes it (an id, a name, `id:N`, `name:N`) to its id and
back. The command line, the web page and `samples.json` all go through these."""

from __future__ import annotations

from collections.abc import Sequence

from ..data.folders import name_files
from ..errors import NextscaleError, SettingError
from ..transformer import VAR


def model_class_names(var: VAR) -> list[str]:
    """A model's class names by id: those it was trained with (`var.provenance["classes"]`: an image folder's
    sub-folders), else ImageNet's for a 1,000-class model (torchvision's weight metadata carries them offline),
    else the ids."""
    recorded = [str(name) for name in getattr(var, "provenance", {}).get("classes") or []][: var.num_classes]
    if not recorded and var.num_classes == 1000:
        from torchvision.models import ResNet50_Weights

        recorded = list(ResNet50_Weights.IMAGENET1K_V1.meta["categories"])
    return recorded + [str(c) for c in range(len(recorded), var.num_classes)]


def class_index(value: int | str, names: Sequence[str]) -> int:
    """A class as given → its id. An int is an id; text is an id ("3") or a name (exact, else in any case), and
    `id:3` / `name:3` say which where a number is also another class's name (folders 1 … 12 sort as 1, 10, 11,
    12, 2, …). A name two classes share, a number that could be either, an unknown name and an id out of range
    are refused, as a bad value of the command line's `classes` (`--class`)."""
    text, chosen = str(value).strip(), isinstance(value, int)
    prefix, colon, rest = text.partition(":")
    if not chosen and colon and prefix in ("id", "name"):
        text, chosen, is_id = rest.strip(), True, prefix == "id"
    else:
        is_id = text.lstrip("-").isdecimal()
    # The exact name first: ImageNet's "Cardigan" (the corgi) and "cardigan" (the jacket) differ only by case.
    named = [i for i, name in enumerate(names) if name.strip() == text] or [
        i for i, name in enumerate(names) if name.strip().lower() == text.lower()
    ]
    if is_id and not chosen and named and named != [int(text)]:
        if 0 <= int(text) < len(names):
            raise SettingError(
                "classes",
                f"{text} is ambiguous: class {text} is named {names[int(text)]!r}, and class {named[0]} is named "
                f"{text!r}: write id:{text} or name:{text}",
            )
        is_id = False  # no class has that id: the name is the one reading
    if not is_id:
        if len(named) > 1:
            raise SettingError(
                "classes", f"{text!r} names {len(named)} classes ({', '.join(map(str, named))}): give the id"
            )
        if not named:
            raise SettingError(
                "classes",
                f"{text!r} is not one of this model's {len(names)} class names ({name_files(list(names))}) "
                "and not an integer class id",
            )
        return named[0]
    if not text.lstrip("-").isdecimal():
        raise SettingError("classes", f"{text!r} is not an integer class id")
    index = int(text)
    if not 0 <= index < len(names):
        raise SettingError("classes", f"{index} is out of range: this model has classes 0..{len(names) - 1}")
    return index


def class_text(index: int, names: Sequence[str]) -> str:
    """How to write class `index` so that `class_index` reads it back: the id, or `id:N` where the id is also
    another class's name."""
    try:
        return str(index) if class_index(str(index), names) == index else f"id:{index}"
    except NextscaleError:
        return f"id:{index}"
