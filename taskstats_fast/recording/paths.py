"""Which files a path names: dataset directories, single recorded files, the walk that
finds a dataset's data files (hidden, ``_``-prefixed and in-progress files are not data), the
datasets one recording directory holds (its rows, and its PSI under ``_psi``), and the names a
recording gives its files in a dataset (``PartNames``).

Readers, the file sink and retention all ask these questions; they live here, below all three,
so that none of them imports another to find out what a path is.
"""

from __future__ import annotations

import os
import time
import urllib.parse
from typing import Iterable, List, Union

from ..errors import NotARecordingError
from .formats import format_of_path, known_extensions, require_regular_file

__all__ = ["PathOrPaths", "is_dataset_path", "path_list", "find_files", "PSI_DIRECTORY",
           "recording_datasets", "host_directory", "sharing_host_directories", "PartNames",
           "utc_day"]

#: Where, inside an interval dataset directory, its PSI dataset lives (``psi_rows``).
PSI_DIRECTORY = "_psi"

PathOrPaths = Union[str, "os.PathLike[str]", Iterable[Union[str, "os.PathLike[str]"]]]


def is_dataset_path(path: str) -> bool:
    """Does ``path`` name a dataset directory (no known file extension, or an existing directory)?"""
    return os.path.isdir(path) or format_of_path(path) is None


def path_list(paths: PathOrPaths) -> List[str]:
    """``paths`` (one path or several) as a list of strings."""
    if isinstance(paths, (str, os.PathLike)):
        return [os.fspath(paths)]
    return [os.fspath(p) for p in paths]


def recording_datasets(root: str) -> List[str]:
    """The dataset directories of the one recording directory that dataset ``root`` belongs
    to: the directory itself and the PSI dataset inside it, whichever of the two ``root`` is.
    Retention's size cap is a cap on that directory, so it counts them together."""
    root = os.path.normpath(root)
    top = os.path.dirname(root) if os.path.basename(root) == PSI_DIRECTORY else root
    return [top, os.path.join(top, PSI_DIRECTORY)]


def host_directory(root: str, hostname: str) -> str:
    """One host's part of the dataset ``root`` (``root/host=HOST``)."""
    return os.path.join(root, f"host={urllib.parse.quote(hostname, safe='')}")


def sharing_host_directories(host_dir: str) -> List[str]:
    """The same host's part of the other datasets in the recording directory that the host
    directory ``host_dir`` belongs to (an interval recording's rows and its PSI, each written
    by a sink of its own): retention's size cap counts them together."""
    root, host = os.path.split(os.path.normpath(host_dir))
    return [os.path.join(d, host) for d in recording_datasets(root) if d != root]


def utc_day() -> str:
    """Today in UTC, as a dataset's ``date=`` partitions name it."""
    return time.strftime("%Y-%m-%d", time.gmtime())


class PartNames:
    """The final names of a recording's files in its host directory,
    ``date=DAY/part-STAMP-PID-SEQUENCE.EXT``: one sequence per recording, never a name that
    exists already (another recorder's, or an earlier run's of a reused pid)."""

    def __init__(self, host_dir: str, extension: str):
        self.host_directory = host_dir
        self.extension = extension
        self._sequence = 0

    def next(self) -> str:
        directory = os.path.join(self.host_directory, f"date={utc_day()}")
        stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
        while True:
            name = f"part-{stamp}-{os.getpid()}-{self._sequence:04d}{self.extension}"
            self._sequence += 1
            path = os.path.join(directory, name)
            if not os.path.exists(path):
                return path


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
