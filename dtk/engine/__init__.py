"""Typed wrappers over buildah and skopeo. Nothing else in dtk calls those CLIs."""
