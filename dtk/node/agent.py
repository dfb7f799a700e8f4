"""What the boot unit, `unload`, `remove` and the kernel's postrm hook do, per
declaration, recording each result under /var/lib/dtk/loaded.

At boot nothing waits for the network: a module prepared for the running
kernel (and for the declaration as it stands now) loads from its tree; one
never prepared, prepared for an earlier form of its declaration, or whose fetch
failed is fetched once; one the check refused is not inserted. Each
declaration is isolated: any failure of one, an unexpected exception included,
is recorded for it and the others still load. The boot goes on whatever
happens here.
"""

from __future__ import annotations

import json
import sys
import traceback
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

from dtk import rootwrite
from dtk.errors import DtkError
from dtk.files import write_atomic
from dtk.kmmapi import model as m
from dtk.node import declare, oci, pins, prepare
from dtk.node.declare import Declaration
from dtk.node.layout import Layout, check_release
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
    """The prepared outcome when it was prepared for this very declaration and its tree
    is there; otherwise prepared now (fetching once). A refusal stands."""
    outcome = prepare.recorded(layout, kernel, decl.name)
    usable = outcome is not None and outcome.declaration == decl.digest \
        and (outcome.modules or outcome.ready) and (layout.state / outcome.tree).is_dir()
    if outcome is None or not usable:
        outcome = prepare.prepare_one(layout, decl, kernel)
        prepare.record(layout, outcome)
    return outcome


def load_one(layout: Layout, decl: Declaration, kernel: str) -> Loaded:
    outcome = _ready_outcome(layout, decl, kernel)
    if not outcome.ready:
        return Loaded(decl.name, kernel, False, f"not inserted: {outcome.reason}")
    try:
        in_tree = present_in_tree(layout, decl.resolve(kernel).in_tree_modules_to_remove)
        output = execute(plan_load(layout, decl, outcome, in_tree))
    except DtkError as exc:
        return Loaded(decl.name, kernel, False, exc.message.splitlines()[0], outcome.tree)
    return Loaded(decl.name, kernel, True, outcome.reason, outcome.tree, output)


def _unexpected(name: str, exc: BaseException) -> str:
    """A bug in dtk met while loading `name`: its traceback to the journal (stderr), one
    line for the record."""
    print(f"dtk node: {name}: unexpected error, traceback follows", file=sys.stderr)
    traceback.print_exception(exc, file=sys.stderr)
    return f"dtk failed unexpectedly ({type(exc).__name__}: {exc}); the journal has the trace"


def load_all(layout: Layout, kernel: str) -> list[Loaded]:
    layout.machine("dtk node load")
    return each_isolated(layout, kernel, load_one)


def each_isolated(layout: Layout, kernel: str,
                  action: Callable[[Layout, Declaration, str], Loaded]) -> list[Loaded]:
    """`action` for every declaration, each one's failure (a DtkError, or a bug in dtk)
    recorded for it alone: the others still run, and the boot goes on."""
    results = []
    for name in declare.names(layout):
        try:
            result = action(layout, declare.find(layout, name), kernel)
        except DtkError as exc:
            result = Loaded(name, kernel, False, exc.message.splitlines()[0])
        except Exception as exc:  # one declaration never stops the others
            result = Loaded(name, kernel, False, _unexpected(name, exc))
        try:
            write_atomic(loaded_file(layout, name), json.dumps(asdict(result),
                                                               indent=2).encode())
        except OSError as exc:  # a full or read-only /var: said, and the boot goes on
            print(f"dtk node: {name}: cannot record the result: {exc}", file=sys.stderr)
        results.append(result)
    return results


def unload_one(layout: Layout, decl: Declaration) -> bool:
    """Undo a load of `decl`; False when there was nothing to undo (never loaded)."""
    record = loaded_record(layout, decl.name)
    if record is None or not record.loaded:
        loaded_file(layout, decl.name).unlink(missing_ok=True)
        return False
    layout.machine("dtk node unload")
    outcome = prepare.Outcome(decl.name, record.kernel, True, "", tree=record.tree)
    execute(plan_unload(layout, decl, outcome))
    loaded_file(layout, decl.name).unlink(missing_ok=True)
    return True


def forget_kernel(layout: Layout, kernel: str) -> bool:
    """The kernel's package is gone: its outcomes and configuration go too. False when
    nothing was prepared for it."""
    state = layout.kernel_state(check_release(kernel))
    if not state.is_dir():
        return False
    rootwrite.remove_tree(state)
    collect_garbage(layout)
    return True


def forget_derived(layout: Layout, name: str) -> None:
    """Every outcome, configuration and pin derived from the declaration `name` (its
    record of what is loaded stays: it says what the running kernel holds)."""
    kernels = layout.state / "kernels"
    for state in kernels.glob(f"*/{name}.json") if kernels.is_dir() else ():
        state.unlink()
        for action in ("load", "unload"):
            folder = config_dir(layout, state.parent.name, name, action)
            if folder.is_dir():
                rootwrite.remove_tree(folder)
    pins.drop(layout, name)


def add(layout: Layout, bundle: m.Bundle, kernels: tuple[str, ...], *, replace: bool,
        settings: declare.Settings) -> list[Declaration]:
    """Declare (declare.add); a replaced declaration's outcomes and pins are dropped, so
    nothing prepared for the old one is loaded at the next boot."""
    added = declare.add(layout, bundle, kernels, replace=replace, settings=settings)
    for decl in added:
        forget_derived(layout, decl.name)
    collect_garbage(layout)
    return added


def remove(layout: Layout, name: str) -> bool:
    """Unload, forget the declaration and everything derived from it. Whether it was
    loaded (and so unloaded); on a root that is not the running machine nothing is
    unloaded."""
    decl = declare.find(layout, name)
    unloaded = unload_one(layout, decl) if layout.is_machine else False
    decl.path.unlink()
    loaded_file(layout, name).unlink(missing_ok=True)
    forget_derived(layout, name)
    collect_garbage(layout)
    return unloaded


def _referenced(layout: Layout) -> tuple[set[str], set[str]]:
    """(tree names, manifest digests) the recorded outcomes and loads name."""
    kernels, loaded = layout.state / "kernels", layout.state / "loaded"
    trees, digests = set(), set()
    for state in kernels.glob("*/*.json") if kernels.is_dir() else ():
        found = prepare.recorded(layout, state.parent.name, state.stem)
        if found is not None:
            trees.add(Path(found.tree).name)
            digests.add(found.digest)
    for record in loaded.glob("*.json") if loaded.is_dir() else ():
        done = loaded_record(layout, record.stem)
        if done is not None and done.loaded:
            trees.add(Path(done.tree).name)
    return trees - {""}, digests - {""}


def collect_garbage(layout: Layout) -> None:
    """Trees no outcome names are removed; with no declaration left, all of the state."""
    kernels = layout.state / "kernels"
    for empty in kernels.iterdir() if kernels.is_dir() else ():
        if empty.is_dir() and not any(empty.iterdir()):
            empty.rmdir()
    if not declare.names(layout):
        for part in ("oci", "trees", "kernels", "loaded", "pins.json"):
            path = layout.state / part
            if path.is_dir() and not path.is_symlink():
                rootwrite.remove_tree(path)
            else:
                path.unlink(missing_ok=True)
        return
    keep, digests = _referenced(layout)
    for tree in layout.trees.iterdir() if layout.trees.is_dir() else ():
        if tree.name not in keep:
            rootwrite.remove_tree(tree)
    oci.prune(layout.oci, digests)

