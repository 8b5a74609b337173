"""Build glue only: metadata lives in pyproject.toml; this file exists for cffi_modules."""
from setuptools import setup

setup(cffi_modules=["csrc/build_ffi.py:ffibuilder"])
