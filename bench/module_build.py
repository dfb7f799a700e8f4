"""`dtk module build` from nothing: one Module, three kernels, built and signed.

    .venv/bin/python bench/module_build.py [K ...]

The Module is examples/kmm/module.yaml (a KMM-docs Dockerfile in a ConfigMap,
build + sign), with a fresh signing key and a unique image name, for the
newest 6.1 kernel, its RT sibling and the newest 6.12 (their toolkits must
exist: `dtk toolkit build`). It prints the wall time and each kernel's time,
then removes the images. KMM's documented in-cluster figure for its own tiny
CI module is about 86 s from BuildCreated to BuildSucceeded, per kernel.
"""

from __future__ import annotations

import base64
import json
import sys
import tempfile
import time
import uuid
from pathlib import Path

import yaml

from dtk import run as runner
from dtk.distro.query import query_kernels
from dtk.distro.select import open_archive
from dtk.engine import buildah
from dtk.kmod import keygen

EXAMPLE = Path(__file__).resolve().parent.parent / "examples/kmm/module.yaml"
DTK = str(Path(sys.executable).parent / "dtk")


def default_kernels() -> list[str]:
    """The newest 6.1 kernel and its RT sibling, and the newest 6.12: `--kernels`'s
    query language says it (dtk.distro.query)."""
    catalog = open_archive().kernels()
    return (query_kernels("6.1,standard,rt,latest", catalog)
            + query_kernels("6.12,standard,latest", catalog))


def manifests(workdir: Path, repo: str) -> Path:
    docs = list(yaml.safe_load_all(EXAMPLE.read_text()))
    mapping = docs[0]["spec"]["moduleLoader"]["container"]["kernelMappings"][0]
    mapping["containerImage"] = f"{repo}/${{MOD_NAME}}:${{KERNEL_FULL_VERSION}}"
    keys = keygen.keygen(workdir, "dtk bench")
    for name, key, path in (("signing-key", "key", keys.key),
                            ("signing-cert", "cert", keys.cert_pem)):
        docs.append({"apiVersion": "v1", "kind": "Secret", "type": "Opaque",
                     "metadata": {"name": name, "namespace": "default"},
                     "data": {key: base64.b64encode(path.read_bytes()).decode()}})
    out = workdir / "module.yaml"
    out.write_text(yaml.safe_dump_all(docs, sort_keys=False))
    return out


def main() -> int:
    kernels = sys.argv[1:] or default_kernels()
    repo = f"localhost/dtk-bench-{uuid.uuid4().hex[:8]}"
    with tempfile.TemporaryDirectory(prefix="dtk-bench-") as tmp:
        files = manifests(Path(tmp), repo)
        argv = [DTK, "module", "build", "-f", str(files), "--json"]
        for k in kernels:
            argv += ["--kernel", k]
        start = time.monotonic()
        result = runner.run(argv, check=False, timeout=1800)
        wall = time.monotonic() - start
    data = json.loads(result.stdout) if result.stdout.strip() else {"results": []}
    try:
        print(f"{'kernel':28} {'action':14} seconds")
        for r in data["results"]:
            print(f"{r['kernel']:28} {r['action']:14} {r['seconds']:.1f}")
        print(f"wall time for {len(kernels)} kernels, built and signed from nothing: "
              f"{wall:.1f} s (KMM in-cluster: ~86 s per kernel)")
    finally:
        for r in data["results"]:
            buildah.remove_image(r["image"])
    if result.returncode != 0:
        print(result.stderr[-3000:], file=sys.stderr)
    return result.returncode


if __name__ == "__main__":
    raise SystemExit(main())
