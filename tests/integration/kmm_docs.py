"""KMM manifests for the `dtk module` integration tests, written the way KMM's docs write them."""

from __future__ import annotations

import base64
from pathlib import Path
from typing import Any

import yaml

# A KMM-docs-style Dockerfile: build on the toolkit (DTK_AUTO), ship on DTK_BASE,
# and end with `RUN depmod -b /opt` in the final stage, without a kernel version.
DOCKERFILE = r"""ARG DTK_AUTO
ARG DTK_BASE
FROM ${DTK_AUTO} AS builder
ARG KERNEL_FULL_VERSION
WORKDIR /src
RUN printf '%s\n' '#include <linux/module.h>' 'MODULE_LICENSE("GPL");' \
      'static int __init a_init(void) { return 0; }' 'static void __exit a_exit(void) {}' \
      'module_init(a_init);' 'module_exit(a_exit);' > kmm_ci_a.c \
 && sed 's/a_/b_/g' kmm_ci_a.c > kmm_ci_b.c \
 && printf 'obj-m := kmm_ci_a.o kmm_ci_b.o\n' > Makefile \
 && make -C /usr/src/linux-headers-${KERNEL_FULL_VERSION} M=/src modules
FROM ${DTK_BASE}
ARG KERNEL_VERSION
COPY --from=builder /src/*.ko /opt/lib/modules/${KERNEL_VERSION}/
RUN mkdir -p /firmware/dtk && echo 'firmware bytes' > /firmware/dtk/test.bin
RUN depmod -b /opt
"""

# A build secret read by RUN steps, printed on purpose (so masking is proven).
SECRET_DOCKERFILE = r"""ARG DTK_AUTO
ARG DTK_BASE
FROM ${DTK_AUTO} AS builder
ARG KERNEL_FULL_VERSION
WORKDIR /src
RUN ls /run/secrets/tok/ && echo "token is: $(cat /run/secrets/tok/token)" \
 && test -s /run/secrets/tok/token
RUN printf '%s\n' '#include <linux/module.h>' 'MODULE_LICENSE("GPL");' \
      'static int __init a_init(void) { return 0; }' 'module_init(a_init);' > kmm_ci_a.c \
 && printf 'obj-m := kmm_ci_a.o\n' > Makefile \
 && make -C /usr/src/linux-headers-${KERNEL_FULL_VERSION} M=/src modules
FROM ${DTK_BASE}
ARG KERNEL_FULL_VERSION
COPY --from=builder /src/*.ko /opt/lib/modules/${KERNEL_FULL_VERSION}/
RUN depmod -b /opt ${KERNEL_FULL_VERSION}
"""


def module(name: str, mappings: list[dict[str, Any]], **container: Any) -> dict[str, Any]:
    spec: dict[str, Any] = {"moduleLoader": {"container": {
        "modprobe": {"moduleName": "kmm_ci_a"}, "kernelMappings": mappings, **container}},
        "selector": {"kubernetes.io/os": "linux"}}
    return {"apiVersion": "kmm.sigs.x-k8s.io/v1beta1", "kind": "Module",
            "metadata": {"name": name, "namespace": "kmm-test"}, "spec": spec}


def configmap(name: str, dockerfile: str | None) -> dict[str, Any]:
    data = {"dockerfile": dockerfile} if dockerfile is not None else {"Dockerfile": "FROM x"}
    return {"apiVersion": "v1", "kind": "ConfigMap",
            "metadata": {"name": name, "namespace": "kmm-test"}, "data": data}


def secret(name: str, values: dict[str, bytes], kind: str = "Opaque") -> dict[str, Any]:
    return {"apiVersion": "v1", "kind": "Secret", "type": kind,
            "metadata": {"name": name, "namespace": "kmm-test"},
            "data": {k: base64.b64encode(v).decode() for k, v in values.items()}}


def repo_secret(dockerconfigjson: str) -> dict[str, Any]:
    return secret("repo", {".dockerconfigjson": dockerconfigjson.encode()},
                  "kubernetes.io/dockerconfigjson")


def signing(key: Path, cert: Path) -> list[dict[str, Any]]:
    return [secret("signing-key", {"key": key.read_bytes()}),
            secret("signing-cert", {"cert": cert.read_bytes()})]


def write(path: Path, *docs: dict[str, Any]) -> Path:
    path.write_text(yaml.safe_dump_all(list(docs), sort_keys=False))
    return path
