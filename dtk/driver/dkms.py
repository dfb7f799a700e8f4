"""Build a DKMS group for one kernel inside that kernel's toolkit, with the real dkms.

The toolkit carries Debian's dkms package, so `dkms build` itself applies MAKE,
PATCH, PRE_BUILD/POST_BUILD, STRIP and the rest: what a user gets is what
`dkms build` would give, including its messages. dtk adds what dkms cannot do
for many kernels at once: each dkms.conf is first evaluated for the cell's
kernel (see `dkmsconf`) so that an excluded kernel is reported as such before
anything compiles; the modules go where `dkms install` puts them on Debian
(`/updates/dkms`), under /opt as KMM expects; and the final image is the small
busybox base, not the toolkit.
"""

from __future__ import annotations

import shutil
import signal
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from dtk import paths, rootfs, rootwrite, scripts
from dtk.digest import parts_digest
from dtk.driver import dkmsconf
from dtk.driver.dkmscell import EXCLUDED_STATUS, OUT, cell_script
from dtk.driver.outcome import CellFailedError, module_versions
from dtk.driver.plan import Cell
from dtk.driver.sources import DkmsGroup, DkmsTree
from dtk.engine import buildah, imagewrite, made, sandbox
from dtk.errors import DtkError
from dtk.files import write_atomic
from dtk.kernel import modfile

_META_TIMEOUT_S = 300


def evaluate_confs(image: str, trees: list[DkmsTree], kernel: str, image_id: str = ""
                   ) -> list[dkmsconf.DkmsConf]:
    """Each tree's dkms.conf as dkms reads it, evaluated inside `image` (a toolkit) with
    no network, for planning: a dkms.conf is a bash fragment from someone else, and
    it must not run on the host. One container for all trees (each costs ~0.6 s).
    Given the toolkit's `image_id`, an answer is remembered per (toolkit, kernel,
    tree content, scripts): offline bash on the same inputs says the same again."""
    keys = [_meta_key(image_id, kernel, tree) if image_id else "" for tree in trees]
    records = [_recall_meta(key) if key else None for key in keys]
    todo = [i for i, known in enumerate(records) if known is None]
    if todo:
        fresh = _evaluate(image, [trees[i].tree for i in todo], kernel)
        for i, answer in zip(todo, fresh, strict=True):
            records[i] = answer
            if keys[i]:
                write_atomic(_meta_path(keys[i]), answer)
    answers = [r for r in records if r is not None]
    assert len(answers) == len(trees)  # every tree was recalled or evaluated
    return [dkmsconf.parse_records(r) for r in answers]


def _meta_key(image_id: str, kernel: str, tree: DkmsTree) -> str:
    return parts_digest("dkms-meta/1", image_id, kernel, tree.digest,
                        dkmsconf.eval_script(), scripts.text("dkms-meta.sh"))


def _meta_path(key: str) -> Path:
    return paths.cache_dir() / "dkms" / "eval" / key.removeprefix("sha256:")


def _recall_meta(key: str) -> bytes | None:
    try:
        return _meta_path(key).read_bytes()
    except OSError:
        return None


def _evaluate(image: str, trees: list[Path], kernel: str) -> list[bytes]:
    with tempfile.TemporaryDirectory(prefix="dtk-dkms-meta-") as tmp:
        out = Path(tmp)
        (out / "eval.sh").write_text(dkmsconf.eval_script())
        (out / "meta.sh").write_text(scripts.text("dkms-meta.sh"))
        volumes = [f"{out}:{OUT}"] + [f"{tree.resolve()}:/usr/src/dtk-eval/{i}:ro"
                                       for i, tree in enumerate(trees)]
        with buildah.working_container(image) as ctr:
            ctr.run(["bash", f"{OUT}/meta.sh", OUT, kernel, str(len(trees))], volumes=volumes,
                    timeout=_META_TIMEOUT_S, offline=True,
                    what="evaluating dkms.conf in the toolkit failed")
        return [_read_meta(out, i, tree) for i, tree in enumerate(trees)]


def _read_meta(out: Path, index: int, tree: Path) -> bytes:
    # Someone else's bash wrote these: read without following a link it may have left.
    status = (rootfs.read_regular(out, f"{index}.status") or b"").decode(errors="replace")
    status = status.strip()
    records = rootfs.read_regular(out, f"{index}.records")
    if status not in ("0", str(dkmsconf.EVAL_EXCLUDED), str(dkmsconf.EVAL_BROKEN)) \
            or records is None:
        why = (rootfs.read_regular(out, f"{index}.stderr") or b"").decode(errors="replace")
        raise DtkError(f"evaluating {tree}/dkms.conf with bash failed (status {status})",
                       hint=why.strip()[-500:] or None)
    return records


@dataclass(frozen=True)
class Built:
    image_id: str
    modules: tuple[str, ...]
    notes: tuple[str, ...] = ()


@dataclass(frozen=True)
class Excluded:
    reason: str


