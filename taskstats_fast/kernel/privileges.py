"""Dropping root once the netlink sockets are open, as ``tcpdump -Z`` does.

TASKSTATS wants CAP_NET_ADMIN to register an exit listener, not to read from it: a service that
must run all day opens and registers its sockets as root, then becomes an ordinary user with no
capabilities and keeps streaming. ``drop_privileges(user, group)`` does that switch, in the
order that leaves nothing behind:

1. the capability bounding set is emptied (needs CAP_SETPCAP; a systemd unit keeps it in its
   ``CapabilityBoundingSet`` for this), so nothing this process executes can regain a capability;
2. supplementary groups become the user's (``initgroups``), then real, effective and saved gid,
   then uid, are set (glibc applies them to every thread);
3. permitted, effective, inheritable and ambient capabilities are cleared, and
   ``PR_SET_NO_NEW_PRIVS`` is set: no setuid program or file capability can raise them again;
4. ``/proc/self/status`` is read back, and anything left (a uid, a capability) is an error.

Before switching it checks that the user can read the interpreter's standard library and the
package's folder (later imports would fail otherwise: a Python under /root is unreadable to
other users), and refuses when not.

``keep`` names capabilities to hold on to (e.g. ``("CAP_NET_ADMIN",)``): live TASKSTATS queries
need CAP_NET_ADMIN at every request, so a process that must still query live tasks after the
switch keeps that one; reading an already registered listener needs none.

After the switch, closing an ExitListener cannot deregister it (deregistering needs
CAP_NET_ADMIN and fails with EPERM): the listener then skips the deregistration, and the kernel
drops the closed socket lazily, at the next exit message it tries to send to it (the send fails
with ECONNREFUSED and the kernel removes the listener from its list). Nothing is lost or leaked.

Capabilities and the bounding set belong to each thread, not to the process: switch before
starting threads (the function refuses when other Python threads run).
"""

from __future__ import annotations

import ctypes
import errno
import grp
import os
import pwd
import threading
from typing import Dict, Iterable, NamedTuple, Optional, Tuple

from ..errors import PrivilegeDropError, UnknownUserError

__all__ = ["Identity", "Credentials", "CAPABILITIES", "resolve_identity", "drop_privileges",
           "credentials", "has_capability", "unreadable_for"]

#: Capability numbers from <linux/capability.h> for the names this module is asked about.
CAPABILITIES: Dict[str, int] = {"CAP_CHOWN": 0, "CAP_DAC_OVERRIDE": 1, "CAP_SETGID": 6, "CAP_SETUID": 7,
                                "CAP_SETPCAP": 8, "CAP_NET_ADMIN": 12, "CAP_SYS_ADMIN": 21}

# <linux/prctl.h> and <linux/capability.h>
_PR_SET_KEEPCAPS = 8
_PR_CAPBSET_DROP = 24
_PR_SET_NO_NEW_PRIVS = 38
_PR_CAP_AMBIENT = 47
_PR_CAP_AMBIENT_CLEAR_ALL = 4
_LINUX_CAPABILITY_VERSION_3 = 0x20080522


class Identity(NamedTuple):
    """Who to become: the user's name (None for a bare numeric uid), uid, gid and the supplementary groups."""
    user: Optional[str]
    uid: int
    gid: int
    groups: Tuple[int, ...]


class Credentials(NamedTuple):
    """This process's identity and capability sets, as /proc/self/status shows them."""
    uids: Tuple[int, int, int, int]        #: real, effective, saved, filesystem
    gids: Tuple[int, int, int, int]
    groups: Tuple[int, ...]
    effective: int                         #: capability bit masks
    permitted: int
    inheritable: int
    ambient: int
    bounding: int
    no_new_privs: bool


