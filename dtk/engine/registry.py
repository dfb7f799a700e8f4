"""Registries, as every dtk command sees them: which registry an image names, whether
its TLS is verified by default, and what a registry's refusal means.

One rule for every command: TLS is verified unless the user turns it off
(`--no-tls-verify`, a Module's `registryTLS`) or the registry is a loopback one
(127.0.0.0/8, ::1, or the name `localhost` exactly) — those serve plain HTTP by
nature. Errors are read from skopeo's answer by what it says (the registry's
error codes, an HTTP status, a refused connection), never by a digit that might
be part of a port or a tag, and each becomes one line of cause and one of fix.
"""

from __future__ import annotations

import enum
import ipaddress
import json
import re
import tomllib
from collections.abc import Iterable
from dataclasses import dataclass

from dtk.errors import DtkError


@dataclass(frozen=True)
class Reference:
    """An image name split as the container tools split it."""

    registry: str | None  # HOST[:PORT] as written; None: a name only local storage has
    repository: str

    @property
    def host(self) -> str | None:
        """The registry's host without port or IPv6 brackets."""
        if self.registry is None:
            return None
        host = self.registry
        if host.startswith("["):
            return host[1:].split("]", 1)[0]
        return host.rsplit(":", 1)[0] if host.count(":") == 1 else host

    @property
    def loopback(self) -> bool:
        return self.host is not None and is_loopback(self.host)


def parse(image: str) -> Reference:
    """Split `image` (with or without docker://) into registry and repository.

    The first path component names a registry when it has a dot or a port, or is
    `[…]`; the bare name `localhost` is containers-storage's own prefix for
    images built here (podman and buildah tag them so), not a registry."""
    name = image.split("://", 1)[1] if "://" in image else image
    name = name.split("@", 1)[0]
    first, sep, rest = name.partition("/")
    if not sep or first == "localhost" or not ("." in first or ":" in first
                                               or first.startswith("[")):
        return Reference(None, _strip_tag(name))
    return Reference(first, _strip_tag(rest))


def _strip_tag(path: str) -> str:
    last = path.rsplit("/", 1)
    if ":" in last[-1]:
        last[-1] = last[-1].split(":", 1)[0]
    return "/".join(last)


