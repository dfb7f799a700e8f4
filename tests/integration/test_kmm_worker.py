"""KMM's worker as it is in 2026, emulated by `dtk module vmtest` on real kernels:
unload as one `modprobe -r` over modulesLoadingOrder without softdeps (KMM f17d16d).

The modules are built by `dtk module build` from small C sources in the Module's own
Dockerfile, on the kernel's toolkit."""

from __future__ import annotations

import json
import secrets
from pathlib import Path
from typing import Any

import pytest

from dtk.engine import buildah
from tests.integration import kmm_docs as docs
from tests.unit.kmm_support import dtk

pytestmark = pytest.mark.integration

# a needs b by symbol (a hard dependency depmod records); c stands alone. KMM's own
# scenario in f17d16d: modulesLoadingOrder [a, b, c].
ABC_DOCKERFILE = r"""ARG DTK_AUTO
ARG DTK_BASE
FROM ${DTK_AUTO} AS builder
ARG KERNEL_FULL_VERSION
WORKDIR /src
RUN printf '%s\n' '#include <linux/module.h>' 'MODULE_LICENSE("GPL");' \
      'int kmm_ul_b_value(void) { return 42; }' 'EXPORT_SYMBOL(kmm_ul_b_value);' \
      'static int __init b_init(void) { return 0; }' 'static void __exit b_exit(void) {}' \
      'module_init(b_init);' 'module_exit(b_exit);' > kmm_ul_b.c \
 && printf '%s\n' '#include <linux/module.h>' 'MODULE_LICENSE("GPL");' \
      'int kmm_ul_b_value(void);' \
      'static int __init a_init(void) { return kmm_ul_b_value() == 42 ? 0 : -EINVAL; }' \
      'static void __exit a_exit(void) {}' 'module_init(a_init);' 'module_exit(a_exit);' \
      > kmm_ul_a.c \
 && sed -e 's/a_init/c_init/g; s/a_exit/c_exit/g' -e 's/kmm_ul_b_value() == 42 ? 0 : -EINVAL/0/' \
      -e '/int kmm_ul_b_value(void);/d' kmm_ul_a.c > kmm_ul_c.c \
 && printf 'obj-m := kmm_ul_a.o kmm_ul_b.o kmm_ul_c.o\n' > Makefile \
 && make -C /usr/src/linux-headers-${KERNEL_FULL_VERSION} M=/src modules
FROM ${DTK_BASE}
ARG KERNEL_FULL_VERSION
COPY --from=builder /src/*.ko /opt/lib/modules/${KERNEL_FULL_VERSION}/
RUN depmod -b /opt ${KERNEL_FULL_VERSION}
"""


def _run(*args: str) -> tuple[int, Any]:
    with pytest.MonkeyPatch.context() as mp:
        code, text = dtk(mp, *args)
    start = text.find("\n[") + 1 if not text.startswith(("[", "{")) else 0
    start = text.find("\n{") + 1 if start == 0 and not text.startswith(("[", "{")) else start
    return code, json.JSONDecoder().raw_decode(text[start:])[0]


def test_unload_takes_every_module_of_the_loading_order(
        tmp_path: Path, kernel_61: str, toolkit_61: Any) -> None:
    """Loading a loads c, b, a (the softdeps); unloading is `modprobe -rvd /opt a b c`
    with no softdep file: removing a takes b along (a's hard dependency), and c is still
    removed. With the softdeps still in place, kmod stopped at b and left c loaded."""
    del toolkit_61
    image = f"localhost/kmmt-{secrets.token_hex(4)}/abc:{kernel_61}"
    module = docs.module("abc", [{"literal": kernel_61, "containerImage": image}],
                         build={"dockerfileConfigMap": {"name": "df"}})
    module["spec"]["moduleLoader"]["container"]["modprobe"] = {
        "moduleName": "kmm_ul_a", "modulesLoadingOrder": ["kmm_ul_a", "kmm_ul_b", "kmm_ul_c"]}
    files = docs.write(tmp_path / "m.yaml", module, docs.configmap("df", ABC_DOCKERFILE))
    try:
        code, data = _run("module", "build", "-f", str(files), "--kernel", kernel_61, "--json")
        assert code == 0, data
        code, data = _run("module", "vmtest", "-f", str(files), "--kernel", kernel_61,
                          "--json", "--check", "cut -d' ' -f1 /proc/modules")
        (r,) = data
        loaded = set(r["check_output"].split())
        assert {"kmm_ul_a", "kmm_ul_b", "kmm_ul_c"} <= loaded, r  # c, b, a: the softdeps
        assert (code, r["verdict"]) == (0, "loaded"), r
        # modprobe -v says what it removes: all three, c too.
        removed = {line.split()[-1] for line in r["unload_output"].splitlines()
                   if line.startswith("rmmod ")}
        assert removed >= {"kmm_ul_a", "kmm_ul_b", "kmm_ul_c"}, r["unload_output"]
    finally:
        buildah.remove_image(image)


