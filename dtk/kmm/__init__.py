"""KMM's Module API, read the way the cluster reads it: the pure half of `dtk module`.

This package owns:

* `model`    — frozen dataclasses for Module, ConfigMap and Secret documents;
* `load`     — manifests (files, directories, multi-document YAML) into a `Bundle`,
  strictly: unknown fields, wrong types and dangling references are errors
  naming the field path, as the API server and webhook would name them;
* `validate` — KMM's admission rules (webhook and CRD schema);
* `plan`     — which kernelMapping each kernel takes, its resolved image and
  merged build/sign specs and the build args KMM injects (pure, no I/O);
* `state`    — whether each planned image exists, as ModuleImagesConfig records it
  (the only part that runs tools: buildah and skopeo through `dtk.engine`);
* `render`   — the Module rewritten for the cluster with digest-pinned images;
* `build`    — the executing half: every image the plan needs, built on the
  driver matrix, signed from the Module's Secrets, pushed with its imageRepoSecret;
* `vmtest`   — each kernel booted, its image loaded as the Module's modprobe says;
* `preflight`— KMM's PreflightValidation for a next kernel, plus check and boot.

`dtk.kmm` is a workflow: it may import the features (`dtk.driver`, `dtk.kmod`,
`dtk.vm`), `dtk.toolkit`, `dtk.distro`, `dtk.engine`, `dtk.kernel` and the
base; no feature imports it. The pure modules (load, validate, plan, render,
`vmtest.guest_config`) run no tool.
"""
