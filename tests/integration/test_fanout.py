"""Many machines, simulated on this one: each has its own container storage (a
storage.conf with its own graphroot and runroot) and its own dtk cache and state
directories; they share one loopback registry with htpasswd authentication, and,
read-only, the toolkits of this machine's storage (an additional image store: a
worker would pull its toolkit; building 1-2 GB per simulated machine proves nothing
more). Package downloads are shared too, as a caching proxy would share them.

The shared store is read through a private bind mount of its own: every buildah
run on this machine's storage (other tests, other users) bind-mounts its
`overlay` directory on itself and detaches it again on exit, and an overlay mount
whose lower directory was looked up through a mount detached meanwhile fails
(the kernel's "overlayfs: failed to clone lowerpath", buildah's "invalid
argument"). Through the private mount the lower directories are plain
directories that nobody else mounts or unmounts.

A and B build the two shards of a matrix with --cache and --push; C runs the whole
matrix with --cache and compiles nothing; the merged shards equal C's result cell
for cell. A poisoned entry is not used, and an unreachable or refusing registry
only costs a warning.
"""

from __future__ import annotations

import base64
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from dtk.distro import aptindex
from dtk.distro.debian import DebianArchive
from dtk.driver.base import ensure_base
from dtk.driver.remotecache import RegistryCache, base_entry
from dtk.engine import buildah
from dtk.toolkit.images import ToolkitImage
from tests.integration import kmm_docs as docs
from tests.integration.conftest import AuthRegistry

pytestmark = pytest.mark.integration

DATA = Path(__file__).parent.parent / "data" / "build"
SHARED_STORE = "/var/lib/containers/storage"


@dataclass(frozen=True)
class Machine:
    name: str
    root: Path
    env: dict[str, str]

    def dtk(self, *args: str, check_json: bool = True) -> tuple[int, Any, str]:
        proc = subprocess.run([sys.executable, "-m", "dtk", *args, "--json"],
                              capture_output=True, text=True, env=self.env, timeout=1800,
                              check=False)
        assert proc.stdout.strip() or not check_json, f"{self.name}: no JSON:\n{proc.stderr}"
        return proc.returncode, json.loads(proc.stdout or "{}"), proc.stderr

    def images(self) -> list[str]:
        out = subprocess.run(["buildah", "images", "--format", "{{.Name}}:{{.Tag}}"],
                             capture_output=True, text=True, env=self.env, check=True).stdout
        return out.split()


def _machine(base: Path, name: str, authfile: Path, store: Path) -> Machine:
    root = base / name
    (root / "cache" / "dtk").mkdir(parents=True)
    conf = root / "storage.conf"
    conf.write_text('[storage]\ndriver = "overlay"\n'
                    f'graphroot = "{root / "graph"}"\nrunroot = "{root / "run"}"\n'
                    f'[storage.options]\nadditionalimagestores = ["{store}"]\n')
    home_cache = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "dtk"
    for shared in ("apt", "dkms"):  # downloads, not results
        if (home_cache / shared).exists():
            (root / "cache" / "dtk" / shared).symlink_to(home_cache / shared)
    # The session's index, pinned (conftest): one archive for every simulated machine.
    env = {k: v for k, v in os.environ.items()
           if not k.startswith("DTK_") or k == aptindex.MAX_AGE_ENV}
    env.update(CONTAINERS_STORAGE_CONF=str(conf), XDG_CACHE_HOME=str(root / "cache"),
               XDG_STATE_HOME=str(root / "state"), REGISTRY_AUTH_FILE=str(authfile))
    return Machine(name, root, env)


