"""cffi build script: compiles every csrc/*.c into taskstats_fast._tsf_cffi (API, out-of-line mode).

The declarations handed to cffi are read from the real headers, between the
``/* cffi:begin */`` and ``/* cffi:end */`` markers, so the C headers stay the only place
they are written.  Headers without a region (tsf_nl.h) are internal to csrc/.  A new .c or .h
file is picked up by name: nothing to list here.
"""
import os
import platform
import re
import shutil
import sys
import sysconfig
from glob import glob
from typing import Iterable, Optional, Sequence

from cffi import FFI

HERE = os.path.dirname(os.path.abspath(__file__))
_REGION = re.compile(r"/\* cffi:begin \*/(.*?)/\* cffi:end \*/", re.S)


def public_headers():
    """Headers that carry a cffi region, in a stable order."""
    out = []
    for path in sorted(glob(os.path.join(HERE, "tsf_*.h"))):
        with open(path) as f:
            text = f.read()
        region = _REGION.search(text)
        if region:
            out.append((os.path.basename(path), region.group(1)))
    return out


#: The extension uses only CPython's stable ABI (cffi's out-of-line API mode), so one build serves
#: every later CPython: setup.py tags the wheel abi3. cffi makes the same choice (not for a debug
#: or free-threaded build, nor outside CPython); saying it here keeps the tag and the build in step.
STABLE_ABI = (platform.python_implementation() == "CPython" and not hasattr(sys, "gettotalrefcount")
              and not sysconfig.get_config_var("Py_GIL_DISABLED"))

README_HINT = "see README.md, section Install"


def missing_build_tool(compiler_command: Sequence[str], include_dirs: Iterable[str]) -> Optional[str]:
    """What the build lacks, as one sentence saying what to install, or None.

    Checked before compiling: without it pip shows only ``No such file or directory: gcc``, or a
    compiler error about Python.h, which the C core does not include but cffi's generated module does.
    """
    compiler = compiler_command[0] if compiler_command else "cc"
    if shutil.which(compiler) is None:
        return (f"taskstats_fast needs a C compiler to build its extension, and `{compiler}` was not found: "
                f"install one (Debian/Ubuntu: apt-get install gcc python3-dev; {README_HINT})")
    dirs = [d for d in include_dirs if d]
    if not any(os.path.isfile(os.path.join(d, "Python.h")) for d in dirs):
        return ("taskstats_fast needs Python's C headers to build its extension, and Python.h is not in "
                f"{', '.join(dirs) or 'any include directory'}: install them "
                f"(Debian/Ubuntu: apt-get install python3-dev; {README_HINT})")
    return None


def build() -> FFI:
    ffi = FFI()
    headers = public_headers()
    ffi.cdef("\n".join(region for _, region in headers))
    sources = sorted(os.path.relpath(p) for p in glob(os.path.join(HERE, "*.c")))
    ffi.set_source(
        "taskstats_fast._tsf_cffi",
        "".join(f'#include "{name}"\n' for name, _ in headers),
        sources=sources,
        include_dirs=[os.path.relpath(HERE)],
        depends=sorted(os.path.relpath(p) for p in glob(os.path.join(HERE, "*.h"))),
        extra_compile_args=["-O2", "-std=gnu11", "-Wall", "-Wextra", "-fvisibility=hidden"],
        py_limited_api=STABLE_ABI,
    )
    return ffi


ffibuilder = build()

if __name__ == "__main__":
    ffibuilder.compile(verbose=True)
