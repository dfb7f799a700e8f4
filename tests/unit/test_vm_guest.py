"""The guest worker: its configuration (as the shell reads it), KMM's argv and
softdeps, and the result-channel protocol."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from dtk.vm import guest
from dtk.vm.guest import GuestConfig


def sourced(config: str, tmp_path: Path, *names: str) -> list[str]:
    """Values of `names` after a POSIX shell sources `config`."""
    path = tmp_path / "config"
    path.write_text(config)
    script = f". {path}; " + "; ".join(f'printf "%s\\n" "${n}"' for n in names)
    out = subprocess.run(["sh", "-c", script], capture_output=True, text=True, check=True)
    return out.stdout.splitlines()


def test_load_and_unload_follow_kmm() -> None:
    config = GuestConfig(module="v4l2loopback", parameters=("devices=2",),
                         loading_order=("v4l2loopback", "videodev"))
    assert config.load_argv() == ["-vd", "/opt", "v4l2loopback", "devices=2"]
    assert config.unload_argv() == ["-rvd", "/opt", "v4l2loopback", "videodev"]
    assert GuestConfig(module="a-b").unload_argv() == ["-rvd", "/opt", "a-b"]
    assert GuestConfig(module="a-b").kernel_name == "a_b"


def test_softdeps_load_the_order_backwards() -> None:
    assert guest.render_softdeps(("a", "b", "c")) == "softdep a pre: b\nsoftdep b pre: c\n"
    assert guest.render_softdeps(("a",)) == ""


def test_config_survives_the_shell(tmp_path: Path) -> None:
    nasty = "greeting=it's \"quoted\" $(reboot) `x`"
    config = GuestConfig(module="dtk_example", parameters=(nasty,),
                         check="cat /dev/dtk_example | grep -q 'hi there'")
    text = guest.render_config(config)
    (check,) = sourced(text, tmp_path, "DTK_CHECK")
    assert check == config.check
    # As the init script does: source the config, then eval the argv into "$@".
    script = f'. {tmp_path / "config"}; eval "set -- $DTK_LOAD_ARGV"; printf "%s\\n" "$@"'
    argv = subprocess.run(["sh", "-c", script], capture_output=True, text=True,
                          check=True).stdout.splitlines()
    assert argv == ["-vd", "/opt", "dtk_example", nasty]


def test_init_script_uses_kmod_where_the_userland_puts_it() -> None:
    assert f"MODPROBE={guest.KMOD_DIR}/modprobe\n" in guest.init_script()
    assert "echo $MODPROBE >/proc/sys/kernel/modprobe" in guest.init_script()


def test_init_script_parses_under_busybox_sh(tmp_path: Path) -> None:
    script = tmp_path / "init"
    script.write_text(guest.init_script())
    subprocess.run(["busybox", "sh", "-n", str(script)], check=True)


REPORT = """\
@@dtk kv release 6.1.0-56-amd64
@@dtk step boot 2.19
@@dtk step load 2.20
@@dtk begin load
modprobe: ERROR: could not insert 'dummy': Exec format error
@@dtk begin not-a-marker-inside-a-section
@@dtk end load
@@dtk begin dmesg
[    2.43] dummy: disagrees about version of symbol module_layout
@@dtk end dmesg
@@dtk exit 10 load
"""


def test_report_parsing() -> None:
    report = guest.parse_report(REPORT)
    assert report.facts == {"release": "6.1.0-56-amd64"}
    assert report.steps == [("boot", 2.19), ("load", 2.20)]
    assert report.sections["load"].splitlines()[1] == "@@dtk begin not-a-marker-inside-a-section"
    assert "module_layout" in report.sections["dmesg"]
    assert (report.exit_code, report.exit_step) == (10, "load")


def test_a_report_cut_short_keeps_what_arrived() -> None:
    report = guest.parse_report("@@dtk step load 3.0\n@@dtk begin load\ninsmod x.ko\n")
    assert report.exit_code is None
    assert report.last_step == "load"
    assert report.sections["load"] == "insmod x.ko"


def test_a_torn_exit_line_is_no_exit_status() -> None:
    """'@@dtk exit 1', cut from '@@dtk exit 10 load' by power-off, once read as
    status 1 (a setup failure) instead of what the guest said."""
    for text in ("@@dtk step load 3.0\n@@dtk exit 1",      # cut mid-line, no newline
                 "@@dtk step load 3.0\n@@dtk exit 1\n",    # cut at the code: no step
                 "@@dtk step load 3.0\n@@dtk exit 1x load\n"):
        report = guest.parse_report(text)
        assert report.exit_code is None, text
        assert report.torn.startswith("@@dtk exit 1"), text
    whole = guest.parse_report("@@dtk step load 3.0\n@@dtk exit 10 load\n")
    assert (whole.exit_code, whole.exit_step, whole.torn) == (10, "load", "")


RING = """\
@@dtk begin dmesg
[    0.00] Linux version 6.1.0-57-amd64
[    3.20] dtk: step boot
@@dtk end dmesg
@@dtk step node 3.3
@@dtk begin dmesg
[    3.30] dtk: step node
[    3.31] Lockdown: modprobe: unsigned module loading is restricted
[    3.38] dtk: step load
[    3.40] apfs: Unknown symbol crc32c (err -2)
@@dtk end dmesg
@@dtk exit 10 load
"""


def test_the_ring_buffer_arrives_in_chunks_and_splits_by_step() -> None:
    report = guest.parse_report(RING)
    assert report.kernel_log().splitlines()[0] == "[    0.00] Linux version 6.1.0-57-amd64"
    assert len(report.kernel_log().splitlines()) == 6  # both chunks, in order
    assert report.kernel_log("load") == "[    3.40] apfs: Unknown symbol crc32c (err -2)"
    assert "Lockdown" in report.kernel_log("node")


def test_init_never_clears_the_ring_buffer_and_closes_the_channel() -> None:
    script = guest.init_script()
    assert "dmesg -c" not in script and "dmesg -C" not in script
    finish = script[script.index("finish() {"):]
    assert finish.index("exec 3>&-") < finish.index("sync") < finish.index("poweroff")


def test_many_modules_render_one_unit_each() -> None:
    units = [guest.Unit("acpi-call", guest.GuestConfig("acpi_call", dir_name="/opt/acpi-call")),
             guest.Unit("oops", guest.GuestConfig("dtk-oops", dir_name="/opt/oops",
                                                  check="cat /proc/x"))]
    text = guest.render_units(units, 12)
    assert "DTK_UNITS='1 2'\n" in text and "DTK_STEP_TIMEOUT=12\n" in text
    assert "DTK_NAME_2=oops\n" in text and "DTK_MODULE_2=dtk_oops\n" in text
    assert "DTK_LOAD_ARGV_1='-vd /opt/acpi-call acpi_call'\n" in text
    assert "DTK_CHECK_2='cat /proc/x'\n" in text
    with pytest.raises(ValueError, match="one word"):
        guest.render_units([guest.Unit("a b", guest.GuestConfig("x"))], 5)


def test_a_many_module_report_splits_into_frames() -> None:
    text = ("@@dtk kv release K\n@@dtk step boot 1.0\n"
            "@@dtk module a\n@@dtk kv module a\n@@dtk step load 1.1\n@@dtk begin dmesg\n"
            "[ 1.1] dtk: step load\n[ 1.2] a: hello\n@@dtk end dmesg\n@@dtk done 0 unload\n"
            "@@dtk module b\n@@dtk step load 1.5\n@@dtk begin load\nmodprobe: ERROR: could "
            "not insert 'b': No such device\n@@dtk end load\n@@dtk done 10 load\n"
            "@@dtk module c\n@@dtk step load 2.0\n@@dtk exit 20 load\n")
    frames = guest.split_report(text)
    assert frames.preamble.facts == {"release": "K"} and frames.preamble.exit_code is None
    assert [name for name, _ in frames.modules] == ["a", "b", "c"]
    (_, a), (_, b), (_, c) = frames.modules
    assert (a.exit_code, a.exit_step, a.kernel_log("load")) == (0, "unload", "[ 1.2] a: hello")
    assert (b.exit_code, c.exit_code) == (10, 20)
    assert "No such device" in b.sections["load"] and "load" not in a.sections


def test_the_boots_own_exit_is_no_modules() -> None:
    frames = guest.split_report("@@dtk module a\n@@dtk done 11 verify\n@@dtk exit 0 end\n")
    assert frames.modules[0][1].exit_code == 11 and frames.preamble.exit_code == 0


def test_unload_checks_every_module_of_the_order() -> None:
    """What must be gone after the worker's unload: the whole modulesLoadingOrder (KMM
    f17d16d), or moduleName; with rawArgs, the module the guest verifies."""
    config = GuestConfig(module="a-x", loading_order=("a-x", "b", "c"))
    assert config.unloaded_names() == ["a_x", "b", "c"]
    assert "DTK_UNLOADED='a_x b c'\n" in guest.render_config(config)
    assert GuestConfig(module="a-x").unloaded_names() == ["a_x"]
    assert GuestConfig(module="m", raw_unload=("-r", "m", "n")).unloaded_names() == ["m"]


def test_the_softdep_file_is_for_the_load_only() -> None:
    """KMM's unload pod has no softdep file since f17d16d: the init removes it first."""
    script = guest.init_script()
    unload = script.index("step unload")
    assert script.index(f"rm -f {guest.SOFTDEP_PATH}", unload) < \
        script.index('run_limited unload', unload)
