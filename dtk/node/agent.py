"""What the boot unit, `unload`, `remove` and the kernel's postrm hook do, per
declaration, recording each result under /var/lib/dtk/loaded.

At boot nothing waits for the network: a module prepared for the running
kernel loads from its tree; one never prepared (or whose fetch failed) is
fetched once; one the check refused is not inserted. Each failure is recorded
and the others still load: the boot goes on whatever happens here.
"""

from __future__ import annotations

import json
import shutil
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from dtk.errors import DtkError
from dtk.files import write_atomic
from dtk.node import declare, oci, prepare
from dtk.node.declare import Declaration
from dtk.node.layout import Layout
from dtk.node.load import config_dir, execute, plan_load, plan_unload, present_in_tree


@dataclass(frozen=True)
class Loaded:
    name: str
    kernel: str
    loaded: bool
    reason: str
    tree: str = ""
    output: str = ""

    def line(self) -> str:
        return f"dtk node: {self.name}: {'loaded' if self.loaded else 'NOT LOADED'}: " \
               f"{self.reason}"


def loaded_file(layout: Layout, name: str) -> Path:
    return layout.state / "loaded" / f"{name}.json"


def loaded_record(layout: Layout, name: str) -> Loaded | None:
    try:
        return Loaded(**json.loads(loaded_file(layout, name).read_text()))
    except (OSError, ValueError, TypeError):
        return None


def _ready_outcome(layout: Layout, decl: Declaration, kernel: str) -> prepare.Outcome:
    """The prepared outcome, prepared now (fetching once) when there is none, its fetch
    had failed, or its tree is gone; a refusal stands."""
    outcome = prepare.recorded(layout, kernel, decl.name)
    usable = outcome is not None and (outcome.modules or outcome.ready) \
        and (layout.state / outcome.tree).is_dir()
    if outcome is None or not usable:
        outcome = prepare.prepare_one(layout, decl, kernel)
        prepare.record(layout, outcome)
    return outcome


def load_one(layout: Layout, decl: Declaration, kernel: str) -> Loaded:
    outcome = _ready_outcome(layout, decl, kernel)
    if not outcome.ready:
        return Loaded(decl.name, kernel, False, f"not inserted: {outcome.reason}")
    try:
        in_tree = present_in_tree(layout, kernel, decl.resolve(kernel).in_tree_modules_to_remove)
        output = execute(plan_load(layout, decl, outcome, in_tree))
    except DtkError as exc:
        return Loaded(decl.name, kernel, False, exc.message.splitlines()[0], outcome.tree)
    return Loaded(decl.name, kernel, True, outcome.reason, outcome.tree, output)


def load_all(layout: Layout, kernel: str) -> list[Loaded]:
    results = []
    for name in declare.names(layout):
        try:
            result = load_one(layout, declare.find(layout, name), kernel)
        except DtkError as exc:
            result = Loaded(name, kernel, False, exc.message.splitlines()[0])
        write_atomic(loaded_file(layout, name), json.dumps(asdict(result), indent=2).encode())
        results.append(result)
    return results


def unload_one(layout: Layout, decl: Declaration) -> str:
    """Undo a load of `decl` (nothing to do if it was not loaded)."""
    record = loaded_record(layout, decl.name)
    if record is None or not record.loaded:
        loaded_file(layout, decl.name).unlink(missing_ok=True)
        return ""
    outcome = prepare.Outcome(decl.name, record.kernel, True, "", tree=record.tree)
    output = execute(plan_unload(layout, decl, outcome))
    loaded_file(layout, decl.name).unlink(missing_ok=True)
    return output


def forget_kernel(layout: Layout, kernel: str) -> None:
    """The kernel's package is gone: its outcomes and configuration go too."""
    shutil.rmtree(layout.kernel_state(kernel), ignore_errors=True)
    collect_garbage(layout)


def remove(layout: Layout, name: str) -> None:
    """Unload, forget the declaration and everything derived from it."""
    decl = declare.find(layout, name)
    unload_one(layout, decl)
    decl.path.unlink()
    kernels = layout.state / "kernels"
    for state in kernels.glob(f"*/{name}.json") if kernels.is_dir() else ():
        state.unlink()
        shutil.rmtree(config_dir(layout, state.parent.name, name), ignore_errors=True)
    collect_garbage(layout)


def _referenced(layout: Layout) -> tuple[set[str], set[str]]:
    """(tree names, manifest digests) the recorded outcomes name."""
    kernels = layout.state / "kernels"
    trees, digests = set(), set()
    for state in kernels.glob("*/*.json") if kernels.is_dir() else ():
        data: Any = json.loads(state.read_text())
        if data.get("tree"):
            trees.add(Path(data["tree"]).name)
        if data.get("digest"):
            digests.add(str(data["digest"]))
    return trees, digests


def collect_garbage(layout: Layout) -> None:
    """Trees no outcome names are removed; with no declaration left, all of the state."""
    kernels = layout.state / "kernels"
    for empty in kernels.iterdir() if kernels.is_dir() else ():
        if empty.is_dir() and not any(empty.iterdir()):
            empty.rmdir()
    if not declare.names(layout):
        for part in ("oci", "trees", "kernels", "loaded", "pins.json"):
            path = layout.state / part
            if path.is_dir():
                shutil.rmtree(path)
            else:
                path.unlink(missing_ok=True)
        return
    keep, digests = _referenced(layout)
    for tree in layout.trees.iterdir() if layout.trees.is_dir() else ():
        if tree.name not in keep:
            shutil.rmtree(tree, ignore_errors=True)
    oci.prune(layout.oci, digests)
