"""From what `dtk build` made, or images the user names, to the cells to prove. Pure
(the image ids are looked up by the caller)."""

from __future__ import annotations

from collections.abc import Callable, Sequence

from dtk.driver.naming import image_name
from dtk.driver.outcome import Outcome, Status
from dtk.errors import DtkError
from dtk.prove.model import Build, ProveCell


def cells_from_outcomes(outcomes: Sequence[Outcome], *, modules: tuple[str, ...] = (),
                        check: str = "") -> list[ProveCell]:
    """One cell per build outcome, in the matrix's order."""
    cells = []
    for o in outcomes:
        build = {Status.FAILED: Build.FAILED, Status.EXCLUDED: Build.EXCLUDED}.get(
            o.status, Build.CACHED if o.cached else Build.BUILT)
        cells.append(ProveCell(o.module, o.kernel, o.image, build, o.image_id, o.reason,
                               o.tail, o.log, modules=modules, check=check))
    return cells


def cells_for_images(template: str, kernels: Sequence[str], image_id: Callable[[str], str],
                     *, mod_name: str | None, mod_namespace: str = "default",
                     built_for: str = "", modules: tuple[str, ...] = (),
                     check: str = "") -> list[ProveCell]:
    """Already-built images: `template` for each kernel (or, with `built_for`, the
    image for that kernel on every kernel). `image_id` returns '' for a missing image."""
    if "${MOD_NAME}" in template and not mod_name:
        raise DtkError("--image names ${MOD_NAME}, but which module is it?",
                       hint="pass --mod-name NAME, or an --image without ${MOD_NAME}")
    row = mod_name or template.rsplit("/", 1)[-1].split(":", 1)[0]
    cells = []
    for release in kernels:
        image = image_name(template, built_for or release, mod_name or row, mod_namespace)
        found = image_id(image)
        cells.append(ProveCell(row, release, image, Build.GIVEN if found else Build.FAILED,
                               found, "" if found else f"image {image} is not in local "
                               "container storage", built_for=built_for,
                               modules=modules, check=check))
    return cells
