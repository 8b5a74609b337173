"""taskstats_fast.kernel.namespaces: the one answer to "is this process in the kernel's initial
user/pid/net namespace?", with /proc faked (fixed initial inodes, kthreadd readable or not)."""

from __future__ import annotations

import os

import pytest

from taskstats_fast.kernel import namespaces as ns

INIT = ns.INITIAL_INODE
CHILD = 4026532999        # a dynamically numbered namespace
OLD_INIT_NET = 4026531992  # init_net before the kernel fixed its number: dynamic too


@pytest.fixture
def proc(monkeypatch):
    """links[(pid, kind)] = inode (absent: unreadable); kthread: whether pid 2 is a kernel thread."""
    state = {"links": {}, "kthread": True}
    monkeypatch.setattr(ns, "identity", lambda kind, pid="self": (
        (4, state["links"][(pid, kind)]) if (pid, kind) in state["links"] else None))
    monkeypatch.setattr(ns, "_is_kernel_thread", lambda pid: state["kthread"])
    return state


@pytest.mark.parametrize("kind", ns.KINDS)
def test_the_fixed_initial_inode_means_initial(proc, kind):
    proc["links"][("self", kind)] = INIT[kind]
    assert ns.in_initial(kind) is True


@pytest.mark.parametrize("kind", ns.KINDS)
def test_kthreadd_is_the_reference_when_readable(proc, kind):
    proc["links"].update({("self", kind): CHILD, ("2", kind): CHILD})
    assert ns.in_initial(kind) is True            # a kernel whose initial numbers are dynamic
    proc["links"][("2", kind)] = CHILD + 1
    assert ns.in_initial(kind) is False


def test_a_user_process_posing_as_pid_2_is_no_reference(proc):
    """In a child pid namespace with its own /proc, pid 2 is one of the container's processes."""
    proc["kthread"] = False
    proc["links"].update({("self", "net"): CHILD, ("2", "net"): CHILD})
    assert ns.in_initial("net") is None


@pytest.mark.parametrize("kind, expected", [("user", False), ("pid", False), ("net", None)])
def test_unreadable_kthreadd_falls_back_to_the_fixed_numbers(proc, kind, expected):
    """A sandbox hides /proc/2/ns (and /proc/1/ns) even from root: user and pid numbers are fixed
    since 3.8, so another one is a child namespace; init_net's became fixed only lately."""
    proc["links"][("self", kind)] = CHILD if kind != "net" else OLD_INIT_NET
    assert ns.in_initial(kind) is expected


def test_unreadable_own_link_is_unknown(proc):
    assert ns.in_initial("user") is None


def test_unknown_kind_is_refused():
    with pytest.raises(ValueError, match="user, pid, net"):
        ns.identity("mnt")


def test_this_process_and_pid_2_on_the_real_proc():
    mine = ns.identity("net")
    assert mine == (os.stat("/proc/self/ns/net").st_dev, os.stat("/proc/self/ns/net").st_ino)
    assert ns._is_kernel_thread(2) is os.path.exists("/proc/2/stat") and ns._is_kernel_thread(2)
    assert ns._is_kernel_thread(os.getpid()) is False
