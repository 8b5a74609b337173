"""cffi build script: compiles every csrc/*.c into taskstats_fast._tsf_cffi (API, out-of-line mode).

The declarations handed to cffi are read from the real headers, between the
``/* cffi:begin */`` and ``/* cffi:end */`` markers, so the C headers stay the only place
they are written.
"""
import os
import re
from glob import glob

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
        extra_compile_args=["-O2", "-std=gnu11", "-Wall", "-Wextra", "-fvisibility=hidden"],
    )
    return ffi


ffibuilder = build()

if __name__ == "__main__":
    ffibuilder.compile(verbose=True)
