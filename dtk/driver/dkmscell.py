"""The shell a DKMS cell runs inside its toolkit. Its text is part of every DKMS
cell's input hash (see plan.cell_hash), so changing it rebuilds those images."""

from __future__ import annotations

from dtk import scripts

OUT = "/dtk-out"
# Where `dkms install` puts modules on Debian (dkms's override_dest_module_location).
DEST = "updates/dkms"
EXCLUDED_STATUS = 77  # dkms's own exit status for a BUILD_EXCLUSIVE mismatch

# One `buildah run` per cell (each costs ~0.6 s): evaluate every dkms.conf for
# this kernel, skip excluded packages, stop at a broken one, build the rest
# with dkms in BUILD_DEPENDS order, then run depmod on what was built.
# Signing is dtk's own later step, with a key that never enters an image;
# left alone, dkms would make a throwaway MOK key and sign with it.
def cell_script() -> str:
    """dtk/data/dkms-cell.sh (checked by shellcheck); its text is in every DKMS cell's
    input hash."""
    return scripts.text("dkms-cell.sh")

