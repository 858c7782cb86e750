"""The package's shape: each pipeline stage imports only the stages before it; the command line starts without
torch, takes its names from the registry, and documents every option."""

import ast
import re
import subprocess
import sys
from pathlib import Path

import pytest

import nextscale
from nextscale import registry
from nextscale.cli import build_parser

PACKAGE = Path(nextscale.__file__).parent
# Foundations first (any stage may import them), then the pipeline in order; a module may import its own
# stage, the foundations and earlier stages. The tools at the end use everything before them.
ORDER = [
    {"errors", "files", "seeding", "runtime", "distributed", "pretrained", "sharded", "lazy"},
    {"data"},
    {"tokenizer"},
    {"transformer"},
    {"registry"},
    {"weights"},
    {"sampling"},
    {"editing"},
    {"training"},
    {"evaluation"},
    {"scaling"},
    {"golden", "bench", "demo", "web"},  # tools
    {"cli", "__main__", "__init__"},
]


def stage_of(name: str) -> int:
    for i, names in enumerate(ORDER):
        if name in names:
            return i
    raise AssertionError(f"{name} is in no stage of the layout: add it to ORDER")


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def is_module(name: str) -> bool:
    path = PACKAGE.parent.joinpath(*name.split("."))
    return (path / "__init__.py").is_file() or path.with_suffix(".py").is_file()


def imported_modules(path: Path) -> set[str]:
    """The nextscale modules that `path` imports, anywhere in the file (in functions too). `from a import b`
    imports the module `a.b` where there is one, else a name that `a` defines: so a package's `__init__` that
    re-exports its submodules depends on them, not they on it, unless they import a name from the package."""
    name = module_name(path)
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            source = node.module or ""
            if node.level:
                base = package.split(".")[: package.count(".") + 2 - node.level]
                source = ".".join([*base, node.module] if node.module else base)
            found.update(f"{source}.{a.name}" if is_module(f"{source}.{a.name}") else source for a in node.names)
    return {m for m in found if m.split(".")[0] == "nextscale"}


def internal_imports(path: Path) -> set[str]:
    """The top-level nextscale modules that `path` imports (`__init__` for names the package itself defines)."""
    return {(m.split(".") + ["__init__"])[1] for m in imported_modules(path)}


def test_each_stage_imports_only_the_stages_before_it():
    wrong = []
    for path in sorted(PACKAGE.rglob("*.py")):
        own = path.relative_to(PACKAGE).parts[0].removesuffix(".py")
        for imported in internal_imports(path):
            if imported != own and stage_of(imported) > stage_of(own):
                wrong.append(f"{path.relative_to(PACKAGE)} imports {imported}")
    assert not wrong, wrong


def test_no_module_imports_itself_through_others():
    graph = {module_name(path): imported_modules(path) for path in PACKAGE.rglob("*.py")}

    def reachable(start: str) -> set[str]:
        seen, todo = set(), list(graph[start])
        while todo:
            name = todo.pop()
            if name not in seen:
                seen.add(name)
                todo.extend(graph.get(name, ()))
        return seen

    reach = {name: reachable(name) for name in graph}
    circles = {
        tuple(sorted(other for other in reach[name] if name in reach[other])) for name in graph if name in reach[name]
    }
    assert not circles, sorted(circles)


def test_the_command_line_starts_without_torch():
    script = "import sys, nextscale.cli; nextscale.cli.build_parser(); print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "False"
    version = subprocess.run([sys.executable, "-m", "nextscale", "--version"], capture_output=True, text=True)
    assert version.returncode == 0 and version.stdout.strip() == f"nextscale {nextscale.__version__}"


def subcommands():
    parser = build_parser()
    action = next(a for a in parser._actions if a.dest == "command")
    return action.choices


@pytest.mark.parametrize("name", list(subcommands()))
def test_every_option_has_help_and_shows_its_default(name):
    sub = subcommands()[name]
    for action in sub._actions:
        if action.dest == "help":
            continue
        assert action.help, f"nextscale {name} {action.option_strings}: no help text"
    text = sub.format_help()
    for action in sub._actions:
        if action.option_strings and action.default not in (None, False) and action.dest != "help":
            assert f"(default: {action.default})" in " ".join(text.split()), (name, action.dest)


def test_names_come_from_the_registry():
    commands = subcommands()
    for name in ("train", "train-tokenizer", "bench"):
        preset = next(a for a in commands[name]._actions if a.dest == "preset")
        assert list(preset.choices) == list(registry.ARCHITECTURES)


def test_every_released_name_has_an_architecture_and_a_recipe():
    from nextscale.training.recipes import recipe, recipe_settings

    for name in registry.RELEASED:
        vae, var = registry.architecture(name)
        assert var.patch_nums == vae.patch_nums
        assert recipe(name).architecture == name
    assert recipe_settings("var-d16")[0].lr == pytest.approx(3e-4)  # 1e-4 × 768 / 256


def test_every_imported_package_is_declared():
    import tomllib

    project = tomllib.loads((PACKAGE.parents[1] / "pyproject.toml").read_text())["project"]
    extras = project["optional-dependencies"]
    declared = project["dependencies"] + extras["web"] + extras["finetune"] + extras["plots"]  # checked where used
    declared = {re.split(r"[<>=\[ ;]", d)[0].lower().replace("-", "_") for d in declared}
    distribution = {"PIL": "pillow", "sklearn": "scikit_learn"}
    stdlib = set(sys.stdlib_module_names)
    imported = set()
    for path in PACKAGE.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                imported.update(alias.name.split(".")[0] for alias in node.names)
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                imported.add(node.module.split(".")[0])
    third_party = {distribution.get(m, m).lower() for m in imported - stdlib - {"nextscale"}}
    assert third_party <= declared, third_party - declared  # read from pyproject.toml, not from what is installed


def test_the_registry_width_rule_is_the_transformer_s():
    import inspect

    from nextscale.transformer.stack import depth_rule

    assert inspect.signature(depth_rule).parameters["width_per_depth"].default == registry.RELEASED_WIDTH_PER_DEPTH
