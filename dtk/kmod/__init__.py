"""Kernel-module knowledge: read .ko files, check them against a kernel, sign them."""
