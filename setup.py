"""Build glue only: metadata lives in pyproject.toml; this file exists for cffi_modules, the wheel's
abi3 tag, a clear message when the build lacks a C compiler or Python's headers, and an sdist
that leaves out what building left in a checkout."""
import os
import re
import sys

from setuptools import setup
from setuptools.command.build_ext import build_ext
from setuptools.command.sdist import sdist

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "csrc"))
import build_ffi  # noqa: E402  (csrc/ is not a package; it holds the C core and its cffi script)


class CheckedBuildExt(build_ext):
    """build_ext that first checks for the compiler and Python.h, and says what to install.

    It also links without the interpreter's own run path: a Python built with a shared libpython
    (pyenv's) puts `-Wl,-rpath,<its lib/>` into every extension's link line, which would point
    each user's copy of the wheel at the builder's directories.  The extension needs only libc."""

    def build_extensions(self):
        problem = build_ffi.missing_build_tool(self.compiler.compiler_so, self.include_dirs or [])
        if problem:
            raise SystemExit(f"error: {problem}")
        linker = getattr(self.compiler, "linker_so", None)
        if linker:
            self.compiler.linker_so = [a for a in linker if not re.match(r"-Wl,-(rpath|R)[,=]", a)]
        super().build_extensions()


#: What a build or an editable install leaves in a checkout: bytecode, objects, the extension and the C
#: source cffi generates for it.  Never source, so never shipped.
BUILT_FILES = re.compile(r"(^|/)__pycache__/|\.(py[cod]|so|o)$|^taskstats_fast/_tsf_cffi\.c$")


class SourceOnlySdist(sdist):
    """sdist without BUILT_FILES.  They are dropped here, not by MANIFEST.in's global-exclude, which
    warns about every pattern a clean checkout has no file for."""

    def make_distribution(self):
        self.filelist.files = [f for f in self.filelist.files if not BUILT_FILES.search(f.replace(os.sep, "/"))]
        super().make_distribution()


options = {"bdist_wheel": {"py_limited_api": "cp39"}} if build_ffi.STABLE_ABI else {}
setup(cffi_modules=["csrc/build_ffi.py:ffibuilder"], cmdclass={"build_ext": CheckedBuildExt, "sdist": SourceOnlySdist},
      options=options)
