"""Benchmark: one matrix split over two machines through a registry cache, then run
whole on a third, against one machine running it cold.

    .venv/bin/python bench/fanout.py [--packages a-dkms,b-dkms | --corpus] [--kernels K1,K2]

Machines are simulated as in tests/integration/test_fanout.py: each has its own
container storage (CONTAINERS_STORAGE_CONF, with this machine's toolkits shared
read-only as an additional image store) and its own dtk cache and state; they share
one loopback registry. They run one after another, each with the whole machine, as
separate machines would. Prints, per machine, the cells it compiled and took from the
cache, its wall and CPU time; then (a) the work per shard machine against the single
machine's, and (b) the third machine's wall against the cold single run's.

`--corpus`: Debian's whole `*-dkms` corpus (bench/prove_corpus.py's) x its kernels
(the newest 6.1 and its RT sibling, the newest 6.12), about 15 minutes of compiling
for the single machine alone. The kernels' toolkits are made first on this machine
(not timed): the simulated machines share them read-only, as a registry would.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path
from typing import Any

from dtk.distro.select import open_archive
from dtk.toolkit.images import ensure_toolkit

sys.path.insert(0, str(Path(__file__).parent))
import prove_corpus  # a sibling script: the corpus is defined once

# The integration test's matrix: librem-ec-acpi fails on 6.1, jool builds on an extras layer.
PACKAGES = ("acpi-call-dkms", "bbswitch-dkms", "xtrx-dkms", "vpoll-dkms", "librem-ec-acpi-dkms",
            "jool-dkms")
SHARED_STORE = "/var/lib/containers/storage"


def newest_61() -> list[str]:
    """The newest 6.1 kernel and its RT sibling: one toolkit holds both."""
    release = next(e.release for e in open_archive().kernels()
                   if e.line == "6.1" and e.flavour == "standard")
    return [release, release.replace("-amd64", "-rt-amd64")]


def private_store(base: Path) -> Path:
    """This machine's storage, read through a private bind mount: see the docstring of
    tests/integration/test_fanout.py (others' buildah runs mount and detach its
    overlay directory, which fails overlay mounts that look a lower layer up meanwhile)."""
    store = base / "shared-store"
    store.mkdir()
    subprocess.run(["mount", "--bind", SHARED_STORE, str(store)], check=True)
    subprocess.run(["mount", "--make-private", str(store)], check=True)
    # Read-only: a removal of the bench's directory that ran through it could not
    # touch this machine's storage.
    subprocess.run(["mount", "-o", "remount,bind,ro", str(store)], check=True)
    return store


def serve_registry(root: Path) -> tuple[subprocess.Popen[bytes], str]:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    root.mkdir(parents=True)
    config = root / "config.yml"
    config.write_text(f"version: 0.1\nstorage:\n  filesystem:\n    rootdirectory: {root}/data\n"
                      f"http:\n  addr: 127.0.0.1:{port}\nlog:\n  level: error\n")
    proc = subprocess.Popen(["docker-registry", "serve", str(config)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    for _ in range(150):
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/v2/", timeout=2):
                return proc, f"127.0.0.1:{port}"
        except OSError:
            time.sleep(0.2)
    proc.terminate()
    raise SystemExit("docker-registry did not start")


def machine(base: Path, name: str, store: Path) -> dict[str, str]:
    root = base / name
    (root / "cache" / "dtk").mkdir(parents=True)
    conf = root / "storage.conf"
    conf.write_text(f'[storage]\ndriver = "overlay"\ngraphroot = "{root}/graph"\n'
                    f'runroot = "{root}/run"\n[storage.options]\n'
                    f'additionalimagestores = ["{store}"]\n')
    home = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "dtk"
    for shared in ("apt", "dkms"):  # package downloads, as a caching proxy shares them
        if (home / shared).exists():
            (root / "cache" / "dtk" / shared).symlink_to(home / shared)
    env = {k: v for k, v in os.environ.items() if not k.startswith("DTK_")}
    env.update(CONTAINERS_STORAGE_CONF=str(conf), XDG_CACHE_HOME=str(root / "cache"),
               XDG_STATE_HOME=str(root / "state"))
    return env


def run(env: dict[str, str], args: list[str]) -> tuple[dict[str, Any], float, float]:
    """dtk build ARGS --json: its result, wall seconds, CPU seconds of its processes."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.monotonic()
    proc = subprocess.run([sys.executable, "-m", "dtk", "build", *args, "--json"], env=env,
                          capture_output=True, text=True, check=False, timeout=7200)
    wall = time.monotonic() - start
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if not proc.stdout.strip():
        raise SystemExit(f"dtk build failed:\n{proc.stderr[-3000:]}")
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return json.loads(proc.stdout), wall, cpu