def is_loopback(host: str) -> bool:
    """127.0.0.0/8, ::1 or `localhost` itself (not `localhost.example.com`)."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def tls_verify(image: str, explicit: bool | None = None) -> bool:
    """Whether to verify TLS for `image`: the user's choice if made, else dtk's rule."""
    if explicit is not None:
        return explicit
    return not parse(image).loopback


def loopback_registries(images: Iterable[str]) -> list[str]:
    """The loopback registries (HOST:PORT as written) `images` name, sorted."""
    return sorted({r.registry for r in map(parse, images) if r.registry and r.loopback})


def registries_conf(base: str, registries: Iterable[str]) -> str | None:
    """containers-registries.conf(5) text: `base` (the file the tools would read) with
    `insecure = true` for each of `registries` it does not list itself, which is dtk's
    rule for loopback registries in tools that only take one TLS setting for all
    (buildah's FROM pulls). None when `base` cannot be extended so: not TOML, or the
    old v1 format (which the v2 tables cannot join); the tools then apply their own."""
    try:
        data = tomllib.loads(base)
    except tomllib.TOMLDecodeError:
        return None
    if "registries" in data:
        return None
    listed = data.get("registry")
    known = {str(r.get("location") or r.get("prefix") or "")
             for r in listed if isinstance(r, dict)} if isinstance(listed, list) else set()
    added = "".join(f"\n[[registry]]\nlocation = {json.dumps(host)}\ninsecure = true\n"
                    for host in registries if host not in known)
    text = base.rstrip("\n") + "\n" + added
    try:
        tomllib.loads(text)  # an inline `registry = [...]` array cannot be extended
    except tomllib.TOMLDecodeError:
        return None
    return text


class Failure(enum.StrEnum):
    NOT_FOUND = "not found"
    UNAUTHORIZED = "unauthorized"
    UNREACHABLE = "unreachable"
    TLS_MISMATCH = "plain HTTP"
    TLS_CERT = "TLS certificate"
    TRANSIENT = "transient"
    OTHER = "other"


# Read from containers/image's error chain: the registry's error codes (docker
# distribution's errcode names, written "<code>: <message>"), an HTTP status as
# the library words it, Go's net errors. Never a bare number: "404" or "401" can
# be part of a port, a tag or a digest.
_STATUS = r"(?:status(?: code)?(?: from registry)?:?|statuscode:|http code:?|http status:?)\s*"
_PATTERNS: tuple[tuple[Failure, re.Pattern[str]], ...] = (
    (Failure.TLS_MISMATCH, re.compile(r"server gave http response to https client")),
    (Failure.TLS_CERT, re.compile(r"\bx509: |\btls: (?:failed|bad|handshake|first record)")),
    (Failure.UNREACHABLE, re.compile(
        r"connect: connection refused|no such host|connect: no route to host"
        r"|connect: network is unreachable|server misbehaving")),
    (Failure.UNAUTHORIZED, re.compile(
        r"\b(?:unauthorized|denied): |authentication required|invalid username/password"
        rf"|{_STATUS}40[13]\b|\b40[13] (?:unauthorized|forbidden)\b")),
    (Failure.NOT_FOUND, re.compile(
        rf"\b(?:manifest|name) unknown\b|{_STATUS}404\b|\b404 not found\b")),
    (Failure.TRANSIENT, re.compile(
        r"connection reset by peer|i/o timeout|unexpected eof|: eof\b|tls handshake timeout"
        rf"|too many requests|{_STATUS}(?:429|5\d\d)\b|\b(?:429|5\d\d) [a-z]")),
)


def classify(output: str) -> Failure:
    """What skopeo's answer says went wrong, by the first kind it names."""
    text = last_message(output).lower()
    for failure, pattern in _PATTERNS:
        if pattern.search(text):
            return failure
    return Failure.OTHER


_MSG = re.compile(r'msg="((?:[^"\\]|\\.)*)"')


def last_message(output: str) -> str:
    """skopeo's last error, unquoted from its `level=fatal msg="…"` log line (or the
    last line of output when it has no such line)."""
    lines = [line for line in output.strip().splitlines() if line.strip()]
    for line in reversed(lines):
        match = _MSG.search(line)
        if match and "level=info" not in line:
            return re.sub(r'\\(.)', r"\1", match.group(1))
    return lines[-1].strip() if lines else ""


class RegistryError(DtkError):
    """A registry refused or could not be reached: one line of cause, one of fix."""

    def __init__(self, failure: Failure, message: str, hint: str | None, detail: str) -> None:
        super().__init__(message, hint)
        self.failure = failure
        self.detail = detail  # skopeo's own words, for logs and -v


_CREDENTIALS = ("pass its credentials: --authfile FILE (or `skopeo login {host}`); for "
                "`dtk module`, the Module's imageRepoSecret (a kubernetes.io/dockerconfigjson "
                "Secret with an entry for {host})")


def error(image: str, output: str, doing: str) -> RegistryError:
    """The error for a failed registry operation on `image`; `doing` says what failed
    ("pushing X", "inspecting X")."""
    failure = classify(output)
    ref = parse(image)
    where = ref.registry or image
    detail = last_message(output)
    causes: dict[Failure, tuple[str, str | None]] = {
        Failure.UNREACHABLE: (f"the registry at {where} is not reachable ({_net_cause(detail)})",
                              "start the registry, or correct the host and port in the "
                              "image name"),
        Failure.TLS_MISMATCH: (f"the registry at {where} speaks plain HTTP, and TLS "
                               "verification is on",
                               "pass --no-tls-verify; for `dtk module`, set registryTLS."
                               "insecure: true in the Module"),
        Failure.TLS_CERT: (f"the TLS certificate of {where} is not trusted ({detail})",
                           "install the registry's CA, or pass --no-tls-verify; for `dtk "
                           "module`, set registryTLS.insecureSkipTLSVerify: true"),
        Failure.UNAUTHORIZED: (f"the registry at {where} refused the credentials "
                               "(unauthorized)", _CREDENTIALS.format(host=where)),
        Failure.NOT_FOUND: (f"{image} is not in its registry (manifest unknown)",
                            "check the image name and tag"),
        Failure.TRANSIENT: (f"the registry at {where} failed ({detail})",
                            "try again; the registry may be overloaded or restarting"),
        Failure.OTHER: (detail or "no output", None),
    }
    cause, hint = causes[failure]
    return RegistryError(failure, f"{doing} failed: {cause}", hint, detail)


def _net_cause(detail: str) -> str:
    for words in ("connection refused", "no such host", "no route to host",
                  "network is unreachable"):
        if words in detail.lower():
            return words
    return "network error"
