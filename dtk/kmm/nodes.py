"""Kernels of a cluster's nodes, from `kubectl get nodes -o json`, as KMM selects them.

KMM's module reconciler targets the nodes its selector matches whose NoSchedule and
NoExecute taints the Module's tolerations, plus KMM's own (disk, memory and PID
pressure), all tolerate (internal/node GetSchedulableNodesBySelector); it reads a node's
kernel with a trailing '+' trimmed (module_reconciler.go).
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from dtk.errors import DtkError
from dtk.kmmapi.model import Toleration

# module.InternalTolerations
INTERNAL_TOLERATIONS = tuple(
    Toleration(key=f"node.kubernetes.io/{what}", operator="Exists", effect="NoSchedule")
    for what in ("disk-pressure", "memory-pressure", "pid-pressure"))


def tolerates(t: Toleration, taint: Mapping[str, Any]) -> bool:
    """Kubernetes' Toleration.ToleratesTaint."""
    if t.effect and t.effect != taint.get("effect"):
        return False
    if t.key and t.key != taint.get("key"):
        return False
    if t.operator in ("", "Equal"):
        return t.value == (taint.get("value") or "")
    return t.operator == "Exists"


def schedulable(node: Mapping[str, Any], tolerations: Sequence[Toleration]) -> bool:
    """KMM's IsNodeSchedulable: every NoSchedule/NoExecute taint is tolerated."""
    spec = node.get("spec")
    taints = spec.get("taints") if isinstance(spec, dict) else None
    for taint in taints if isinstance(taints, list) else []:
        if not isinstance(taint, dict) or taint.get("effect") not in ("NoSchedule", "NoExecute"):
            continue
        if not any(tolerates(t, taint) for t in (*tolerations, *INTERNAL_TOLERATIONS)):
            return False
    return True


def selected(labels: Mapping[str, str], selector: Mapping[str, str]) -> bool:
    """matchLabels semantics: every key=value of the selector is among the node's labels."""
    return all(labels.get(key) == value for key, value in selector.items())


def kernels_by_node(data: Any, selector: Mapping[str, str],
                    tolerations: Sequence[Toleration] = ()) -> dict[str, tuple[str, ...]]:
    """kernel -> names of the targeted nodes running it, in the order the list gives."""
    items = data.get("items") if isinstance(data, dict) else None
    if isinstance(data, dict) and data.get("kind") == "Node":  # `kubectl get node X -o json`
        items = [data]
    if not isinstance(items, list):
        raise DtkError("--nodes: not a node list (expected `kubectl get nodes -o json` output)")
    out: dict[str, list[str]] = {}
    for n, node in enumerate(items):
        meta = node.get("metadata") if isinstance(node, dict) else None
        info = (node.get("status") or {}).get("nodeInfo") if isinstance(node, dict) else None
        name = meta.get("name") if isinstance(meta, dict) else None
        kernel = info.get("kernelVersion") if isinstance(info, dict) else None
        if not isinstance(name, str) or not isinstance(kernel, str) or not kernel:
            raise DtkError(f"--nodes: items[{n}] has no metadata.name or "
                           "status.nodeInfo.kernelVersion")
        labels = meta.get("labels") if isinstance(meta, dict) else None
        if selected(labels if isinstance(labels, dict) else {}, selector) \
                and schedulable(node, tolerations):
            out.setdefault(kernel.removesuffix("+"), []).append(name)
    return {k: tuple(v) for k, v in out.items()}


def read_nodes(path: Path, selector: Mapping[str, str],
               tolerations: Sequence[Toleration] = ()) -> dict[str, tuple[str, ...]]:
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise DtkError(f"--nodes {path}: cannot read it as JSON ({exc})",
                       hint="write it with `kubectl get nodes -o json > nodes.json`") from None
    return kernels_by_node(data, selector, tolerations)
