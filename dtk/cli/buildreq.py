"""What `dtk build` and `dtk prove` are asked to build: their shared options, the request
they make, and what is refused before any work."""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import click

from dtk import kernel as kern
from dtk.cli.common import sources_option
from dtk.distro.debian import DebianArchive
from dtk.distro.query import parse_query, query_kernels, read_kernel_file
from dtk.distro.select import open_archive
from dtk.driver import sources as src
from dtk.driver.naming import DEFAULT_TEMPLATE, image_name
from dtk.driver.plan import BuildOptions
from dtk.driver.remotecache import RegistryCache, check_repo
from dtk.driver.shard import Shard, parse_shard
from dtk.errors import DtkError
from dtk.progress import Monitor


def parse_build_args(pairs: tuple[str, ...]) -> tuple[tuple[str, str], ...]:
    out = []
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", key):
            raise DtkError(f"--build-arg '{pair}' is not KEY=VALUE")
        out.append((key, value))
    return tuple(out)


def _kernel_list(kernel: tuple[str, ...], query: str | None,
                 archive: DebianArchive) -> list[str]:
    wanted = list(kernel) + (query_kernels(query, archive.kernels()) if query else [])
    if not wanted:
        raise DtkError("no kernel given", hint="pass --kernel RELEASE (repeatable) or "
                       "--kernels QUERY, e.g. --kernels 6.1,latest")
    return list(dict.fromkeys(wanted))


def _containerfile_sources(files: tuple[Path, ...], context: Path | None,
                           dkms: tuple[str, ...], mod_name: str | None) -> list[src.Source]:
    """(`refuse_at_once` has checked the combination.)"""
    return [src.containerfile_source(f, context, mod_name if len(files) == 1 and not dkms
                                     else None) for f in files]


_BUILD_INPUTS = (
    click.option("-f", "--file", "files", multiple=True, type=click.Path(path_type=Path),
                 help="KMM-style Containerfile (repeatable); DTK_AUTO, KERNEL_FULL_VERSION, "
                      "MOD_NAME… are injected as build args."),
    click.option("--context", type=click.Path(path_type=Path, file_okay=False), default=None,
                 help="Build context (default: the Containerfile's directory)."),
    click.option("--dkms", multiple=True, metavar="SRC",
                 help="DKMS source tree (with dkms.conf) or a Debian *-dkms package "
                      "(repeatable)."),
    click.option("--kernel", "kernel", multiple=True, metavar="RELEASE",
                 help="Kernel release as `uname -r` prints it (repeatable)."),
    click.option("--kernels", "query", default=None, metavar="QUERY|@FILE",
                 help="Kernels from the catalog: e.g. 'rt,latest', '6.1,standard', or @file."),
    click.option("--build-arg", "build_args", multiple=True, metavar="KEY=VALUE",
                 help="Extra build arg; KMM's own names win on conflict, as in KMM."),
    click.option("--image", "template", default=DEFAULT_TEMPLATE, show_default=True,
                 help="Image name template with KMM's variables."),
    click.option("--mod-name", default=None, help="MOD_NAME (default: the source's name)."),
    click.option("--mod-namespace", default="default", show_default=True,
                 help="MOD_NAMESPACE."),
    click.option("-j", "--jobs", type=click.IntRange(1), default=None,
                 help="Cells built at once (default: number of cores)."),
    click.option("--rebuild", is_flag=True,
                 help="Build every cell again: no cache hit, no remembered DKMS failure."),
    click.option("--shard", default=None, metavar="I/N",
                 help="Only the cells of part I of N: the same deterministic split on "
                      "every machine (balanced by source size)."),
    click.option("--cache", default=None, metavar="REGISTRY/REPO",
                 help="A registry repository every machine shares: cells found there under "
                      "their input hash are taken, not built; built cells are stored there."),
    sources_option,
)


