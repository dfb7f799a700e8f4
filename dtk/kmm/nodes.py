"""Kernels of a cluster's nodes, from `kubectl get nodes -o json`, as KMM selects them."""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from dtk.errors import DtkError


def selected(labels: Mapping[str, str], selector: Mapping[str, str]) -> bool:
    """matchLabels semantics: every key=value of the selector is among the node's labels."""
    return all(labels.get(key) == value for key, value in selector.items())


def kernels_by_node(data: Any, selector: Mapping[str, str]) -> dict[str, tuple[str, ...]]:
    """kernel -> names of the selected nodes running it, in the order the list gives."""
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
        if selected(labels if isinstance(labels, dict) else {}, selector):
            out.setdefault(kernel, []).append(name)
    return {k: tuple(v) for k, v in out.items()}


def read_nodes(path: Path, selector: Mapping[str, str]) -> dict[str, tuple[str, ...]]:
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise DtkError(f"--nodes {path}: cannot read it as JSON ({exc})",
                       hint="write it with `kubectl get nodes -o json > nodes.json`") from None
    return kernels_by_node(data, selector)
