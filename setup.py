"""Compiled pieces, each optional: the package works (slower) without them."""

import sys

from setuptools import Extension, setup

# The update rules, kernels.c's and bf16.c's element-wise passes must round as NumPy does (see
# fused.c): no fused multiply-add, no -ffast-math; -fno-math-errno only lets sqrt vectorise.
FUSED_FLAGS = [] if sys.platform == "win32" else ["-O3", "-ffp-contract=off",
                                                  "-fno-math-errno"]

CLONES_HEADER = "src/parallel_backprop/_native/clones.h"   # shared by fused.c and kernels.c

ext_modules = [
    Extension("parallel_backprop._bf16", ["src/parallel_backprop/_native/bf16.c"],
              extra_compile_args=FUSED_FLAGS, optional=True),
    Extension("parallel_backprop._fused", ["src/parallel_backprop/_native/fused.c"],
              depends=[CLONES_HEADER], extra_compile_args=FUSED_FLAGS, optional=True),
    Extension("parallel_backprop._kernels", ["src/parallel_backprop/_native/kernels.c"],
              depends=[CLONES_HEADER], extra_compile_args=FUSED_FLAGS, optional=True),
]

setup(ext_modules=ext_modules)
