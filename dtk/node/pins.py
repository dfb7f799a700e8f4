"""Registry digests pinned per declaration, in /var/lib/dtk/pins.json.

The first fetch of a registry image for a declaration records the digest the
tag named then; later fetches ask for that digest, so a tag moved in the
registry does not change what a host loads behind its owner's back. Pins
belong to a declaration: `add --replace` and `remove` drop that name's pins,
and `prepare --refresh` asks the registry again (and says when a tag moved).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from dtk.files import write_atomic
from dtk.node.layout import Layout


@dataclass(frozen=True)
class Pin:
    digest: str
    pinned_at: str  # ISO 8601, UTC


def _read(layout: Layout) -> dict[str, dict[str, Pin]]:
    try:
        data: Any = json.loads(layout.pins.read_text())
    except (OSError, ValueError):
        return {}  # none yet, or torn by hand: pinned again on the next fetch
    out: dict[str, dict[str, Pin]] = {}
    for name, images in (data.items() if isinstance(data, dict) else ()):
        if not isinstance(images, dict):
            continue
        out[str(name)] = {str(image): Pin(str(pin.get("digest", "")),
                                          str(pin.get("pinned_at", "")))
                          for image, pin in images.items()
                          if isinstance(pin, dict) and pin.get("digest")}
    return out


def _write(layout: Layout, pins: dict[str, dict[str, Pin]]) -> None:
    data = {name: {image: {"digest": p.digest, "pinned_at": p.pinned_at}
                   for image, p in sorted(images.items())}
            for name, images in sorted(pins.items()) if images}
    write_atomic(layout.pins, json.dumps(data, indent=2).encode())


def get(layout: Layout, name: str, image: str) -> Pin | None:
    return _read(layout).get(name, {}).get(image)


def put(layout: Layout, name: str, image: str, digest: str) -> Pin:
    """Pin `image` for `name` at `digest` (kept as it was if already so pinned)."""
    pins = _read(layout)
    known = pins.get(name, {}).get(image)
    if known is not None and known.digest == digest:
        return known
    pin = Pin(digest, datetime.now(UTC).isoformat(timespec="seconds"))
    pins.setdefault(name, {})[image] = pin
    _write(layout, pins)
    return pin


def drop(layout: Layout, name: str) -> None:
    pins = _read(layout)
    if name in pins:
        del pins[name]
        _write(layout, pins)
