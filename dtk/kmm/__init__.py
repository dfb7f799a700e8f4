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
* `render`   — the Module rewritten for the cluster with digest-pinned images.

It may import `dtk.kernel`, `dtk.errors`, `dtk.engine` and `dtk.run` only: not
`dtk.build`, `dtk.vm` or `dtk.kmod` internals, so that the build and preflight
work can call it without import cycles.
"""