@pytest.fixture
def machines(tmp_path: Path, auth_registry: AuthRegistry) -> Iterator[dict[str, Machine]]:
    token = base64.b64encode(f"{auth_registry.user}:{auth_registry.password}".encode()).decode()
    authfile = tmp_path / "auth.json"
    authfile.write_text(json.dumps({"auths": {auth_registry.address: {"auth": token}}}))
    wrong = tmp_path / "wrong-auth.json"
    wrong.write_text(json.dumps({"auths": {auth_registry.address: {
        "auth": base64.b64encode(b"dtk:not-the-password").decode()}}}))
    shared = tmp_path / "shared-store"
    shared.mkdir()
    subprocess.run(["mount", "--bind", SHARED_STORE, str(shared)], check=True)
    try:
        subprocess.run(["mount", "--make-private", str(shared)], check=True)
        # Read-only: if the unmount below ever failed, pytest's removal of old
        # temporary directories could not delete this machine's storage through it.
        subprocess.run(["mount", "-o", "remount,bind,ro", str(shared)], check=True)
        found = {name: _machine(tmp_path, name, wrong if name == "refused" else authfile,
                                shared) for name in ("A", "B", "C", "D", "refused")}
        yield found
        for machine in found.values():
            _unmount_under(machine.root)
            shutil.rmtree(machine.root)
    finally:
        _unmount_under(shared)
        subprocess.run(["umount", str(shared)], check=True)


def _unmount_under(root: Path) -> None:
    """containers/storage keeps the overlay directory of a graphroot bind-mounted on
    itself after the tools exit: unmount what lies under this machine, deepest first."""
    mounts = [line.split()[1] for line in Path("/proc/mounts").read_text().splitlines()]
    for point in sorted((m for m in mounts if m.startswith(f"{root}/")), reverse=True):
        subprocess.run(["umount", point], check=True)


