"""The cgroup-path label parser on the path shapes of every runtime: systemd, docker, containerd,
cri-o, podman and Kubernetes (cgroupfs and systemd drivers, each QoS class)."""

from __future__ import annotations

import pytest

from taskstats_fast.live.cgroup_labels import LABEL_NAMES, cgroup_labels

ID = "3f4c9a1b2d8e7f6a5b4c3d2e1f0a9b8c7d6e5f4a3b2c1d0e9f8a7b6c5d4e3f2a"
UID = "0f1e2d3c-4b5a-6978-8a9b-0c1d2e3f4a5b"
UID_ = UID.replace("-", "_")

CASES = [
    # plain paths
    ("/", {}),
    ("", {}),
    ("/init.scope", {"unit": "init.scope"}),
    ("/user.slice", {"unit": "user.slice"}),
    ("/mygroup/child", {}),
    # systemd units: the innermost one
    ("/system.slice/nginx.service", {"unit": "nginx.service"}),
    ("/system.slice/system-getty.slice/getty@tty1.service", {"unit": "getty@tty1.service"}),
    ("/user.slice/user-1000.slice/session-3.scope", {"unit": "session-3.scope"}),
    ("/user.slice/user-1000.slice/user@1000.service/app.slice/org.gnome.Terminal.service",
     {"unit": "org.gnome.Terminal.service"}),
    ("/user.slice/user-1000.slice/user@1000.service/init.scope", {"unit": "init.scope"}),
    ("/system.slice/nginx.service/worker", {"unit": "nginx.service"}),
    ("/system.slice/foo.service.d", {"unit": "system.slice"}),
    # docker
    (f"/system.slice/docker-{ID}.scope", {"unit": f"docker-{ID}.scope", "container_id": ID}),
    (f"/docker/{ID}", {"container_id": ID}),
    (f"/user.slice/user-1000.slice/user@1000.service/docker-{ID}.scope",
     {"unit": f"docker-{ID}.scope", "container_id": ID}),
    (f"/system.slice/docker-{ID}.scope/init.scope", {"unit": "init.scope", "container_id": ID}),
    # containerd (plain, namespaces as the first component) and nerdctl
    (f"/default/{ID}", {"container_id": ID}),
    (f"/k8s.io/{ID}", {"container_id": ID}),
    (f"/system.slice/nerdctl-{ID}.scope", {"unit": f"nerdctl-{ID}.scope", "container_id": ID}),
    # podman: rootful, rootless, nested "container" cgroup, cgroupfs, and its monitor
    (f"/machine.slice/libpod-{ID}.scope", {"unit": f"libpod-{ID}.scope", "container_id": ID}),
    (f"/machine.slice/libpod-{ID}.scope/container", {"unit": f"libpod-{ID}.scope", "container_id": ID}),
    (f"/user.slice/user-1000.slice/user@1000.service/user.slice/libpod-{ID}.scope",
     {"unit": f"libpod-{ID}.scope", "container_id": ID}),
    (f"/libpod_parent/libpod-{ID}", {"container_id": ID}),
    (f"/machine.slice/libpod-conmon-{ID}.scope", {"unit": f"libpod-conmon-{ID}.scope"}),
    # Kubernetes, systemd driver: uids with underscores, each QoS class, each runtime
    (f"/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod{UID_}.slice/cri-containerd-{ID}.scope",
     {"unit": f"cri-containerd-{ID}.scope", "container_id": ID, "pod_uid": UID}),
    (f"/kubepods.slice/kubepods-besteffort.slice/kubepods-besteffort-pod{UID_}.slice/crio-{ID}.scope",
     {"unit": f"crio-{ID}.scope", "container_id": ID, "pod_uid": UID}),
    (f"/kubepods.slice/kubepods-pod{UID_}.slice/docker-{ID}.scope",
     {"unit": f"docker-{ID}.scope", "container_id": ID, "pod_uid": UID}),
    (f"/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod{UID_}.slice/crio-conmon-{ID}.scope",
     {"unit": f"crio-conmon-{ID}.scope", "pod_uid": UID}),
    (f"/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod{UID_}.slice",
     {"unit": f"kubepods-burstable-pod{UID_}.slice", "pod_uid": UID}),
    ("/kubepods.slice/kubepods-burstable.slice", {"unit": "kubepods-burstable.slice"}),
    # Kubernetes, cgroupfs driver: uids with dashes
    (f"/kubepods/burstable/pod{UID}/{ID}", {"container_id": ID, "pod_uid": UID}),
    (f"/kubepods/besteffort/pod{UID}/crio-{ID}", {"container_id": ID, "pod_uid": UID}),
    (f"/kubepods/pod{UID}/{ID}", {"container_id": ID, "pod_uid": UID}),
    (f"/kubepods/burstable/pod{UID}", {"pod_uid": UID}),
    # near misses: a short id, upper-case hex, a pod prefix without a uid
    (f"/docker/{ID[:12]}", {}),
    (f"/docker/{ID.upper()}", {}),
    ("/kubepods/burstable/podnotauid", {}),
]


@pytest.mark.parametrize("path, expected", CASES, ids=[c[0] or "empty" for c in CASES])
def test_labels_of_each_path_shape(path, expected):
    got = cgroup_labels(path)
    assert dict(got) == expected
    assert [name for name, _ in got] == [n for n in LABEL_NAMES if n in expected]   # a fixed order
