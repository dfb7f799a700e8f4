"""Driver containers: one image per module and kernel, built on that kernel's toolkit.

Owns: module sources (`sources`: Containerfiles, DKMS trees, Debian `*-dkms`
packages; `dkmsconf`), the build matrix (`plan`, `naming`: pure, with a
content hash of every input), and its executors (`containerfile`, `dkms`,
`dkmscell`, `extras`, `matrix`, `base`, `outcome`, `prune`), which run
buildah and skopeo through `dtk.engine`.

May import: dtk.toolkit, dtk.distro, dtk.engine, dtk.kernel and dtk's base;
never another feature (kmod, vm).
"""
