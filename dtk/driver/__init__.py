"""Driver containers: one image per module and kernel, built on that kernel's toolkit.

Plans (`plan`, `dkmsconf`, `naming`, `digest`) are pure and carry a content hash
of every input; executors (`cell`, `dkms`, `matrix`, `base`, `prune`) run them
with buildah and skopeo through `dtk.engine`.
"""
