"""Compiled pieces, each optional: the package works (slower) without them."""

from setuptools import Extension, setup

ext_modules = [
    Extension("parallel_backprop._bf16", ["src/parallel_backprop/_native/bf16.c"],
              extra_compile_args=["-O3"], optional=True),
]

setup(ext_modules=ext_modules)
