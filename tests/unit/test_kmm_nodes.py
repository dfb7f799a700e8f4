"""`--nodes`: the nodes KMM targets, with taints and tolerations as KMM's
GetSchedulableNodesBySelector weighs them (internal/node/node.go at de3f8c9)."""

from __future__ import annotations

from typing import Any

from dtk.kmm.nodes import kernels_by_node
from dtk.kmmapi.model import Toleration


def _node(name: str, kernel: str, *taints: dict[str, str]) -> dict[str, Any]:
    return {"metadata": {"name": name, "labels": {"kmm": "yes"}},
            "spec": {"taints": list(taints)}, "status": {"nodeInfo": {"kernelVersion": kernel}}}


NODES = {"items": [
    _node("plain", "6.1.0-56-amd64"),
    _node("gpu", "6.1.0-56-rt-amd64", {"key": "gpu", "value": "a100", "effect": "NoSchedule"}),
    _node("drain", "6.12.57+deb13-amd64", {"key": "gone", "effect": "NoExecute"}),
    _node("soft", "6.1.0-50-amd64", {"key": "busy", "effect": "PreferNoSchedule"}),
    _node("full", "6.1.0-51-amd64", {"key": "node.kubernetes.io/disk-pressure",
                                     "effect": "NoSchedule"}),
    _node("plus", "6.1.0-52-amd64+"),
]}


def test_untolerated_taints_keep_a_node_out() -> None:
    """NoSchedule and NoExecute taints need a toleration; PreferNoSchedule does not; KMM
    tolerates disk, memory and PID pressure itself; a trailing '+' is trimmed."""
    assert sorted(kernels_by_node(NODES, {"kmm": "yes"})) == [
        "6.1.0-50-amd64", "6.1.0-51-amd64", "6.1.0-52-amd64", "6.1.0-56-amd64"]


def test_the_modules_tolerations_let_it_in() -> None:
    tolerations = (Toleration(key="gpu", operator="Equal", value="a100",
                              effect="NoSchedule"), Toleration(operator="Exists"))
    assert set(kernels_by_node(NODES, {"kmm": "yes"}, tolerations)) >= {
        "6.1.0-56-rt-amd64", "6.12.57+deb13-amd64"}
    wrong = (Toleration(key="gpu", operator="Equal", value="h100"),)
    assert "6.1.0-56-rt-amd64" not in kernels_by_node(NODES, {"kmm": "yes"}, wrong)
