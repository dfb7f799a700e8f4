"""Where kernel K's files are on this machine: the toolkit image that holds K, or,
for a kernel without one, its packages from the archive.

Features that need K's files (`dtk check`'s kernel facts, the VM's kernel)
ask here, so that "which toolkit holds K" has one answer everywhere: K's own
toolkit, or its standard sibling's, which carries the RT kernel too.
"""

from __future__ import annotations

from dataclasses import replace

from dtk import kernel as kern
from dtk.engine import buildah
from dtk.errors import DtkError
from dtk.kernel import facts
from dtk.kernel.facts import KernelFacts
from dtk.toolkit import headers
from dtk.toolkit.plan import TOOLKIT_REPO


def toolkit_candidates(release: str) -> list[str]:
    """Toolkit image names that may hold `release`: its own, then its standard sibling's.

    A toolkit carries the RT sibling of its kernel, so an RT kernel is usually
    found in the standard kernel's toolkit.
    """
    names = [f"{TOOLKIT_REPO}:{kern.normalize(release)}"]
    standard = kern.standard_sibling(release)
    if standard is not None:
        names.append(f"{TOOLKIT_REPO}:{kern.normalize(standard)}")
    return names


def find_toolkit(release: str) -> tuple[str, str]:
    """(image name, image id) of a local toolkit holding `release`."""
    for name in toolkit_candidates(release):
        try:
            data = buildah.inspect(name)
        except DtkError:
            continue
        labels = data.get("OCIv1", {}).get("config", {}).get("Labels") or {}
        held = set(str(labels.get("dtk.kernels", "")).split(","))
        held |= {labels.get("kernel-version", ""), labels.get("kernel-rt-version", "")}
        if release in held:
            return name, str(data["FromImageID"])
    raise DtkError(f"no toolkit image holds kernel {release}",
                   hint=f"build it with 'dtk toolkit build --kernel {release}', or pass "
                        "--kernel-root DIR for a directory that has its headers")


def image_key(image_id: str, release: str) -> str:
    return f"image-{image_id[:32]}-{kern.normalize(release)}"


def kernel_facts(release: str, *, download: bool = True) -> KernelFacts:
    """K's facts from its toolkit image (cached by the image's id), or else, when
    `download` allows, from K's headers package (see headers.py)."""
    try:
        name, image_id = find_toolkit(release)
    except DtkError:
        if not download:
            raise
        return facts.for_directory(headers.headers_root(release), release,
                                   source=f"linux-headers-{release} (no toolkit)")
    key = image_key(image_id, release)
    found = facts.load_cached(key)
    if found is None:
        with buildah.working_container(name) as ctr, ctr.mounted() as root:
            found = facts.from_root(root, release, f"{name} ({image_id[:12]})")
        facts.store(key, found)
    return replace(found, image=name, image_id=image_id)
