"""Imports point one way: cli → workflows → features → toolkit → distro/engine → kmmapi → kernel
→ base.

A package may import its own modules and any package in a lower layer; never
a higher layer, and never a sibling in its own layer (features stay apart, so
each can be read and tested alone). The rule is read from the code's own
import statements, including imports inside functions.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2] / "dtk"

# Low to high. Every top-level module and package of dtk must be placed.
LAYERS: tuple[tuple[str, ...], ...] = (
    ("__init__", "errors", "run", "paths", "lock", "progress", "files", "digest", "rootfs",
     "rootwrite", "scripts", "k8snames", "textfit"),
    ("kernel",),
    # KMM's Module API, read and resolved as the cluster does (pure): what the KMM
    # workflow and the host workflow (node) both stand on.
    ("kmmapi",),
    ("distro", "engine"),
    ("toolkit",),
    ("driver", "kmod", "vm"),
    ("demo", "kmm", "node", "prove", "fanout"),
    ("cli",),
    ("__main__",),
)
_BASE = LAYERS[0]
LAYER_OF = {name: index for index, names in enumerate(LAYERS) for name in names}


def unit_of(module: str) -> str:
    """'dtk.kmod.check' → 'kmod'; the base layer's modules count as one unit."""
    part = module.split(".")[1] if "." in module else "__init__"
    return "base" if part in _BASE else part


def layer_of(module: str) -> int:
    part = module.split(".")[1] if "." in module else "__init__"
    return LAYER_OF[part]


def dtk_imports(source: str) -> list[tuple[int, str]]:
    """(line, imported dtk module) for every import statement in the source."""
    tree = ast.parse(source)
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found += [(node.lineno, a.name) for a in node.names if a.name.split(".")[0] == "dtk"]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0 \
                and node.module.split(".")[0] == "dtk":
            base = node.module
            # `from dtk import kernel` imports the package dtk.kernel; `from dtk import
            # __version__` an attribute of dtk itself.
            found += [(node.lineno, f"dtk.{a.name}" if base == "dtk" and _is_unit(a.name)
                       else base) for a in node.names]
    return found


def _is_unit(name: str) -> bool:
    return (ROOT / name).is_dir() or (ROOT / f"{name}.py").is_file()


def module_name(path: Path) -> str:
    rel = path.relative_to(ROOT.parent).with_suffix("")
    parts = rel.parts[:-1] if rel.name == "__init__" else rel.parts
    return ".".join(parts)


SOURCES = sorted(ROOT.rglob("*.py"))


def test_every_module_has_a_layer() -> None:
    placed = {p.relative_to(ROOT).parts[0].removesuffix(".py") for p in SOURCES}
    assert sorted(placed - LAYER_OF.keys()) == []


def violations(me: str, source: str) -> list[str]:
    out = []
    for line, target in dtk_imports(source):
        mine, theirs = unit_of(me), unit_of(target)
        if mine == theirs:
            continue
        if layer_of(target) > layer_of(me):
            out.append(f"{me}:{line} imports {target}, a higher layer")
        elif layer_of(target) == layer_of(me):
            out.append(f"{me}:{line} imports {target}, a sibling in its layer")
    return out


@pytest.mark.parametrize("path", SOURCES, ids=lambda p: str(p.relative_to(ROOT)))
def test_imports_point_down(path: Path) -> None:
    assert violations(module_name(path), path.read_text()) == []


def test_the_rule_catches_a_feature_importing_a_feature() -> None:
    """The checker itself: a kmod module importing vm or cli is caught; base is fine."""
    source = ("from dtk.vm import qemu\n\ndef f():\n    from dtk.cli import main\n"
              "from dtk import run\n")
    assert violations("dtk.kmod.probe", source) == [
        "dtk.kmod.probe:1 imports dtk.vm, a sibling in its layer",
        "dtk.kmod.probe:4 imports dtk.cli, a higher layer",
    ]
    assert violations("dtk.kernel.probe", "from dtk import kernel as kern\n") == []


MAX_MODULE_LINES = 500
MAX_FUNCTION_LINES = 60


@pytest.mark.parametrize("path", SOURCES, ids=lambda p: str(p.relative_to(ROOT)))
def test_modules_and_functions_stay_small(path: Path) -> None:
    """A reader takes a module in at one sitting and a function at a glance."""
    source = path.read_text()
    assert len(source.splitlines()) <= MAX_MODULE_LINES
    long = [f"{node.name}: {node.end_lineno - node.lineno + 1} lines"
            for node in ast.walk(ast.parse(source))
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef)
            and node.end_lineno is not None
            and node.end_lineno - node.lineno + 1 > MAX_FUNCTION_LINES]
    assert long == []
