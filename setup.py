"""setuptools' entry point: the project is described in pyproject.toml. The one thing
pyproject.toml cannot say (setuptools 66, Debian 12's) is dtk's RE2 binding, a C++
extension built only when DTK_RE2_BINDING=1: the Debian package (debian/rules) sets it
and builds against Debian's libre2; a pip install leaves it out and uses google-re2.
"""

import os

from setuptools import Extension, setup

EXTENSIONS = [
    Extension("dtk.kmmapi._re2", ["dtk/kmmapi/_re2.cc"], libraries=["re2"], language="c++",
              extra_compile_args=["-std=c++17"]),
] if os.environ.get("DTK_RE2_BINDING") == "1" else []

setup(ext_modules=EXTENSIONS)
