"""Labels derived from a cgroup v2 path: the systemd unit, the container and the Kubernetes pod.

A pure function of the path string (no filesystem), so every runtime's path shape is a table
row in tests/test_cgroup_labels.py.  The shapes it knows:

* systemd: the innermost ``*.service``, ``*.scope`` or ``*.slice`` component is ``unit``
  (``/user.slice/user-1000.slice/user@1000.service/app.slice/foo.service`` -> ``foo.service``);
* containers: the innermost component that is a 64-hex id, bare (docker's and containerd's
  cgroupfs driver: ``/docker/<id>``, ``/kubepods/burstable/pod<uid>/<id>``, ``/default/<id>``) or
  with a runtime's prefix and optional ``.scope`` (``docker-``, ``cri-containerd-``, ``crio-``,
  ``libpod-``, ``nerdctl-``), is ``container_id``.  Podman's and cri-o's monitor scopes
  (``libpod-conmon-<id>.scope``, ``crio-conmon-<id>.scope``) are not the container and get none;
  a path below the container's scope (podman's ``.../libpod-<id>.scope/container``, a
  container's own systemd) keeps the container's id;
* Kubernetes: ``pod<uid>`` (cgroupfs driver, dashes) or ``kubepods[-<qos>]-pod<uid>.slice``
  (systemd driver, where the uid's dashes became underscores) is ``pod_uid``, always written
  with dashes as the API server shows it.

The labels are given in a fixed order and only when found: an empty label is the same as none
to Prometheus, and leaving it out keeps the exposition short.
"""

from __future__ import annotations

import re
from typing import Tuple

__all__ = ["cgroup_labels", "LABEL_NAMES"]

#: Every label this module can give, in the order they are given.
LABEL_NAMES: Tuple[str, ...] = ("unit", "container_id", "pod_uid")

_UNIT = re.compile(r".+\.(service|scope|slice)\Z")
_CONTAINER = re.compile(r"(?:(?:docker|cri-containerd|crio|libpod|nerdctl)-)?([0-9a-f]{64})(?:\.scope)?\Z")
_UID = r"[0-9a-f]{8}[-_][0-9a-f]{4}[-_][0-9a-f]{4}[-_][0-9a-f]{4}[-_][0-9a-f]{12}"
_POD = re.compile(rf"(?:kubepods(?:-[a-z]+)?-)?pod({_UID})(?:\.slice)?\Z")


def cgroup_labels(path: str) -> Tuple[Tuple[str, str], ...]:
    """``(("unit", ...), ("container_id", ...), ("pod_uid", ...))`` for a cgroup path below the
    v2 root (``/system.slice/nginx.service``), each only when the path has it."""
    unit = container = pod = ""
    for part in reversed(path.split("/")):
        if not unit and _UNIT.match(part):
            unit = part
        if not container:
            found = _CONTAINER.match(part)
            if found:
                container = found.group(1)
        if not pod:
            found = _POD.match(part)
            if found:
                pod = found.group(1).replace("_", "-")
    return tuple((name, value) for name, value in zip(LABEL_NAMES, (unit, container, pod)) if value)
