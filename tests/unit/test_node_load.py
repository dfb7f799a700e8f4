"""The boot unit's plan: KMM's worker sequence (kmm-facts 2.7) from a prepared tree.
Only the plan is tested here (this host cannot load modules); the VM node test
runs it."""

from __future__ import annotations

import stat
from pathlib import Path

import yaml

from dtk.kmmapi import model as m
from dtk.kmod.check import Policy
from dtk.node import declare, hooks
from dtk.node.layout import Layout
from dtk.node.load import FIRMWARE_HOST, FIRMWARE_PARAM, plan_load, plan_unload, present_in_tree
from dtk.node.prepare import Outcome
from dtk.node.verify import host_policy

K = "6.1.0-57-amd64"


def declared(root: Path, modprobe: dict[str, object]) -> declare.Declaration:
    doc = {"apiVersion": m.API_VERSION, "kind": "Module",
           "metadata": {"name": "drv", "namespace": "default"},
           "spec": {"selector": {}, "moduleLoader": {"container": {
               "modprobe": modprobe,
               "kernelMappings": [{"literal": K, "containerImage": "r/x:1"}]}}}}
    path = root / "in.yaml"
    path.write_text(yaml.safe_dump(doc))
    (decl,) = declare.add(Layout(root), declare.read_file_bundle([path]), [K])
    return decl


def outcome() -> Outcome:
    return Outcome("drv", K, True, "loads", tree="trees/sha256-abc")


def test_load_follows_kmms_worker(tmp_path: Path) -> None:
    """KMM@f17d16d's worker: firmware_class.path, in-tree removal, firmware copy, then
    modprobe -vd with the softdeps; unload is one modprobe -r over modulesLoadingOrder
    with no softdeps (cmd/worker/funcs_kmod.go, internal/worker/worker.go)."""
    layout = Layout(tmp_path)
    decl = declared(tmp_path, {"moduleName": "a", "parameters": ["x=1"],
                               "args": {"load": ["--first-time"], "unload": ["-v"]},
                               "modulesLoadingOrder": ["a", "b", "c"],
                               "firmwarePath": "/firmware"})
    conf = tmp_path / f"var/lib/dtk/kernels/{K}/drv.modprobe.d"
    tree = tmp_path / "var/lib/dtk/trees/sha256-abc"
    steps = plan_load(layout, decl, outcome(), ("a_old",))
    assert [(s.what, s.argv) for s in steps] == [
        ("firmware-path", ()), ("remove-in-tree", ("modprobe", "-rv", "a_old")),
        ("firmware", ()), ("config", ()),
        ("modprobe", ("modprobe", "-C", str(conf), "-vd", str(tree / "opt"), "--first-time",
                      "a", "x=1"))]
    assert (steps[0].path, steps[0].text) == (FIRMWARE_PARAM, FIRMWARE_HOST)
    assert (steps[2].source, steps[2].path) == (str(tree / "firmware"),
                                                 str(tmp_path / FIRMWARE_HOST.lstrip("/")))
    # modulesLoadingOrder [a, b, c] is KMM's softdep file: loading a loads c, b, then a.
    assert steps[3].text == "softdep a pre: b\nsoftdep b pre: c\n"
    unload = plan_unload(layout, decl, outcome())
    quiet = tmp_path / f"var/lib/dtk/kernels/{K}/drv.unload.modprobe.d"
    assert (unload[0].what, unload[0].path, unload[0].text) == (
        "config", str(quiet / "softdep.conf"), "")
    assert unload[1].argv == ("modprobe", "-C", str(quiet), "-rvd", str(tree / "opt"), "-v",
                              "a", "b", "c")
    assert unload[2].what == "clear-firmware"


def test_raw_args_are_passed_verbatim_but_for_the_workers_directory(tmp_path: Path) -> None:
    decl = declared(tmp_path, {"rawArgs": {"load": ["-vd", "/tmp/usr", "raw"],
                                           "unload": ["-rv", "raw"]},
                               "dirName": "/usr"})
    conf = tmp_path / f"var/lib/dtk/kernels/{K}/drv.modprobe.d"
    tree = tmp_path / "var/lib/dtk/trees/sha256-abc/usr"
    assert plan_load(Layout(tmp_path), decl, outcome(), ())[-1].argv == (
        "modprobe", "-C", str(conf), "-vd", str(tree), "raw")
    assert plan_unload(Layout(tmp_path), decl, outcome())[1].argv[-2:] == ("-rv", "raw")


def test_in_tree_modules_are_found_as_kmms_worker_finds_them(tmp_path: Path) -> None:
    """FileExists(/lib/modules, `^NAME.ko`): any kernel's directory, the name as a regexp
    (so `crc_foo` does not find crc-foo.ko, and an invalid pattern is skipped)."""
    mods = tmp_path / f"lib/modules/{K}/kernel"
    (mods / "drivers/net").mkdir(parents=True)
    (mods / "drivers/net/e1000e.ko.xz").write_bytes(b"")
    (mods / "crc-foo.ko").write_bytes(b"")
    other = tmp_path / "lib/modules/6.12.0-1-amd64/kernel"
    other.mkdir(parents=True)
    (other / "only_there.ko").write_bytes(b"")
    assert present_in_tree(Layout(tmp_path), ("e1000e", "crc_foo", "crc-foo", "only_there",
                                              "absent", "bad[")) == (
        "e1000e", "crc-foo", "only_there")


def test_hooks_and_unit_are_installed_and_enabled(tmp_path: Path) -> None:
    hooks.install(Layout(tmp_path))
    hooks.install(Layout(tmp_path))  # idempotent
    for path in ("etc/kernel/postinst.d/dtk-node", "etc/kernel/postrm.d/dtk-node"):
        assert stat.S_IMODE((tmp_path / path).stat().st_mode) == 0o755
    unit = (tmp_path / "etc/systemd/system/dtk-node.service").read_text()
    assert "Before=network-pre.target" in unit and "DefaultDependencies=no" in unit
    link = tmp_path / "etc/systemd/system/sysinit.target.wants/dtk-node.service"
    assert str(link.readlink()) == "/etc/systemd/system/dtk-node.service"


def test_the_hosts_signature_policy(tmp_path: Path) -> None:
    """Lockdown (Secure Boot on Debian) and module.sig_enforce=1 apply to every kernel
    the machine boots; a root without them (or without /sys) enforces nothing."""
    assert host_policy(tmp_path) == Policy()
    (tmp_path / "sys/kernel/security").mkdir(parents=True)
    (tmp_path / "sys/kernel/security/lockdown").write_text("[none] integrity confidentiality\n")
    (tmp_path / "proc").mkdir()
    (tmp_path / "proc/cmdline").write_text("root=/dev/vda module.sig_enforce=1 quiet\n")
    assert host_policy(tmp_path) == Policy(secure_boot=False, sig_enforce=True)
    (tmp_path / "sys/kernel/security/lockdown").write_text("none [integrity] confidentiality\n")
    assert host_policy(tmp_path).secure_boot
