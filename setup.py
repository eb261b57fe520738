"""Compiled pieces of the package; everything else is declared in pyproject.toml.

Each extension is optional: where it cannot be built (no C compiler), the
install goes on without it and the package uses its NumPy code instead.
"""

import sys

from setuptools import Extension, setup

# No -ffast-math: the kernels must round as NumPy does (see each source file).
UNIX_FLAGS = ["-O3", "-ffp-contract=off", "-fno-math-errno"]
FLAGS = [] if sys.platform == "win32" else UNIX_FLAGS

setup(ext_modules=[
    Extension("parallel_backprop._fused", ["src/parallel_backprop/_native/fused.c"],
              extra_compile_args=FLAGS, optional=True),
])
