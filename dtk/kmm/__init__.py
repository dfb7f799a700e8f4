"""`dtk module`: what KMM would do for a Module, done ahead of time.

The Module API itself (reading, admission rules, merges, kernelMappings) is
`dtk.kmmapi`, one floor down, shared with `dtk.node`. This package owns:

* `state`    — whether each planned image exists, as ModuleImagesConfig records it
  (the only part that runs tools: buildah and skopeo through `dtk.engine`);
* `render`   — the Module rewritten for the cluster with digest-pinned images;
* `build`    — the executing half: every image the plan needs, built on the
  driver matrix, signed from the Module's Secrets, pushed with its imageRepoSecret;
* `vmtest`   — each kernel booted, its image loaded as the Module's modprobe says;
* `preflight`— KMM's PreflightValidation for a next kernel, plus check and boot.

`dtk.kmm` is a workflow: it may import the features (`dtk.driver`, `dtk.kmod`,
`dtk.vm`), `dtk.toolkit`, `dtk.distro`, `dtk.engine`, `dtk.kernel` and the
base; no feature imports it. The pure modules (render, `vmtest.guest_config`)
run no tool.
"""