def resolve_identity(user: str, group: Optional[str] = None) -> Identity:
    """``user`` (a name or a numeric uid) and ``group`` (a name or gid; default: the user's
    primary group) as ids. Raises UnknownUserError naming what does not exist."""
    try:
        entry = pwd.getpwnam(user)
    except KeyError:
        entry = None
        if not user.isdigit():
            raise UnknownUserError(f"no such user: {user!r} (give a name from /etc/passwd or a numeric uid)") \
                from None
    if entry is None:
        try:
            entry = pwd.getpwuid(int(user))
        except KeyError:
            entry = None
    uid = entry.pw_uid if entry else int(user)
    if group is None:
        if entry is None:
            raise UnknownUserError(f"uid {user} has no passwd entry, so no primary group: give one with --group")
        gid = entry.pw_gid
    else:
        try:
            gid = grp.getgrnam(group).gr_gid
        except KeyError:
            if not group.isdigit():
                raise UnknownUserError(f"no such group: {group!r} (give a name from /etc/group or a numeric gid)") \
                    from None
            gid = int(group)
    groups = tuple(sorted(set(os.getgrouplist(entry.pw_name, gid)))) if entry else (gid,)
    return Identity(entry.pw_name if entry else None, uid, gid, groups)


def credentials(pid: str = "self") -> Credentials:
    """The credentials of process ``pid`` (default: this one) from /proc/PID/status."""
    fields: Dict[str, str] = {}
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            key, _, value = line.partition(":")
            fields[key] = value.strip()

    def ids(key: str) -> Tuple[int, int, int, int]:
        a, b, c, d = (int(x) for x in fields[key].split())
        return a, b, c, d

    return Credentials(ids("Uid"), ids("Gid"), tuple(int(g) for g in fields.get("Groups", "").split()),
                       int(fields["CapEff"], 16), int(fields["CapPrm"], 16), int(fields["CapInh"], 16),
                       int(fields.get("CapAmb", "0"), 16), int(fields["CapBnd"], 16),
                       fields.get("NoNewPrivs", "0") == "1")


def has_capability(name: str) -> bool:
    """Whether this thread holds capability ``name`` (e.g. "CAP_NET_ADMIN") in its effective set."""
    return bool(credentials("thread-self").effective >> CAPABILITIES[name] & 1)


def unreadable_for(identity: Identity, paths: Iterable[str]) -> Optional[str]:
    """The first of ``paths`` (or a directory above it) that ``identity`` could not read or
    search, by the mode bits (ACLs aside), or None. A process that switched users imports
    from its interpreter and packages afterwards too: a Python under /root (mode 0700) fails then."""
    for path in paths:
        target = os.path.realpath(path)
        parts = target.split(os.sep)
        for depth in range(1, len(parts) + 1):
            here = os.sep + os.path.join(*parts[1:depth]) if depth > 1 else os.sep
            try:
                st = os.stat(here)
            except OSError:
                return here
            need = 0o5 if here == target else 0o1      # read+search the directory itself, search above it
            if identity.uid == 0:
                continue
            if st.st_uid == identity.uid:
                bits = st.st_mode >> 6
            elif st.st_gid in identity.groups or st.st_gid == identity.gid:
                bits = st.st_mode >> 3
            else:
                bits = st.st_mode
            if bits & need != need:
                return here
    return None


def _python_paths() -> Tuple[str, ...]:
    """Where this process will import from later: the standard library and this package's folder
    (site-packages for an installed copy)."""
    import sysconfig
    package = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    return (sysconfig.get_paths()["stdlib"], sysconfig.get_paths()["platstdlib"], os.path.dirname(package))


def _mask(names: Iterable[str]) -> int:
    mask = 0
    for name in names:
        if name not in CAPABILITIES:
            raise ValueError(f"unknown capability {name!r} (known: {', '.join(sorted(CAPABILITIES))})")
        mask |= 1 << CAPABILITIES[name]
    return mask


def _libc():
    return ctypes.CDLL(None, use_errno=True)


def _prctl(libc, *args: int) -> None:
    if libc.prctl(*(ctypes.c_ulong(a) for a in args), *(ctypes.c_ulong(0) for _ in range(5 - len(args)))) != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"prctl({args[0]}): {os.strerror(err)}")


class _CapHeader(ctypes.Structure):
    _fields_ = [("version", ctypes.c_uint32), ("pid", ctypes.c_int)]