def unmount_under(root: Path) -> None:
    mounts = [line.split()[1] for line in Path("/proc/mounts").read_text().splitlines()]
    for point in sorted((m for m in mounts if m.startswith(f"{root}/")), reverse=True):
        subprocess.run(["umount", point], check=False)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--packages", default=",".join(PACKAGES))
    parser.add_argument("--kernels", default="")
    parser.add_argument("--corpus", action="store_true",
                        help="every *-dkms package of the archive x three kernels")
    parser.add_argument("--out", type=Path, default=None,
                        help="also write each machine's `dtk build --json` output here")
    opts = parser.parse_args()
    kernels = [k for k in opts.kernels.split(",") if k] or (
        prove_corpus.default_kernels() if opts.corpus else newest_61())
    packages = prove_corpus.corpus() if opts.corpus else opts.packages.split(",")
    archive = open_archive()
    for kernel in kernels:  # not timed: shared by every machine, made once per kernel
        ensure_toolkit(kernel, "auto", distro=archive)
    print(f"{len(packages)} packages x {len(kernels)} kernels: {', '.join(kernels)}",
          file=sys.stderr)
    matrix = [a for p in packages for a in ("--dkms", p)]
    matrix += [a for k in kernels for a in ("--kernel", k)]
    base = Path(tempfile.mkdtemp(prefix="dtk-bench-fanout-"))
    registry, address = serve_registry(base / "registry")
    store = private_store(base)
    rows: list[tuple[str, dict[str, Any], float, float]] = []
    try:
        cache = ["--cache", f"{address}/bench/cache"]
        image = ["--image", "localhost/dtk-bench-fanout/${MOD_NAME}:${KERNEL_FULL_VERSION}"]
        for name, extra in (("single (cold, no cache)", []),
                            ("A: shard 1/2", ["--shard", "1/2", *cache]),
                            ("B: shard 2/2", ["--shard", "2/2", *cache]),
                            ("C: whole, from cache", cache)):
            env = machine(base, name[0], store)
            result, wall, cpu = run(env, [*matrix, *image, *extra])
            rows.append((name, result, wall, cpu))
            if opts.out:
                opts.out.mkdir(parents=True, exist_ok=True)
                (opts.out / f"{name[0]}.json").write_text(json.dumps(result, indent=1))
    finally:
        registry.terminate()
        registry.wait()
        unmount_under(base)  # the machines' mounts, then the store's
        shutil.rmtree(base, ignore_errors=True)
    report(rows)


def report(rows: list[tuple[str, dict[str, Any], float, float]]) -> None:
    print(f"{'MACHINE':<26}{'CELLS':>6}{'COMPILED':>9}{'CACHED':>7}{'WALL s':>8}{'CPU s':>8}")
    for name, result, wall, cpu in rows:
        outcomes = result["outcomes"]
        compiled = sum(not o["cached"] and o["status"] != "excluded" for o in outcomes)
        cached = sum(o["cached"] for o in outcomes)
        print(f"{name:<26}{len(outcomes):>6}{compiled:>9}{cached:>7}{wall:>8.1f}{cpu:>8.1f}")
    single, shard_a, shard_b, third = rows
    print(f"(a) work per shard machine / one machine: wall {shard_a[2] / single[2]:.2f}, "
          f"{shard_b[2] / single[2]:.2f}; CPU {shard_a[3] / single[3]:.2f}, "
          f"{shard_b[3] / single[3]:.2f}")
    print(f"(b) third machine / cold single run: wall {third[2] / single[2]:.1%} "
          "(target <= 5%)")


if __name__ == "__main__":
    main()
