# dtk: the two commands a user needs are `make demo` and `make test`.
# Both install what they need first (system packages via apt, Python packages
# into .venv), so a fresh Debian machine needs nothing else.

SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)

# What `make deb` builds dtk's Debian package with (debian/control's Build-Depends,
# and lintian to judge it).
DEB_BUILD_PACKAGES := dpkg-dev debhelper dh-python pybuild-plugin-pyproject python3-all-dev \
	python3-setuptools libre2-dev pybind11-dev python3-click-man python3-click \
	python3-cryptography python3-lz4 python3-pyelftools python3-yaml python3-zstandard \
	fakeroot lintian

# buildah/skopeo build and move images; podman+runc run driver containers;
# mmdebstrap makes base roots; qemu boots kernels; docker-registry is the
# loopback registry the tests push to (apache2-utils' htpasswd makes its
# users for the authenticated one); busybox-static, kmod and cpio make
# VM initramfs images; shellcheck lints the shell under dtk/data; bubblewrap is
# the sandbox DKMS builds run in (dtk.engine.sandbox) and libseccomp2 writes its
# seccomp filter; linux-libc-dev has the kernel's system call numbers libseccomp's
# are tested against, and golang-github-containers-common (buildah's) the
# containers seccomp profile the filter is compared with; dosfstools and mtools
# write the EFI system partitions Secure Boot VMs boot from, without root (dtk.vm.esp).
SYSTEM_PACKAGES := buildah skopeo podman runc uidmap fuse-overlayfs mmdebstrap \
	qemu-system-x86 docker-registry busybox-static kmod cpio xz-utils zstd \
	openssl gpgv python3-venv ca-certificates shellcheck apache2-utils chromium \
	bubblewrap libseccomp2 linux-libc-dev golang-github-containers-common dosfstools mtools \
	$(DEB_BUILD_PACKAGES)

.PHONY: all deps system-deps python-deps demo test lint typecheck unit integration bench clean image \
	deb

all: test

system-deps:
	@missing=$$(for p in $(SYSTEM_PACKAGES); do \
		dpkg-query -W -f='$${Status}\n' $$p 2>/dev/null | grep -q 'install ok installed' || echo $$p; \
	done); \
	if [ -n "$$missing" ]; then \
		echo "installing system packages:" $$missing; \
		$(SUDO) apt-get update -q && \
		DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -q --no-install-recommends $$missing; \
	fi

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e '.[dev]'
	touch $@

python-deps: $(VENV)/.installed

deps: system-deps python-deps

demo: deps
	$(BIN)/dtk demo

lint: python-deps system-deps
	$(BIN)/ruff check dtk tests bench
	shellcheck dtk/data/*.sh

typecheck: python-deps
	$(BIN)/mypy

unit: python-deps system-deps
	$(BIN)/pytest tests/unit

integration: deps
	$(BIN)/pytest tests/integration

test: deps
	$(BIN)/ruff check dtk tests bench
	shellcheck dtk/data/*.sh
	$(BIN)/mypy
	$(BIN)/pytest tests

# Every benchmark runs; `make bench` fails if any of them failed.
bench: deps
	@failed=""; for b in bench/*.py; do echo "== $$b"; \
	  $(BIN)/python $$b || failed="$$failed $$b"; done; \
	  if [ -n "$$failed" ]; then echo "failed:$$failed" >&2; exit 1; fi

# dtk's own image (Containerfile), on the Debian base its toolkits use (built by any
# `dtk toolkit build`); IMAGE names it.
IMAGE ?= localhost/dtk:latest
image: python-deps
	@base=$$(buildah images --format '{{.Name}}:{{.Tag}}' --filter reference='localhost/dtk-base' | head -n 1); \
	if [ -z "$$base" ]; then echo "no dtk-base image: run 'dtk toolkit build --kernel K' once" >&2; exit 2; fi; \
	rm -rf build/image && mkdir -p build/image && \
	$(BIN)/pip wheel -q -w build/image/wheels . && \
	buildah bud --isolation chroot --layers --build-arg BASE=$$base -f Containerfile \
		-t $(IMAGE) build/image

# dtk's Debian package (debian/), built with Debian's own tooling from a copy of this
# tree (committed and uncommitted files alike) in DEB_OUT, where dpkg-buildpackage also
# leaves the .deb; lintian then judges it (debian/dtk.lintian-overrides says why each
# tag it would still report is there). PATH is the system's: a Debian package is built
# by Debian's python3, never by a virtual environment's or a pyenv's.
DEB_OUT ?= build/deb
deb: system-deps
	rm -rf $(DEB_OUT) && mkdir -p $(DEB_OUT)/src
	git ls-files -z --cached --others --exclude-standard | \
		tar --null --ignore-failed-read -T - -cf - | tar -xf - -C $(DEB_OUT)/src
	cd $(DEB_OUT)/src && env PATH=/usr/sbin:/usr/bin:/sbin:/bin dpkg-buildpackage -us -uc -b
	lintian --fail-on error,warning --info $(DEB_OUT)/dtk_*.changes
	@ls -l $(DEB_OUT)/*.deb

clean:
	rm -rf $(VENV) .mypy_cache .ruff_cache .pytest_cache build *.egg-info
