"""(De)registering a plain netlink socket for the exits of a cpumask, without ExitListener: how
tests hold registrations the listener does not know about."""

from __future__ import annotations

import errno

import taskstats_fast as tsf
from taskstats_fast._native import NOTE_ACK, NOTE_ERROR, ffi, lib
from taskstats_fast.kernel import netlink


def cpumask_request(sock, mask, *, register):
    """(De)register a plain socket for ``mask`` and wait for the ACK, skipping exit messages.
    ENOBUFS means the socket overflowed (other processes flood it with exits), and the ACK may be
    among what the kernel dropped: ask again ((de)registering twice is harmless)."""
    family = netlink.resolve_family().id
    raw = mask.encode()
    buf = bytearray(128)
    sock.setblocking(True)
    sock.settimeout(5)
    for _ in range(20):
        seq = netlink.next_seq()
        n = lib.tsf_build_cpumask(ffi.from_buffer(buf), len(buf), family, seq, 1 if register else 0,
                                  raw, len(raw))
        sock.send(bytes(buf[:n]))
        while True:
            try:
                data = sock.recv(65536)
            except OSError as e:
                if e.errno == errno.ENOBUFS:
                    break                      # the ACK may be lost: send again
                raise
            for note in tsf.parse(data).notes:
                if int(note["seq"]) == seq and int(note["kind"]) in (NOTE_ACK, NOTE_ERROR):
                    assert int(note["kind"]) == NOTE_ACK, f"kernel refused: errno {int(note['code'])}"
                    return
    raise AssertionError("no ACK: the socket overflowed every time")
