"""Build glue only: metadata lives in pyproject.toml; this file exists for cffi_modules, the wheel's
abi3 tag and a clear message when the build lacks a C compiler or Python's headers."""
import os
import sys

from setuptools import setup
from setuptools.command.build_ext import build_ext

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "csrc"))
import build_ffi  # noqa: E402  (csrc/ is not a package; it holds the C core and its cffi script)


class CheckedBuildExt(build_ext):
    """build_ext that first checks for the compiler and Python.h, and says what to install."""

    def build_extensions(self):
        problem = build_ffi.missing_build_tool(self.compiler.compiler_so, self.include_dirs or [])
        if problem:
            raise SystemExit(f"error: {problem}")
        super().build_extensions()


options = {"bdist_wheel": {"py_limited_api": "cp39"}} if build_ffi.STABLE_ABI else {}
setup(cffi_modules=["csrc/build_ffi.py:ffibuilder"], cmdclass={"build_ext": CheckedBuildExt}, options=options)
