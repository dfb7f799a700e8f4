#!/bin/sh
# Runs in the dkms build directory (POST_BUILD).
cp Module.symvers ../Module.symvers