def by_cell(result: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {f"{o['module']}@{o['kernel']}": o for o in result["outcomes"]}


def verdict(outcome: dict[str, Any]) -> tuple[Any, ...]:
    """What a cell's result says, without where or how fast it was made."""
    return (outcome["module"], outcome["kernel"], outcome["status"], outcome["image"],
            tuple(outcome["modules"]), outcome["reason"], tuple(outcome["tail"]))


# Six small Debian DKMS packages (README's corpus): librem-ec-acpi does not compile on
# 6.1 (README's failures), which the test finds out from dtk, not from this list; jool
# needs libxtables12, which a toolkit lacks: its cells build on an extras layer that
# each machine makes for itself.
PACKAGES = ("acpi-call-dkms", "bbswitch-dkms", "xtrx-dkms", "vpoll-dkms",
            "librem-ec-acpi-dkms", "jool-dkms")


def _extras_tags(env: dict[str, str] | None) -> set[str]:
    out = subprocess.run(["buildah", "images", "--format", "{{.Name}}:{{.Tag}} {{.ID}}",
                          "--filter", "reference=localhost/dtk-toolkit-extras"],
                         capture_output=True, text=True, env=env, check=True).stdout
    return set(out.splitlines())


@pytest.mark.usefixtures("toolkit_61")
def test_two_shards_fill_the_cache_and_a_third_machine_compiles_nothing(
        machines: dict[str, Machine], auth_registry: AuthRegistry, kernel_61: str,
        kernel_61_rt: str, tmp_path: Path) -> None:
    """6 packages x 2 kernels (the newest 6.1 and its RT sibling: one toolkit)."""
    excluded = tmp_path / "src" / "excluded"  # BUILD_EXCLUSIVE_KERNEL="^5\.": no kernel
    shutil.copytree(DATA / "excluded", excluded)
    shutil.copy2(DATA / "dtkhello" / "dtkhello.c", excluded)
    reg = auth_registry.address
    prefix = f"fanout-{uuid.uuid4().hex[:8]}"
    cache = f"{reg}/{prefix}/cache"
    matrix = (*(a for p in PACKAGES for a in ("--dkms", p)),
              "--kernel", kernel_61, "--kernel", kernel_61_rt,
              "--image", f"{reg}/{prefix}/${{MOD_NAME}}:${{KERNEL_FULL_VERSION}}")
    shared_extras = _extras_tags(None)  # this machine's, which A, B, C see read-only
    shards = {}
    for index, name in ((1, "A"), (2, "B")):
        code, shards[name], err = machines[name].dtk(
            "build", *matrix, "--shard", f"{index}/2", "--cache", cache, "--push")
        statuses = {o["status"] for o in shards[name]["outcomes"]}
        assert code == (1 if "failed" in statuses else 0), err
        assert "warning: cache" not in err, err
    a, b = by_cell(shards["A"]), by_cell(shards["B"])
    assert a and b and not a.keys() & b.keys()
    assert len(a) + len(b) == len(PACKAGES) * 2
    # Every cell compiled once, on A or B.
    assert all(not o["cached"] for o in [*a.values(), *b.values()])
    for outcome in [*a.values(), *b.values()]:
        if outcome["status"] == "built":
            assert outcome["pushed"].startswith("sha256:")
    failed = {k: o for k, o in {**a, **b}.items() if o["status"] == "failed"}
    assert failed, "the matrix has no failing cell: librem-ec-acpi compiles on 6.1 now?"
    assert len(failed) < len(PACKAGES) * 2

    code, whole, err = machines["C"].dtk("build", *matrix, "--cache", cache)
    cells = by_cell(whole)
    assert code == 1 and "warning: cache" not in err, err
    assert set(cells) == a.keys() | b.keys()
    # Nothing compiled on C: every cell came from the cache, built ones pulled whole,
    # failures as their records.
    assert [k for k, o in cells.items() if not o["cached"]] == []
    for key, outcome in cells.items():
        assert "dkms build" not in Path(outcome["log"]).read_text(), key
    assert {k for k, o in cells.items() if o["status"] == "failed"} == failed.keys()
    for key, outcome in failed.items():
        assert cells[key]["tail"] == outcome["tail"] and outcome["tail"], key
    pulled = machines["C"].images()
    assert all(o["image"] in pulled for o in cells.values() if o["status"] == "built")
    # jool's cells are keyed by their extras layer's inputs, so C finds them in the
    # cache without that layer: it plans it and, compiling nothing, never makes it
    # (apt's minute). The machine that compiled jool made it (another image id than
    # any other machine would get), unless this machine's storage, which all of them
    # read, holds one already.
    assert "jool-dkms: toolkit" in err and "libxtables12" in err, err
    ids = {name: _extras_tags(machines[name].env) - shared_extras for name in "ABC"}
    assert not ids["C"], ids
    jool = "A" if any(k.startswith("jool-dkms@") for k in a) else "B"
    assert ids[jool] or shared_extras, f"{jool} compiled jool without its extras layer"
    assert all(cells[f"jool-dkms@{k}"]["cached"] for k in (kernel_61, kernel_61_rt))

    # The shards merged: the same result as the one machine's, cell for cell, in order.
    files = []
    for name, result in shards.items():
        files.append(tmp_path / f"{name}.json")
        files[-1].write_text(json.dumps(result))
    code, merged, err = machines["C"].dtk("report", "merge", *map(str, files))
    assert code == 1, err
    assert [verdict(o) for o in merged["outcomes"]] == [verdict(o) for o in whole["outcomes"]]
    code, _bad, err = machines["C"].dtk("report", "merge", str(files[0]))
    assert code == 2 and "not each of 1..2 once" in _bad["error"]["message"]
    _copy_poison_and_refuse(machines, cache, kernel_61, kernel_61_rt, excluded)


def _copy_poison_and_refuse(machines: dict[str, Machine], cache: str, kernel_61: str,
                            kernel_61_rt: str, excluded: Path) -> None:
    """After the cache is full: D pushes a hit by copying it within the registry, then
    meets a poisoned entry; a machine with the wrong password meets a refusal."""
    reg, prefix, _repo = cache.split("/")
    # --push into the cache's registry: a hit is copied there, no layer comes here.
    code, copied, err = machines["D"].dtk(
        "build", "--dkms", "acpi-call-dkms", "--kernel", kernel_61_rt, "--image",
        f"{reg}/{prefix}/copies/${{MOD_NAME}}:${{KERNEL_FULL_VERSION}}", "--cache", cache,
        "--push")
    hit = by_cell(copied)[f"acpi-call@{kernel_61_rt}"]
    assert code == 0 and hit["cached"] and hit["pushed"].startswith("sha256:"), err
    assert not [i for i in machines["D"].images() if prefix in i]

    # Poisoned: acpi-call's image for the same kernel pushed by hand under dtkhello's
    # key (a driver image, for the right kernel: only the key in its labels differs).
    plan = machines["D"].dtk("build", "--dkms", "acpi-call-dkms", "--dkms",
                             str(DATA / "dtkhello"), "--kernel", kernel_61, "--image",
                             f"{reg}/{prefix}/${{MOD_NAME}}:${{KERNEL_FULL_VERSION}}",
                             "--plan")[1]
    keys = {f"{c['module']}@{c['kernel']}": c["key"].removeprefix("sha256:")
            for c in plan["cells"]}
    subprocess.run(["skopeo", "copy", "--src-tls-verify=false", "--dest-tls-verify=false",
                    f"docker://{cache}:{keys[f'acpi-call@{kernel_61}']}",
                    f"docker://{cache}:{keys[f'dtkhello@{kernel_61}']}"],
                   env=machines["D"].env, check=True, capture_output=True)
    code, poisoned, err = machines["D"].dtk(
        "build", "--dkms", str(DATA / "dtkhello"), "--kernel", kernel_61, "--image",
        f"{reg}/{prefix}/${{MOD_NAME}}:${{KERNEL_FULL_VERSION}}", "--cache", cache)
    hello = by_cell(poisoned)[f"dtkhello@{kernel_61}"]
    assert code == 0 and hello["status"] == "built" and not hello["cached"], err
    assert "does not carry the labels" in err
    assert any(m.startswith("dtkhello=") for m in hello["modules"])

    # Credentials refused, or no registry at all: one warning, the cell decided here.
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        nobody = f"127.0.0.1:{sock.getsockname()[1]}/{prefix}/cache"  # closed again below
    for where, why in ((cache, "refused the credentials"), (nobody, "is not reachable")):
        code, refused, err = machines["refused"].dtk(
            "build", "--dkms", str(excluded), "--kernel", kernel_61, "--image",
            f"{reg}/{prefix}/${{MOD_NAME}}:${{KERNEL_FULL_VERSION}}", "--cache", where)
        cell = by_cell(refused)[f"dtkexcluded@{kernel_61}"]
        assert code == 0 and cell["status"] == "excluded", err
        assert cell["cached"] == (where == nobody)  # the second time, remembered here
        warnings = [line for line in err.splitlines() if "warning: cache" in line]
        assert len(warnings) == 1 and why in warnings[0], err


def test_a_base_image_through_the_cache_keeps_its_id(
        machines: dict[str, Machine], auth_registry: AuthRegistry, archive: DebianArchive,
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """What makes keys the same on every machine: an input image (here the 10 MB base;
    toolkits go the same way) stored from one machine and taken on a machine whose
    storage has nothing, by digest, has the same image id. A wrong entry is not taken."""
    base = ensure_base(archive.index, archive.os.arch)  # the shared store's
    repo = f"{auth_registry.address}/fanout-{uuid.uuid4().hex[:8]}/cache"
    warnings: list[str] = []
    monkeypatch.setenv("REGISTRY_AUTH_FILE", machines["A"].env["REGISTRY_AUTH_FILE"])
    monkeypatch.setenv("CONTAINERS_STORAGE_CONF", machines["A"].env["CONTAINERS_STORAGE_CONF"])
    cache = RegistryCache(repo, warnings.append)
    cache.store_input(base.name, *base_entry(base.name))
    empty = tmp_path / "empty"
    conf = empty / "storage.conf"
    empty.mkdir()
    conf.write_text(f'[storage]\ndriver = "overlay"\ngraphroot = "{empty / "graph"}"\n'
                    f'runroot = "{empty / "run"}"\n')
    monkeypatch.setenv("CONTAINERS_STORAGE_CONF", str(conf))
    try:
        assert not buildah.image_exists(base.name)
        # Poisoned: another image under the base's entry is refused.
        name, label, _value = base_entry(base.name)
        RegistryCache(repo, warnings.append).take_input(base.name, name, label, "not-base")
        assert not buildah.image_exists(base.name)
        assert warnings and "not used" in warnings[-1]
        cache.take_input(base.name, *base_entry(base.name))
        assert buildah.image_id(base.name) == base.image_id
        assert len(warnings) == 1
    finally:
        buildah.remove_image(base.name)
        _unmount_under(empty)


def _skopeo_pushing_to(prefix: str) -> bool:
    """Whether a skopeo process is writing to a reference that starts with `prefix`."""
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            argv = (proc / "cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if argv and argv[0].endswith(b"skopeo") and \
                any(a.startswith(prefix.encode()) for a in argv[1:]):
            return True
    return False


@pytest.mark.usefixtures("toolkit_61")
def test_a_machine_killed_mid_push_leaves_nothing_partial(
        machines: dict[str, Machine], auth_registry: AuthRegistry, kernel_61: str) -> None:
    """A is killed (SIGKILL, dtk and skopeo together) while it pushes a cell to the
    cache; C then takes that cell whole or builds it, never a part of it."""
    prefix = f"fanout-{uuid.uuid4().hex[:8]}"
    cache = f"{auth_registry.address}/{prefix}/cache"
    args = ("build", "--dkms", str(DATA / "dtkhello"), "--kernel", kernel_61, "--image",
            f"localhost/{prefix}/${{MOD_NAME}}:${{KERNEL_FULL_VERSION}}", "--cache", cache,
            "--json")
    proc = subprocess.Popen([sys.executable, "-m", "dtk", *args], env=machines["A"].env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            start_new_session=True)
    caught = False
    try:
        while proc.poll() is None and not caught:
            caught = _skopeo_pushing_to(f"docker://{cache}:")
    finally:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
    assert caught, "the push to the cache was not seen"
    key = machines["C"].dtk(*args[:-1], "--plan")[1]["cells"][0]["key"]

    def entry() -> dict[str, Any] | None:
        found = subprocess.run(
            ["skopeo", "inspect", "--tls-verify=false", f"docker://{cache}:{key[7:]}"],
            env=machines["C"].env, capture_output=True, text=True, check=False)
        return json.loads(found.stdout) if found.returncode == 0 else None

    left = entry()  # the registry tags a manifest only once it has all of it
    assert left is None or left["Labels"]["dtk.build.input-hash"] == key
    code, result, err = machines["C"].dtk(*args[:-1])
    hello = by_cell(result)[f"dtkhello@{kernel_61}"]
    assert code == 0 and hello["status"] == "built", err
    assert hello["cached"] == (left is not None)  # taken whole, or built again
    assert any(m.startswith("dtkhello=") for m in hello["modules"])
    stored = entry()  # and now the cache holds the whole cell
    assert stored is not None and stored["Labels"]["dtk.build.input-hash"] == key


@pytest.mark.usefixtures("toolkit_61")
def test_a_modules_kernels_split_and_shared_between_machines(
        machines: dict[str, Machine], auth_registry: AuthRegistry, kernel_61: str,
        kernel_61_rt: str, tmp_path: Path) -> None:
    """`dtk module build --shard --cache`: A and B build a KMM Module's two kernels,
    one each; C builds the whole Module and compiles nothing. The cache speaks with
    the Module's imageRepoSecret, as its pushes do. `dtk report merge` puts A's and
    B's outputs back together as the whole Module's (issue 28 §9)."""
    reg = auth_registry.address
    prefix = f"{reg}/fanout-{uuid.uuid4().hex[:8]}"
    module = docs.module("fan", [{"regexp": ".", "containerImage":
                                  f"{prefix}/fan:${{KERNEL_FULL_VERSION}}"}],
                         build={"dockerfileConfigMap": {"name": "df"}},
                         registryTLS={"insecure": True})
    module["spec"]["imageRepoSecret"] = {"name": "repo"}
    files = docs.write(tmp_path / "module.yaml", module, docs.configmap("df", docs.DOCKERFILE),
                       docs.repo_secret(auth_registry.dockerconfigjson()))
    args = ("module", "build", "-f", str(files), "--kernel", kernel_61, "--kernel",
            kernel_61_rt, "--cache", f"{prefix}/cache")
    kernels, outputs = [], []
    for name, shard in (("A", "1/2"), ("B", "2/2")):
        code, result, err = machines[name].dtk(*args, "--shard", shard)
        [one] = result["results"]
        assert code == 0 and one["action"] == "built" and not one["cached"], err
        kernels.append(one["kernel"])
        outputs.append(tmp_path / f"shard-{name}.json")
        outputs[-1].write_text(json.dumps(result))
    assert sorted(kernels) == sorted([kernel_61, kernel_61_rt])
    code, merged, err = machines["C"].dtk("report", "merge", *map(str, outputs))
    assert code == 0, err
    assert [(r["kernel"], r["action"]) for r in merged["results"]] == [
        (kernel_61, "built"), (kernel_61_rt, "built")]
    code, whole, err = machines["C"].dtk(*args)
    assert code == 0, err
    assert [(r["kernel"], r["cached"]) for r in whole["results"]] == [
        (kernel_61, True), (kernel_61_rt, True)]


def _with_empty_storage(machine: Machine, empty: Path) -> Machine:
    """`machine`'s dtk directories over container storage of its own in `empty`, with
    nothing in it, not even the shared store (a machine that never built anything)."""
    empty.mkdir()
    conf = empty / "storage.conf"
    conf.write_text(f'[storage]\ndriver = "overlay"\ngraphroot = "{empty / "graph"}"\n'
                    f'runroot = "{empty / "run"}"\n')
    return Machine("E", machine.root, {**machine.env, "CONTAINERS_STORAGE_CONF": str(conf)})


def test_a_toolkit_through_the_cache_keeps_its_id(
        machines: dict[str, Machine], auth_registry: AuthRegistry,
        toolkit_612: ToolkitImage, tmp_path: Path) -> None:
    """`dtk toolkit build --cache` stores the toolkit (keyed by its plan hash) from a
    machine that has it; a machine with empty storage takes it from there instead of
    building it, with the same image id, so both compute the same cell keys."""
    cache = f"{auth_registry.address}/fanout-{uuid.uuid4().hex[:8]}/cache"
    args = ("toolkit", "build", "--kernel", toolkit_612.kernel, "--cache", cache)
    code, stored, err = machines["A"].dtk(*args)
    assert code == 0 and stored[0]["image_id"] == toolkit_612.image_id, err
    empty = tmp_path / "empty"
    fresh = _with_empty_storage(machines["B"], empty)
    try:
        code, taken, err = fresh.dtk(*args)
        assert code == 0, err
        assert taken[0]["image_id"] == toolkit_612.image_id
        assert "is up to date" in err  # taken, not built
    finally:
        _unmount_under(empty)


def test_plan_makes_no_toolkit(machines: dict[str, Machine], kernel_61: str,
                               tmp_path: Path) -> None:
    """`--plan` on a machine without the toolkit builds nothing (a toolkit is 1-2 GB):
    a cell's key covers its toolkit's image id, so the plan says the key is unknown
    until the toolkit exists; DKMS sources, whose dkms.conf is read in a toolkit to
    name the cells, are refused with how to make one."""
    empty = tmp_path / "empty"
    bare = _with_empty_storage(machines["A"], empty)
    try:
        code, plan, err = bare.dtk("build", "-f", str(DATA / "badcontainer" / "Containerfile"),
                                   "--kernel", kernel_61, "--plan")
        assert code == 0, err
        [cell] = plan["cells"]
        assert not cell["key"] and "key unknown until toolkit" in cell["error"], cell
        assert "building it" not in err
        code, refused, err = bare.dtk("build", "--dkms", str(DATA / "dtkhello"), "--kernel",
                                      kernel_61, "--plan")
        assert code == 2 and "no kernel of the matrix has one" in refused["error"]["message"]
        assert bare.images() == []
    finally:
        _unmount_under(empty)