# In-tree dependencies, KMM's two documented image layouts, on Debian's v4l2loopback-dkms
# (its module needs videodev, an in-tree module). The source comes from the archive's
# package, in an image the Dockerfile copies from (KMM builds have no context).
_V4L2_BUILD = r"""ARG DTK_AUTO
ARG DTK_BASE
ARG SRC
FROM ${SRC} AS source
FROM ${DTK_AUTO} AS builder
ARG KERNEL_FULL_VERSION
COPY --from=source /src /src
RUN make -C /usr/src/linux-headers-${KERNEL_FULL_VERSION} M=/src modules
FROM ${DTK_BASE}
ARG KERNEL_FULL_VERSION
"""
# Upstream (KMM d8e8410): build pods mount the node's /lib/modules at /host/lib/modules.
UPSTREAM = _V4L2_BUILD + r"""COPY --from=builder /src/v4l2loopback.ko \
     /opt/lib/modules/${KERNEL_FULL_VERSION}/
RUN ln -s /host/lib/modules/${KERNEL_FULL_VERSION} \
      /opt/lib/modules/${KERNEL_FULL_VERSION}/host
RUN depmod -b /opt ${KERNEL_FULL_VERSION}
"""
# Midstream (61821fde): the kernel's modules copied from the toolkit into the final stage.
MIDSTREAM = _V4L2_BUILD + r"""COPY --from=builder /lib/modules/${KERNEL_FULL_VERSION} \
     /lib/modules/${KERNEL_FULL_VERSION}
COPY --from=builder /src/v4l2loopback.ko /opt/lib/modules/${KERNEL_FULL_VERSION}/
RUN ln -s /lib/modules/${KERNEL_FULL_VERSION} /opt/lib/modules/${KERNEL_FULL_VERSION}/host
RUN depmod -b /opt ${KERNEL_FULL_VERSION}
"""


@pytest.fixture(scope="module")
def v4l2_source(tmp_path_factory: pytest.TempPathFactory, archive: Any) -> Any:
    """localhost/…/v4l2src:1 holding the package's module source at /src."""
    from dtk.distro import debfile  # noqa: PLC0415 (only this fixture needs it)
    tmp = tmp_path_factory.mktemp("v4l2src")
    debfile.fetch_unpacked(archive.index, ["v4l2loopback-dkms"], tmp / "root", tmp / "debs")
    (src,) = (tmp / "root" / "usr" / "src").glob("v4l2loopback-*")
    image = f"localhost/kmmt-{secrets.token_hex(4)}/v4l2src:1"
    with buildah.working_container("scratch") as ctr:
        ctr.copy_in(src, "/src")
        ctr.commit(image)
    try:
        yield image
    finally:
        buildah.remove_image(image)


@pytest.mark.parametrize("layout", ["upstream", "midstream"])
def test_in_tree_dependency_layouts_build_check_and_load(
        tmp_path: Path, kernel_61: str, toolkit_61: Any, v4l2_source: str,
        layout: str) -> None:
    """Both layouts validate, plan and build (the upstream one needs the /host/lib/modules
    mount KMM's build pods have), `dtk check` follows the recorded videodev path through
    the `host` link, and the worker emulation loads v4l2loopback with videodev from the
    node's tree."""
    del toolkit_61
    image = f"localhost/kmmt-{secrets.token_hex(4)}/v4l2-{layout}:{kernel_61}"
    dockerfile = UPSTREAM if layout == "upstream" else MIDSTREAM
    module = docs.module(f"v4l2-{layout}", [{"literal": kernel_61, "containerImage": image}],
                         build={"dockerfileConfigMap": {"name": "df"},
                                "buildArgs": [{"name": "SRC", "value": v4l2_source}]})
    module["spec"]["moduleLoader"]["container"]["modprobe"] = {"moduleName": "v4l2loopback"}
    files = docs.write(tmp_path / "m.yaml", module, docs.configmap("df", dockerfile))
    with pytest.MonkeyPatch.context() as mp:
        code, text = dtk(mp, "module", "validate", "-f", str(files))
    assert code == 0, text
    code, data = _run("module", "plan", "-f", str(files), "--kernel", kernel_61, "--json")
    assert (code, [s["state"] for s in data["states"]]) == (0, ["NeedsBuilding"]), data
    try:
        code, data = _run("module", "build", "-f", str(files), "--kernel", kernel_61, "--json")
        assert code == 0, data
        with pytest.MonkeyPatch.context() as mp:
            code, text = dtk(mp, "check", image, "--kernel", kernel_61, "--json")
        assert code == 0, text
        code, data = _run("module", "vmtest", "-f", str(files), "--kernel", kernel_61,
                          "--json", "--check", "cut -d' ' -f1 /proc/modules")
        (r,) = data
        assert (code, r["verdict"]) == (0, "loaded"), r
        assert {"v4l2loopback", "videodev"} <= set(r["check_output"].split()), r
    finally:
        buildah.remove_image(image)
