"""Kubernetes' own name rules (`k8s.io/apimachinery/pkg/util/validation`), checked the
way the API server checks them, so that a name dtk accepts is one a cluster accepts.

These matter beyond compatibility: a Secret's data key becomes a file name and a
Secret's name a directory and a mount target, so anything these rules refuse
(`/`, `..`, `:`) never reaches a path or a volume spec.
"""

from __future__ import annotations

import re

DNS1123_LABEL_MAX = 63
DNS1123_SUBDOMAIN_MAX = 253
_LABEL = r"[a-z0-9]([-a-z0-9]*[a-z0-9])?"
_DNS1123_LABEL = re.compile(rf"^{_LABEL}$")
_DNS1123_SUBDOMAIN = re.compile(rf"^{_LABEL}(\.{_LABEL})*$")
_CONFIG_MAP_KEY = re.compile(r"^[-._a-zA-Z0-9]+$")


def dns1123_subdomain_problems(value: str) -> list[str]:
    """Why `value` is not a DNS-1123 subdomain (object names: Secret, ConfigMap, CRs)."""
    out = []
    if len(value) > DNS1123_SUBDOMAIN_MAX:
        out.append(f"must be no more than {DNS1123_SUBDOMAIN_MAX} characters")
    if not _DNS1123_SUBDOMAIN.fullmatch(value):
        out.append("must consist of lower case alphanumeric characters, '-' or '.', and must "
                   "start and end with an alphanumeric character")
    return out


def dns1123_label_problems(value: str) -> list[str]:
    """Why `value` is not a DNS-1123 label (namespaces)."""
    out = []
    if len(value) > DNS1123_LABEL_MAX:
        out.append(f"must be no more than {DNS1123_LABEL_MAX} characters")
    if not _DNS1123_LABEL.fullmatch(value):
        out.append("must consist of lower case alphanumeric characters or '-', and must "
                   "start and end with an alphanumeric character")
    return out


def config_map_key_problems(value: str) -> list[str]:
    """Why `value` is not a ConfigMap/Secret data key (`IsConfigMapKey`)."""
    out = []
    if len(value) > DNS1123_SUBDOMAIN_MAX:
        out.append(f"must be no more than {DNS1123_SUBDOMAIN_MAX} characters")
    if not _CONFIG_MAP_KEY.fullmatch(value):
        out.append("must consist of alphanumeric characters, '-', '_' or '.'")
    if value == ".":
        out.append("must not be '.'")
    elif value == "..":
        out.append("must not be '..'")
    elif value.startswith(".."):
        out.append("must not start with '..'")
    return out
