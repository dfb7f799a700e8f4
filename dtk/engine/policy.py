"""The containers policy (containers-policy.json(5)) read for one question before an
image is fetched: would it let this image in unsigned?

skopeo always applies a policy, but Debian's default one accepts anything
(`insecureAcceptAnything`), so "skopeo verified it" says nothing unless the policy
asks for signatures. Whoever asked for signed images must not silently get
unsigned ones: `require_signature` refuses a source unless the requirements that
apply to it (its most specific scope, else the transport's default "", else the
policy's default) demand a signature (`signedBy`, `sigstoreSigned`) or refuse it
(`reject`). skopeo then checks the signatures itself, with the same file.

Scopes are matched as containers/image matches them: for `docker://` the
reference (with its tag or digest), then the repository and each namespace above
it up to the registry host, then `*.domain` wildcards; for `oci:`/`oci-archive:`
the resolved path (`oci:` with its `:ref`), then each directory above it.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from dtk.errors import DtkError

SIGNED = ("signedBy", "sigstoreSigned")
_STRICT = (*SIGNED, "reject")


def read(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError:
        raise DtkError(f"signatures are required but there is no containers policy {path}",
                       hint="write one that requires signatures (signedBy or sigstoreSigned) "
                            "for the image's registry: containers-policy.json(5)") from None
    except (OSError, ValueError) as exc:
        raise DtkError(f"the containers policy {path} cannot be read: {exc}") from None
    if not isinstance(data, dict) or not isinstance(data.get("default"), list):
        raise DtkError(f"the containers policy {path} has no \"default\" list of requirements",
                       hint="containers-policy.json(5)")
    return data


def _docker_scopes(reference: str) -> list[str]:
    first = reference.split("/", 1)[0]
    if "/" not in reference or not ("." in first or ":" in first or first == "localhost"):
        # As docker normalises a short name: the registry's default and library/.
        reference = "docker.io/" + (reference if "/" in reference else "library/" + reference)
    repo = reference.split("@", 1)[0]
    last = repo.rsplit("/", 1)[-1]
    repo = repo[: len(repo) - len(last)] + last.split(":", 1)[0]
    scopes = [reference]
    parts = repo.split("/")
    scopes += ["/".join(parts[:n]) for n in range(len(parts), 0, -1)]
    host = parts[0].split(":", 1)[0]
    labels = host.split(".")
    scopes += ["*." + ".".join(labels[n:]) for n in range(1, len(labels))]
    return list(dict.fromkeys(scopes))


def _path_scopes(spec: str, with_ref: bool) -> list[str]:
    path, ref = spec, ""
    if with_ref and ":" in spec:
        path, ref = spec.split(":", 1)
    resolved = Path(path).resolve()
    scopes = [f"{resolved}:{ref}"] if ref else []
    scopes.append(str(resolved))
    scopes += [str(p) for p in resolved.parents if str(p) != "/"]
    return list(dict.fromkeys(scopes))


def scopes(source: str) -> tuple[str, list[str]]:
    """The transport of a skopeo source and its scopes, most specific first."""
    transport, _, rest = source.partition(":")
    if transport == "docker":
        return transport, _docker_scopes(rest.removeprefix("//"))
    if transport in ("oci", "oci-archive"):
        return transport, _path_scopes(rest, with_ref=transport == "oci")
    raise DtkError(f"cannot tell which containers policy applies to {source}")


def requirements(policy: dict[str, Any], source: str) -> tuple[str, list[Any]]:
    """(where in the policy they come from, the requirements that apply to `source`)."""
    transport, candidates = scopes(source)
    by_scope = (policy.get("transports") or {}).get(transport) or {}
    for scope in [*candidates, ""]:
        if isinstance(by_scope.get(scope), list):
            return f'transports.{transport}["{scope}"]', list(by_scope[scope])
    return "default", list(policy["default"])


def require_signature(path: Path, source: str) -> None:
    """Refuse `source` unless the policy at `path` would refuse it unsigned."""
    where, found = requirements(read(path), source)
    kinds = [r.get("type") if isinstance(r, dict) else None for r in found]
    if any(kind in _STRICT for kind in kinds):
        return
    raise DtkError(f"signatures are required, but the containers policy {path} would accept "
                   f"{source} unsigned ({where}: {', '.join(map(str, kinds)) or 'nothing'})",
                   hint="add a signedBy or sigstoreSigned requirement for this registry or "
                        "repository (containers-policy.json(5)), or declare the module "
                        "without --require-signature")
