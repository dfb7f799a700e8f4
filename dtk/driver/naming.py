"""Driver image names: a template with KMM's variable substitution."""

from __future__ import annotations

import re

from dtk import kernel as kern
from dtk.errors import DtkError

# KMM's own convention: one image per kernel, tagged with the normalised release.
DEFAULT_TEMPLATE = "localhost/dtk-driver/${MOD_NAME}:${KERNEL_FULL_VERSION}"

# A reference as container tools accept it: lowercase repository path, tag of
# [A-Za-z0-9_.-] (KMM's normalisation makes any kernel release fit).
_REFERENCE = re.compile(
    r"^(?P<repo>[a-z0-9]+(?:[._-]+[a-z0-9]+)*(?::\d+)?(?:/[a-z0-9]+(?:[._-]+[a-z0-9]+)*)*)"
    r":(?P<tag>[A-Za-z0-9_][A-Za-z0-9_.-]{0,127})$"
)


def image_name(template: str, release: str, mod_name: str, mod_namespace: str) -> str:
    """Substitute KMM's variables (kernel ones normalised) and check the result."""
    variables = kern.kmm_variables(release)
    variables["MOD_NAME"] = mod_name
    variables["MOD_NAMESPACE"] = mod_namespace
    name = kern.substitute(template, variables)
    if ":" not in name.rsplit("/", 1)[-1]:
        name += ":" + variables["KERNEL_FULL_VERSION"]
    if not _REFERENCE.match(name):
        raise DtkError(
            f"image template '{template}' gives '{name}' for kernel {release}, "
            "which is not a valid image reference",
            hint="use lowercase names, and a tag such as ${KERNEL_FULL_VERSION}, e.g. "
                 + DEFAULT_TEMPLATE)
    return name


def module_slug(name: str) -> str:
    """A package or directory name made fit for an image repository path."""
    slug = re.sub(r"[^a-z0-9._-]+", "-", name.lower()).strip("-._")
    return slug or "module"
