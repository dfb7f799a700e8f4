"""dtk: kernel-exact toolkits, driver containers, module checks, signing and VM proofs."""

__version__ = "0.1.0"
