"""Stopping dtk: every running command's group is killed, none starts after.

Run in a child interpreter: stopping is for good, for the whole process."""

from __future__ import annotations

import subprocess
import sys
import textwrap

from dtk.driver.outcome import machine_fault

_SCRIPT = textwrap.dedent("""
    import threading, time
    from dtk import run as runner

    seen = []
    def worker():
        try:
            runner.run(["sh", "-c", "sleep 60 & sleep 60; wait"], timeout=120)
        except runner.Interrupted:
            seen.append("interrupted")

    thread = threading.Thread(target=worker)
    thread.start()
    time.sleep(0.5)
    start = time.monotonic()
    runner.stop_all()
    thread.join(timeout=30)
    print(seen, round(time.monotonic() - start) < 10)
    try:
        runner.run(["true"])
    except runner.Interrupted:
        print("no new command")
    print(runner.run(["echo", "cleanup runs"], cleanup=True).stdout.strip())
""")


def test_stop_all_kills_running_commands_and_starts_no_other() -> None:
    out = subprocess.run([sys.executable, "-c", _SCRIPT], capture_output=True, text=True,
                         timeout=60, check=True).stdout.splitlines()
    assert out == ["['interrupted'] True", "no new command", "cleanup runs"]


def test_machine_faults_are_told_from_package_faults() -> None:
    # The words the kernel (strerror), gcc and dtk print for each.
    assert machine_fault("dd: error writing '/dev/full': No space left on device") \
        == "No space left on device"
    assert machine_fault("gcc: fatal error: Killed signal terminated program cc1") \
        == "Killed signal terminated program"
    assert machine_fault("dkms build for 6.1.0-57-amd64 was killed by signal 9") \
        == "killed by signal 9"
    assert machine_fault("cc1: out of memory allocating 65536 bytes after a total of 1 bytes") \
        == "out of memory allocating 65536 bytes"
    assert machine_fault("error: implicit declaration of function 'foo'") is None
    assert machine_fault('  12 |         pr_err("out of memory\\n");') is None  # quoted source