def build_cell(cell: Cell, group: DkmsGroup, log: Path,
               on_line: Callable[[str], None] | None = None, *,
               make_jobs: int = 1, roots: sandbox.Roots) -> Built | Excluded:
    assert cell.toolkit is not None and cell.base is not None
    with tempfile.TemporaryDirectory(prefix="dtk-dkms-cell-") as tmp:
        # `out` is the build's (mounted in the container, writable by someone else's
        # code); `stage` is dtk's own, what the image is made of, never mounted.
        out, stage = Path(tmp) / "cell", Path(tmp) / "image"
        out.mkdir()
        (out / "eval.sh").write_text(dkmsconf.eval_script())
        (out / "cell.sh").write_text(cell_script())
        # A private writable copy per cell: some MAKE commands write into /usr/src
        # (west-chamber does), as they may on a host, and cells must not share it.
        volumes = [(out, OUT)]
        for pkg in group.packages:
            copy = out / "src" / f"{pkg.name}-{pkg.version}"
            shutil.copytree(pkg.tree, copy, symlinks=True)
            volumes.append((copy, f"/usr/src/{pkg.name}-{pkg.version}"))
        # In a sandbox over the toolkit (see dtk.engine.sandbox), without a network: a
        # DKMS build needs none (sources are local; a package's Depends are in the
        # toolkit-extras layer), so someone else's Makefile cannot reach this host's
        # services.
        result = sandbox.run(roots.root(cell.toolkit.name),
                             ["bash", f"{OUT}/cell.sh", OUT, cell.kernel, str(make_jobs),
                              *(f"{p.name}/{p.version}" for p in group.packages)],
                             volumes=volumes, log_file=log, on_line=on_line, timeout=3600,
                             check=False)
        excluded = _check_confs(group, out)
        if result.returncode == EXCLUDED_STATUS:
            return Excluded("dkms: the dkms.conf includes a BUILD_EXCLUSIVE directive which "
                            "does not match this kernel/arch/config")
        # Killed from outside: the sandbox itself (unshare passes its child's signal on
        # as a negative status), or dkms by SIGKILL (128 + 9), the OOM killer's signal.
        killed = -result.returncode if result.returncode < 0 else \
            (signal.SIGKILL.value if result.returncode == 128 + signal.SIGKILL else 0)
        if killed:
            raise CellFailedError(f"dkms build for {cell.kernel} was killed by signal "
                                  f"{killed}", result.stdout)
        if result.returncode != 0:
            raise CellFailedError(f"dkms build failed for {cell.kernel} "
                                  f"(status {result.returncode})", result.stdout)
        if len(excluded) == len(group.packages):
            return Excluded("; ".join(excluded))
        _stage(group, out, stage)
        return _commit(cell, group, stage, tuple(excluded))


def _check_confs(group: DkmsGroup, out: Path) -> list[str]:
    """Why packages were left out; a broken dkms.conf fails the cell with dkms's words."""
    excluded = []
    for pkg in group.packages:
        records = rootfs.read_regular(out, f"{pkg.name}.records")
        if records is None:
            continue  # never evaluated: an earlier package stopped the cell
        conf = dkmsconf.parse_records(records)
        if conf.errors:
            raise CellFailedError(f"{pkg.name}: dkms.conf is broken", "\n".join(conf.errors))
        if conf.excluded:
            excluded.append(f"{pkg.name}: " + "; ".join(conf.exclusions))
    return excluded


def _stage(group: DkmsGroup, out: Path, stage: Path) -> None:
    """What goes into the image, copied to `stage` through dtk's safe tree reader: the
    build's /opt without following a link it left (it may name a host directory), and
    each package's firmware/ with links resolved inside the package's tree."""
    try:
        stage.mkdir()
        rootwrite.copy_tree(out / "opt", stage / "opt")
        for pkg in group.packages:
            for inner, host in rootfs.walk_files(pkg.tree, "/firmware"):
                target = stage / inner.lstrip("/")
                target.parent.mkdir(parents=True, exist_ok=True)
                shutil.copyfile(host, target)
    except rootfs.UnsafePathError as exc:
        raise DtkError(f"nothing copied into the image: {exc.message}", hint=exc.hint) from None


def _commit(cell: Cell, group: DkmsGroup, stage: Path, notes: tuple[str, ...]) -> Built:
    assert cell.base is not None
    modules = find_modules_in_stage(stage, cell.kernel)
    versions = module_versions(modules)
    if len(group.packages) == 1:
        # Many DKMS modules carry no MODULE_VERSION; the package's version is what dkms shows.
        fallback = group.packages[0].version
        versions = tuple(v[:-1] + fallback if v.endswith("=-") else v for v in versions)
    labels = cell.labels()
    labels["dtk.build.modules"] = ",".join(versions)
    labels["dtk.build.packages"] = ",".join(f"{p.name}={p.version}" for p in group.packages)
    packages = " ".join(f"{p.name}/{p.version}" for p in group.packages)
    image_id = imagewrite.add_layer(cell.base.name, cell.base.image_id, stage, cell.image,
                                    labels=labels,
                                    created_by=f"dtk build: dkms build {packages} -k {cell.kernel}")
    made.record(image_id, cell.image, "driver")
    return Built(image_id, versions, notes)


def find_modules_in_stage(stage: Path, kernel: str) -> list[tuple[str, Path]]:
    """The staged /opt tree has no tools of its own; the base image supplies them."""
    base = f"/opt/lib/modules/{kernel}"
    modules = [(inner, host) for inner, host in rootfs.walk_files(stage, base)
               if modfile.is_module(inner)]
    if not modules or rootfs.resolve(stage, f"{base}/modules.dep") is None:
        raise DtkError(f"dkms reported success but left no modules for {kernel}")
    return modules