class _CapData(ctypes.Structure):
    _fields_ = [("effective", ctypes.c_uint32), ("permitted", ctypes.c_uint32),
                ("inheritable", ctypes.c_uint32)]


def _capset(libc, mask: int) -> None:
    """Set effective and permitted to ``mask``, inheritable to nothing (this thread)."""
    header = _CapHeader(_LINUX_CAPABILITY_VERSION_3, 0)
    data = (_CapData * 2)()
    for i in range(2):
        word = (mask >> (32 * i)) & 0xFFFFFFFF
        data[i].effective = data[i].permitted = word
        data[i].inheritable = 0
    if libc.capset(ctypes.byref(header), data) != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"capset: {os.strerror(err)}")


def _last_capability() -> int:
    try:
        with open("/proc/sys/kernel/cap_last_cap") as f:
            return int(f.read())
    except OSError:
        return 63


def drop_privileges(user: str, group: Optional[str] = None, keep: Iterable[str] = ()) -> Credentials:
    """Become ``user`` (and ``group``, default the user's primary group), with no capabilities
    but those in ``keep``; returns the credentials read back from /proc/self/status.

    Call it as root, after opening (and registering) the netlink sockets and before creating
    files or starting threads. Raises UnknownUserError for a user or group that does not exist,
    PrivilegeDropError when it cannot switch, or when anything beyond ``keep`` is left.
    """
    identity = resolve_identity(user, group)
    keep_mask = _mask(keep)
    if os.geteuid() != 0:
        raise PrivilegeDropError(errno.EPERM, f"switching to user {user!r} needs root (running as uid {os.geteuid()})")
    if threading.active_count() > 1:
        raise PrivilegeDropError(errno.EBUSY, "drop privileges before starting threads: capabilities belong to each "
                                              f"thread, and {threading.active_count() - 1} other threads run")
    blocked = unreadable_for(identity, _python_paths())
    if blocked:
        raise PrivilegeDropError(errno.EACCES, f"user {user!r} could not read {blocked}, where this Python imports "
                                               "from: install Python and taskstats_fast where that user can read "
                                               "them (e.g. under /usr or /opt)")
    libc = _libc()
    try:
        _prctl(libc, _PR_SET_KEEPCAPS, 1 if keep_mask else 0)
        bounding = credentials("thread-self").bounding
        for cap in range(_last_capability() + 1):
            if bounding >> cap & 1 and not keep_mask >> cap & 1:
                _prctl(libc, _PR_CAPBSET_DROP, cap)
        if identity.user is not None:
            os.initgroups(identity.user, identity.gid)
        else:
            os.setgroups(list(identity.groups))
        os.setresgid(identity.gid, identity.gid, identity.gid)
        os.setresuid(identity.uid, identity.uid, identity.uid)
        _capset(libc, keep_mask)
        _prctl(libc, _PR_CAP_AMBIENT, _PR_CAP_AMBIENT_CLEAR_ALL)
        _prctl(libc, _PR_SET_KEEPCAPS, 0)
        _prctl(libc, _PR_SET_NO_NEW_PRIVS, 1)
    except OSError as e:
        hint = (" (the capability bounding set can only be emptied with CAP_SETPCAP: keep it in the "
                "service's CapabilityBoundingSet)" if e.errno == errno.EPERM else "")
        raise PrivilegeDropError(e.errno or errno.EPERM,
                                 f"could not switch to user {user!r}: {e.strerror}{hint}") from e
    now = credentials("thread-self")
    left = []
    if set(now.uids) != {identity.uid} or set(now.gids) != {identity.gid}:
        left.append(f"uids {now.uids}, gids {now.gids}")
    for name in ("effective", "permitted", "bounding"):
        if getattr(now, name) != keep_mask:
            left.append(f"{name} capabilities {getattr(now, name):#x}")
    for name in ("inheritable", "ambient"):
        if getattr(now, name):
            left.append(f"{name} capabilities {getattr(now, name):#x}")
    if not now.no_new_privs:
        left.append("no_new_privs is not set")
    if left:
        raise PrivilegeDropError(errno.EPERM, f"switching to user {user!r} left {'; '.join(left)}")
    return now