def build_input_options(func: Callable[..., None]) -> Callable[..., None]:
    """What to build for which kernels: the options `dtk build` and `dtk prove` share."""
    for option in reversed(_BUILD_INPUTS):
        func = option(func)
    return func


@dataclass(frozen=True)
class BuildRequest:
    """The values of build_input_options (and, for dtk build, what to push)."""

    files: tuple[Path, ...]
    context: Path | None
    dkms: tuple[str, ...]
    kernel: tuple[str, ...]
    query: str | None
    build_args: tuple[str, ...]
    template: str
    mod_name: str | None
    mod_namespace: str
    jobs: int | None
    sources: Path | None
    rebuild: bool = False
    shard: str | None = None
    cache: str | None = None
    push: bool = False
    tls_verify: bool | None = None
    authfile: Path | None = None

    @property
    def options(self) -> BuildOptions:
        return BuildOptions(self.template, self.mod_namespace, self.mod_name,
                            parse_build_args(self.build_args), self.push,
                            pull_tls_verify=self.tls_verify,  # FROM pulls too
                            force=self.rebuild)

    def __post_init__(self) -> None:
        self.part  # noqa: B018 -- a bad --shard is refused before any work
        if self.cache:
            check_repo(self.cache)

    @property
    def part(self) -> Shard | None:
        return parse_shard(self.shard) if self.shard else None

    def registry_cache(self, mon: Monitor) -> RegistryCache | None:
        if not self.cache:
            return None
        return RegistryCache(check_repo(self.cache), mon.step, self.tls_verify, self.authfile,
                             progress=mon.step)

    def archive_and_kernels(self) -> tuple[DebianArchive, list[str]]:
        archive = open_archive(self.sources)
        return archive, _kernel_list(self.kernel, self.query, archive)


def sources_of(request: BuildRequest) -> list[src.Source]:
    """The Containerfile sources (DKMS ones are resolved with a toolkit, later)."""
    return _containerfile_sources(request.files, request.context, request.dkms,
                                  request.mod_name)


# A release of the form every kernel the archive has takes: image templates are checked
# with it when the kernels are not given one by one (a query is read by the workers).
_SAMPLE_KERNEL = "6.1.0-1-amd64"


def refuse_at_once(request: BuildRequest, *, local: bool = True,
                   needs_sources: bool = True) -> None:
    """What `dtk build` refuses before any work, knowing no archive, toolkit or
    network: `dtk render job` refuses the arguments it renders by this same check
    (`local=False`: the files the arguments name are the workers', not read here);
    `dtk prove` too (`needs_sources=False`: without sources it proves built images)."""
    for release in request.kernel:  # "did you mean" for a tag-form kernel
        kern.parse(release)
    if not request.kernel and not request.query:
        raise DtkError("no kernel given", hint="pass --kernel RELEASE (repeatable) or "
                       "--kernels QUERY, e.g. --kernels 6.1,latest")
    if request.query and not request.query.startswith("@"):
        parse_query(request.query)
    elif request.query and local:
        read_kernel_file(Path(request.query[1:]))
    if needs_sources and not request.files and not request.dkms:
        raise DtkError("nothing to build", hint="pass -f Containerfile and/or --dkms SRC")
    if request.context and len(request.files) > 1:
        raise DtkError("--context applies to a single -f Containerfile")
    if request.mod_name and len(request.files) + len(request.dkms) > 1:
        raise DtkError("--mod-name names one module, but several sources were given",
                       hint="leave --mod-name out: each source is named after itself")
    for release in request.kernel or (_SAMPLE_KERNEL,):  # the template's ${, its names
        image_name(request.template, release, request.mod_name or "module",
                   request.mod_namespace)
    request.options  # noqa: B018 -- --build-arg KEY=VALUE
    if request.push and request.template.startswith("localhost/"):
        raise DtkError("--push needs a registry in --image",
                       hint="e.g. --image "
                            "127.0.0.1:5000/drivers/${MOD_NAME}:${KERNEL_FULL_VERSION}")
