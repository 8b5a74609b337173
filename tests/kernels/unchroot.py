"""unchroot.py -- run a command from inside a chroot as if the chroot's root were the real root.

    python3 tests/kernels/unchroot.py -- COMMAND [ARG...]

Why: the kernel matrix's guests run the test suite chrooted into the host's filesystem (shared/kernels/kchroot.sh),
and the kernel refuses unshare(CLONE_NEWUSER) to a chrooted process (EPERM, see user_namespaces(7) and
current_chrooted() in fs/namespace.c). That made the two "register from a child user namespace" tests skip in
every guest. This does what switch_root does after an initramfs, but only inside a private mount namespace:
leave the chroot, move the mount that was our root onto "/", chroot into it. The kernel then no longer counts us as
chrooted (it follows mounts stacked on the namespace root), and user namespaces work. The guest's own mounts and
every other process are untouched.

Needs root. If our root already is the real root (no chroot, or a bind mount of the real root) the command runs
unchanged, with a note on stderr.
"""

import ctypes
import os
import sys

CLONE_NEWNS = 0x00020000
MS_REC = 0x4000
MS_PRIVATE = 1 << 18
MS_MOVE = 0x2000

_libc = ctypes.CDLL(None, use_errno=True)
_libc.mount.argtypes = [ctypes.c_char_p, ctypes.c_char_p, ctypes.c_char_p, ctypes.c_ulong, ctypes.c_void_p]


def _check(rc: int, what: str) -> None:
    if rc != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"unchroot: {what}: {os.strerror(err)}")


def _find_mount(root_id: tuple[int, int]) -> str | None:
    """The path, as seen from the real root, of the directory that was our root (same st_dev and st_ino)."""
    # kchroot.sh uses /host; search the top two levels so other layouts work too.
    candidates = ["/"]
    for top in sorted(os.listdir("/")):
        path = "/" + top
        candidates.append(path)
        try:
            if os.path.isdir(path) and not os.path.islink(path):
                candidates.extend(os.path.join(path, sub) for sub in sorted(os.listdir(path)))
        except OSError:
            continue
    for path in candidates:
        try:
            st = os.stat(path, follow_symlinks=False)
        except OSError:
            continue
        if (st.st_dev, st.st_ino) == root_id:
            return path
    return None


def leave_chroot() -> None:
    """Make our current root the root of a new, private mount namespace (switch_root style)."""
    cwd = os.getcwd()
    st = os.stat("/")
    root_id = (st.st_dev, st.st_ino)
    _check(_libc.unshare(CLONE_NEWNS), "unshare(CLONE_NEWNS)")
    _check(_libc.mount(None, b"/", None, MS_REC | MS_PRIVATE, None), "mount --make-rprivate /")
    # Leave the chroot: chroot into a subdirectory while the working directory stays above it, then walk up.
    real_root_fd = os.open("/", os.O_RDONLY | os.O_DIRECTORY)
    scratch = os.path.join("/tmp", f"unchroot.{os.getpid()}")
    os.makedirs(scratch, exist_ok=True)
    os.chroot(scratch)
    os.fchdir(real_root_fd)
    os.close(real_root_fd)
    for _ in range(256):
        os.chdir("..")
    os.chroot(".")
    now = os.stat("/")
    if (now.st_dev, now.st_ino) == root_id:
        print("unchroot: our root already is the real root (no chroot, or a bind of it); "
              "running the command as is", file=sys.stderr)
    else:
        old_root = _find_mount(root_id)
        if old_root is None:
            raise OSError(f"unchroot: cannot find the directory that was our root (dev/ino {root_id}) "
                          "from the real root")
        os.chdir(old_root)
        _check(_libc.mount(old_root.encode(), b"/", None, MS_MOVE, None), f"mount --move {old_root} /")
        os.chroot(".")
    os.chdir(cwd)
    try:   # the scratch directory is at the same path again, under our old root
        os.rmdir(scratch)
    except OSError:
        pass


def main(argv: list[str]) -> int:
    if argv and argv[0] == "--":
        argv = argv[1:]
    if not argv:
        print(__doc__, file=sys.stderr)
        return 2
    leave_chroot()
    os.execvp(argv[0], argv)
    return 127  # not reached


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
