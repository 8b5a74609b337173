"""Which files a path names: dataset directories, single recorded files, and the walk that
finds a dataset's data files (hidden, ``_``-prefixed and in-progress files are not data).

Readers, the file sink and retention all ask these questions; they live here, below all three,
so that none of them imports another to find out what a path is.
"""

from __future__ import annotations

import os
from typing import Iterable, List, Union

from ..errors import NotARecordingError
from .formats import format_of_path, known_extensions, require_regular_file

__all__ = ["PathOrPaths", "is_dataset_path", "path_list", "find_files"]

PathOrPaths = Union[str, "os.PathLike[str]", Iterable[Union[str, "os.PathLike[str]"]]]


def is_dataset_path(path: str) -> bool:
    """Does ``path`` name a dataset directory (no known file extension, or an existing directory)?"""
    return os.path.isdir(path) or format_of_path(path) is None


def path_list(paths: PathOrPaths) -> List[str]:
    """``paths`` (one path or several) as a list of strings."""
    if isinstance(paths, (str, os.PathLike)):
        return [os.fspath(paths)]
    return [os.fspath(p) for p in paths]


def find_files(paths: PathOrPaths) -> List[str]:
    """The recorded data files named by ``paths`` (files, or directories searched recursively,
    skipping hidden, ``_``-prefixed and in-progress files), sorted within each directory."""
    out: List[str] = []
    for path in path_list(paths):
        if os.path.isdir(path):
            for directory, subdirs, names in os.walk(path):
                subdirs[:] = sorted(d for d in subdirs if not d.startswith((".", "_")))
                out += [os.path.join(directory, n) for n in sorted(names)
                        if not n.startswith((".", "_")) and format_of_path(n)]
        elif os.path.exists(path):
            require_regular_file(path)   # a FIFO would hang its reader: refused at once
            if format_of_path(path) is None:
                raise NotARecordingError(path, "its name has none of the extensions recordings "
                                         f"have ({', '.join(known_extensions())})")
            out.append(path)
        else:
            raise FileNotFoundError(f"{path}: no such file or directory")
    return out
