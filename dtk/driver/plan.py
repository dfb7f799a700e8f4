"""The build matrix as a pure plan: one cell per (module source, kernel).

A cell names everything its image depends on: the source's content digest, the
toolkit's image id, the final-stage base, the exact build args and dtk's own
recipe. `input_hash` is the sha256 of all of it; an existing image whose label
carries the same hash is a cache hit and nothing is compiled.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from dtk import kernel as kern
from dtk.digest import inputs_digest, keyed_digest, parts_digest
from dtk.driver import dkmscell, dkmsconf
from dtk.driver.naming import image_name
from dtk.driver.outcome import Layout
from dtk.driver.sources import BrokenSource, ContainerfileSource, DkmsGroup, Source
from dtk.errors import DtkError

# Bumped when the way dtk turns inputs into an image changes, so old images
# stop counting as cache hits.
RECIPE = "dtk-build/1"
LABEL_PREFIX = "dtk.build."
HASH_LABEL = LABEL_PREFIX + "input-hash"
KIND_LABEL = LABEL_PREFIX + "kind"  # "driver": what `dtk build prune` may remove


@dataclass(frozen=True)
class ImageRef:
    """A local image the cell builds on: toolkit or final-stage base.

    `content_key`, when set, is what a cell's key covers instead of the image id: a
    hash of every input of an image that each machine makes for itself (a toolkit
    plus a package's dependencies), so that its cells have the same key everywhere."""

    name: str
    image_id: str
    content_key: str = ""

    @property
    def identity(self) -> str:
        return self.content_key or self.image_id


@dataclass(frozen=True)
class BuildSecret:
    """A build secret: RUN steps see file /run/secrets/<name>/<key> for each key (as KMM
    mounts a Secret). Its values never reach a layer, a log, a label or a repr."""

    name: str
    files: tuple[tuple[str, bytes], ...] = field(repr=False)

    def __repr__(self) -> str:
        return f"BuildSecret(name={self.name!r}, keys={[k for k, _ in self.files]})"

    def values(self) -> list[str]:
        return [v.decode(errors="replace") for _, v in self.files]


def secrets_digest(secrets: Sequence[BuildSecret], key: bytes) -> str:
    """What the cache key holds of the secrets: a keyed digest (see `dtk.digest.keyed_digest`),
    never the values and nothing a guess could be checked against."""
    return keyed_digest(key, *(part for s in secrets for k, v in s.files
                               for part in (s.name, k, v)))


@dataclass(frozen=True)
class BuildOptions:
    image_template: str
    mod_namespace: str = "default"
    mod_name: str | None = None  # overrides each source's own name (one source only)
    build_args: tuple[tuple[str, str], ...] = ()
    push: bool = False
    secrets: tuple[BuildSecret, ...] = ()
    secrets_key: bytes = field(default=b"", repr=False)  # the host's key for their digest
    labels: tuple[tuple[str, str], ...] = ()  # extra labels, part of the cache key
    pull_tls_verify: bool | None = None  # FROM pulls; None: dtk's rule (loopback unverified)
    force: bool = False  # build even when an image with the same inputs exists
    layout: Layout = field(default_factory=Layout)  # what the built image is checked for


@dataclass(frozen=True)
class Cell:
    """One driver image to build: a module source for one kernel."""

    source: Source
    kernel: str
    image: str
    toolkit: ImageRef | None
    base: ImageRef | None
    build_args: tuple[tuple[str, str], ...]
    input_hash: str
    error: str | None = None  # known before any work: unknown kernel, unreadable source
    push: bool = False
    secrets: tuple[BuildSecret, ...] = ()
    extra_labels: tuple[tuple[str, str], ...] = ()
    pull_tls_verify: bool | None = None
    force: bool = False
    layout: Layout = field(default_factory=Layout)

    @property
    def module(self) -> str:
        return self.source.name

    @property
    def key(self) -> str:
        return f"{self.module}@{self.kernel}"

    def labels(self) -> dict[str, str]:
        """Labels every driver image gets; module names/versions are added when known."""
        out = {KIND_LABEL: "driver", HASH_LABEL: self.input_hash,
               LABEL_PREFIX + "kernel": self.kernel,
               LABEL_PREFIX + "source-digest": source_digest(self.source),
               **dict(self.extra_labels)}
        if self.toolkit:
            out[LABEL_PREFIX + "toolkit"] = self.toolkit.name
            out[LABEL_PREFIX + "toolkit-digest"] = self.toolkit.image_id
        return out


@dataclass(frozen=True)
class Matrix:
    cells: tuple[Cell, ...]


def source_digest(source: Source) -> str:
    if isinstance(source, BrokenSource):
        return ""
    return source.digest


def build_args_for(source: ContainerfileSource | DkmsGroup, release: str, mod_name: str,
                   options: BuildOptions, *, toolkit: ImageRef | None,
                   base: ImageRef | None) -> dict[str, str]:
    """User args, then KMM's (which win on conflict, as in KMM's buildargoverrider)."""
    args = dict(options.build_args)
    args.update(kern.kmm_build_args(release, mod_name, options.mod_namespace))
    text = source.text if isinstance(source, ContainerfileSource) else ""
    # As in KMM midstream: DTK_AUTO is only added when the Containerfile uses it.
    if toolkit and "DTK_AUTO" in text:
        args["DTK_AUTO"] = toolkit.name
    if base and "DTK_BASE" in text:
        args["DTK_BASE"] = base.name
    return args


def cell_hash(source: Source, release: str, args: Mapping[str, str],
              toolkit: ImageRef | None, base: ImageRef | None, *,
              options: BuildOptions | None = None) -> str:
    inputs: dict[str, object] = {
        "recipe": RECIPE, "kernel": release, "source": source_digest(source),
        "kind": type(source).__name__, "args": dict(sorted(args.items())),
        "toolkit": toolkit.identity if toolkit else None,
        "base": base.image_id if base else None,
    }
    if options is not None and options.secrets:
        # Keyed by this host's key: a cell with secrets is shared by no two hosts.
        inputs["secrets"] = secrets_digest(options.secrets, options.secrets_key)
    if options is not None and (options.secrets or options.labels):
        inputs["labels"] = dict(options.labels)
    if options is not None and options.layout != Layout():  # a cached image met another check
        inputs["layout"] = [options.layout.dir_name, *options.layout.tools]
    if isinstance(source, DkmsGroup):
        # The evaluation script and dkms's recipe are part of how the image is made.
        inputs["dkms-eval"] = parts_digest(dkmsconf.eval_script())
        inputs["dkms-cell"] = parts_digest(dkmscell.cell_script())
    return inputs_digest(inputs)


def plan_matrix(sources: Sequence[Source], kernels: Sequence[str],
                toolkits: Mapping[str, ImageRef | str], base: ImageRef | None,
                options: BuildOptions, *,
                extras: Mapping[tuple[str, str], ImageRef | str] | None = None) -> Matrix:
    """Every (source, kernel) cell; `toolkits` maps a kernel to its toolkit or an error,
    `extras` a (source name, kernel) to a toolkit with the source's dependencies added."""
    if options.mod_name and len(sources) > 1:
        raise DtkError("--mod-name names one module, but several sources were given",
                       hint="leave --mod-name out: each source is named after itself")
    cells = []
    for source in sources:
        mod_name = options.mod_name or source.name
        for release in kernels:
            toolkit = (extras or {}).get((source.name, release)) or toolkits.get(release)
            cells.append(_plan_cell(source, release, mod_name, toolkit=toolkit,
                                    base=base, options=options))
    _check_unique(cells)
    return Matrix(tuple(cells))


def _plan_cell(source: Source, release: str, mod_name: str, *,
               toolkit: ImageRef | str | None, base: ImageRef | None,
               options: BuildOptions) -> Cell:
    image = image_name(options.image_template, release, mod_name, options.mod_namespace)
    error = source.error if isinstance(source, BrokenSource) else None
    if isinstance(toolkit, str):
        error = error or toolkit
        toolkit = None
    elif toolkit is None:
        error = error or f"no toolkit for kernel {release}"
    if isinstance(source, BrokenSource) or toolkit is None:
        return Cell(source, release, image, toolkit, base, (), "", error, options.push,
                    options.secrets, options.labels, options.pull_tls_verify, options.force,
                    options.layout)
    uses_base = isinstance(source, DkmsGroup) or "DTK_BASE" in source.text
    cell_base = base if uses_base else None
    args = build_args_for(source, release, mod_name, options, toolkit=toolkit, base=cell_base)
    digest = cell_hash(source, release, args, toolkit, cell_base, options=options)
    return Cell(source, release, image, toolkit, cell_base, tuple(sorted(args.items())),
                digest, None, options.push, options.secrets, options.labels,
                options.pull_tls_verify, options.force, options.layout)


def _check_unique(cells: Sequence[Cell]) -> None:
    seen: dict[str, str] = {}
    for cell in cells:
        other = seen.setdefault(cell.image, cell.key)
        if other != cell.key:
            raise DtkError(f"{other} and {cell.key} would both be tagged {cell.image}",
                           hint="put ${MOD_NAME} and ${KERNEL_FULL_VERSION} in --image")
