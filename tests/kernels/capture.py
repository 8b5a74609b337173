#!/usr/bin/env python3
"""Capture raw TASKSTATS / CGROUPSTATS generic-netlink traffic from the running kernel.

Standard library only (no taskstats_fast, no numpy): it must run unchanged on any kernel, including
qemu guests that chroot into this machine's root file system.

    python3 tests/kernels/capture.py OUTDIR      # write OUTDIR/*.bin + OUTDIR/manifest.json
    python3 tests/kernels/capture.py --version-only   # print the struct taskstats version, nothing else
    python3 tests/kernels/capture.py --info           # print one JSON line: release, cpus, version, family id

Every NAME.bin is the concatenation of the datagrams exactly as received (each datagram holds whole netlink
messages, so the file is itself a valid netlink message stream). manifest.json describes every capture:
the requests sent (hex), datagram lengths (so datagram boundaries can be recovered), the facts a test can
assert ("expect", taken from the process side: /proc, waitpid, os.getpid ...) and what this script's own
minimal decoder saw ("observed", for humans; tests should decode the .bin themselves).

Needs root (CAP_NET_ADMIN) for everything but the cgroupstats captures. cgroupstats needs a cgroup v1
hierarchy mounted somewhere (found in /proc/self/mountinfo); what cannot be captured is listed under
"skipped" in the manifest. Every receive is bounded by a timeout; the script never waits forever.
"""

import ctypes
import errno
import json
import os
import platform
import select
import signal
import socket
import struct
import sys
import threading
import time

# ---------------------------------------------------------------- constants (see taskstats-abi.md)
NETLINK_GENERIC = 16
NLMSG_ERROR = 2
NLMSG_DONE = 3
NLM_F_REQUEST = 0x01
NLM_F_ACK = 0x04
NLM_F_CAPPED = 0x100
GENL_ID_CTRL = 0x10
CTRL_CMD_GETFAMILY = 3
CTRL_ATTR_FAMILY_ID = 1
CTRL_ATTR_FAMILY_NAME = 2
CTRL_ATTR_VERSION = 3
CTRL_ATTR_HDRSIZE = 4
CTRL_ATTR_MAXATTR = 5
CTRL_ATTR_OPS = 6
CTRL_ATTR_MCAST_GROUPS = 7

TASKSTATS_GENL_VERSION = 1
TASKSTATS_CMD_GET = 1
TASKSTATS_CMD_NEW = 2
CMD_ATTR_PID = 1
CMD_ATTR_TGID = 2
CMD_ATTR_REGISTER_CPUMASK = 3
CMD_ATTR_DEREGISTER_CPUMASK = 4
TYPE_PID = 1
TYPE_TGID = 2
TYPE_STATS = 3
TYPE_AGGR_PID = 4
TYPE_AGGR_TGID = 5
TYPE_NULL = 6
CGROUPSTATS_CMD_GET = 4
CGROUPSTATS_CMD_NEW = 5
CGROUPSTATS_CMD_ATTR_FD = 1
CGROUPSTATS_TYPE_CGROUP_STATS = 1

AFORK, ASU, ACORE, AXSIG = 0x01, 0x02, 0x08, 0x10
PR_SET_NAME = 15
RECV_BUF = 65536          # per-datagram receive size (>= 8 KiB; MSG_TRUNC is checked anyway)
RECV_TIMEOUT = 2.0        # seconds, for replies to our own requests
EVENT_TIMEOUT = 10.0      # seconds, overall bound for waiting for exit events

FORMAT_VERSION = 1


class CaptureError(Exception):
    pass


# ---------------------------------------------------------------- netlink encoding / decoding
def _pad4(n):
    return (n + 3) & ~3


def nla(atype, data):
    ln = 4 + len(data)
    return struct.pack("=HH", ln, atype) + data + b"\0" * (_pad4(ln) - ln)


def nla_u32(atype, v):
    return nla(atype, struct.pack("=I", v))


def nla_str(atype, s):
    return nla(atype, s.encode() + b"\0")


def genl_msg(family, cmd, version, attrs, seq, flags=NLM_F_REQUEST):
    payload = struct.pack("=BBH", cmd, version, 0) + attrs
    return struct.pack("=IHHII", 16 + len(payload), family, flags, seq, 0) + payload


def parse_stream(buf):
    """Split a byte string into netlink messages: list of dicts (off, len, type, flags, seq, pid, payload)."""
    out, off = [], 0
    while off < len(buf):
        if off + 16 > len(buf):
            raise CaptureError("trailing %d bytes at %d" % (len(buf) - off, off))
        ln, typ, flags, seq, pid = struct.unpack_from("=IHHII", buf, off)
        if ln < 16 or off + ln > len(buf):
            raise CaptureError("bad nlmsg_len %d at %d" % (ln, off))
        out.append(dict(off=off, len=ln, type=typ, flags=flags, seq=seq, pid=pid, payload=buf[off + 16:off + ln]))
        off += _pad4(ln)
    return out


def parse_attrs(buf):
    out, off = [], 0
    while off + 4 <= len(buf):
        ln, typ = struct.unpack_from("=HH", buf, off)
        if ln < 4 or off + ln > len(buf):
            raise CaptureError("bad nla_len %d at %d" % (ln, off))
        out.append((typ & 0x3FFF, buf[off + 4:off + ln]))
        off += _pad4(ln)
    return out


def nl_error(msg):
    """(errno, original header dict) of an NLMSG_ERROR message; errno 0 = ACK."""
    err, = struct.unpack_from("=i", msg["payload"], 0)
    ohdr = None
    if len(msg["payload"]) >= 20:
        ln, typ, flags, seq, pid = struct.unpack_from("=IHHII", msg["payload"], 4)
        ohdr = dict(len=ln, type=typ, flags=flags, seq=seq, pid=pid)
    return -err, ohdr


# struct taskstats field offsets we decode for the "observed" section. v15 is the broken 6.14 layout.
_OFFS_STD = dict(comm=80, uid=120, gid=124, pid=128, ppid=132, tgid=368)
_OFFS_V15 = dict(comm=128, uid=168, gid=172, pid=176, ppid=180, tgid=464)


def decode_stats(data):
    d = {"size": len(data)}
    if len(data) < 2:
        return d
    ver, = struct.unpack_from("=H", data, 0)
    d["version"] = ver
    if len(data) >= 10:
        d["ac_exitcode"], d["ac_flag"], d["ac_nice"] = struct.unpack_from("=IBB", data, 4)
    o = _OFFS_V15 if ver == 15 else _OFFS_STD
    if len(data) >= o["ppid"] + 4:
        d["ac_comm"] = data[o["comm"]:o["comm"] + 32].split(b"\0", 1)[0].decode("latin-1")
        for k in ("uid", "gid", "pid", "ppid"):
            d["ac_" + k], = struct.unpack_from("=I", data, o[k])
    if len(data) >= o["tgid"] + 4 and (ver >= 12 or ver == 0):
        d["ac_tgid"], = struct.unpack_from("=I", data, o["tgid"])
    return d


def decode_taskstats_msg(msg):
    """Decode a TASKSTATS genl message into a list of records [{kind, id, stats}], plus NULL-attr positions."""
    p = msg["payload"]
    cmd, ver = struct.unpack_from("=BB", p, 0)
    recs, nulls = [], []
    for typ, data in parse_attrs(p[4:]):
        if typ == TYPE_NULL:
            nulls.append("top")
            continue
        if typ not in (TYPE_AGGR_PID, TYPE_AGGR_TGID):
            recs.append({"kind": "attr%d" % typ, "len": len(data)})
            continue
        rec = {"kind": "PID" if typ == TYPE_AGGR_PID else "TGID"}
        for t2, d2 in parse_attrs(data):
            if t2 in (TYPE_PID, TYPE_TGID):
                rec["id"], = struct.unpack_from("=I", d2, 0)
            elif t2 == TYPE_STATS:
                rec["stats"] = decode_stats(d2)
            elif t2 == TYPE_NULL:
                nulls.append("in_" + rec["kind"])
        recs.append(rec)
    return {"cmd": cmd, "genl_version": ver, "records": recs, "null_pad": nulls}


def describe_stream(buf):
    """Human-readable summary of every message in a byte stream."""
    out = []
    for m in parse_stream(buf):
        e = {"len": m["len"], "type": m["type"], "flags": m["flags"], "seq": m["seq"], "nlmsg_pid": m["pid"]}
        if m["type"] == NLMSG_ERROR:
            e["errno"], oh = nl_error(m)
            e["errno_name"] = errno.errorcode.get(e["errno"], "OK" if e["errno"] == 0 else "?")
            if oh:
                e["orig_seq"] = oh["seq"]
        elif m["type"] == NLMSG_DONE:
            e["done"] = True
        elif m["type"] >= 0x10:
            try:
                if m["type"] == GENL_ID_CTRL:
                    e["ctrl_cmd"] = m["payload"][0]
                else:
                    d = decode_taskstats_msg(m)
                    if d["cmd"] == CGROUPSTATS_CMD_NEW:
                        for t, data in parse_attrs(m["payload"][4:]):
                            if t == CGROUPSTATS_TYPE_CGROUP_STATS and len(data) >= 40:
                                e["cgroupstats"] = dict(zip(
                                    ("nr_sleeping", "nr_running", "nr_stopped", "nr_uninterruptible", "nr_io_wait"),
                                    struct.unpack_from("=5Q", data, 0)))
                    e.update(d)
            except (CaptureError, struct.error) as ex:
                e["decode_error"] = str(ex)
        out.append(e)
    return out


# ---------------------------------------------------------------- socket helpers
class NL:
    def __init__(self, rcvbuf=None):
        self.s = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, NETLINK_GENERIC)
        if rcvbuf:
            self.s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
        self.s.bind((0, 0))
        self.port = self.s.getsockname()[0]

    def close(self):
        self.s.close()

    def send(self, data):
        self.s.sendto(data, (0, 0))

    def recv(self, timeout):
        """One datagram or None on timeout. Raises on MSG_TRUNC. ENOBUFS is returned as the string 'ENOBUFS'."""
        self.s.settimeout(max(timeout, 0.001))
        try:
            data, _anc, flags, _addr = self.s.recvmsg(RECV_BUF)
        except socket.timeout:
            return None
        except OSError as ex:
            if ex.errno == errno.ENOBUFS:
                return "ENOBUFS"
            raise
        if flags & socket.MSG_TRUNC:
            raise CaptureError("MSG_TRUNC: datagram larger than %d bytes" % RECV_BUF)
        return data

    def drain(self, want_seqs, timeout=RECV_TIMEOUT, extra_wait=0.2):
        """Receive until every seq in want_seqs has a final reply (NLMSG_ERROR or a non-multipart message),
        then keep listening extra_wait seconds for stray messages. Returns the list of datagrams."""
        want = set(want_seqs)
        dgrams = []
        deadline = time.monotonic() + timeout
        while want and time.monotonic() < deadline:
            d = self.recv(deadline - time.monotonic())
            if d is None:
                break
            if d == "ENOBUFS":
                raise CaptureError("ENOBUFS on request socket")
            dgrams.append(d)
            for m in parse_stream(d):
                want.discard(m["seq"])
        if want:
            raise CaptureError("no reply for seq %s within %.1fs" % (sorted(want), timeout))
        end = time.monotonic() + extra_wait
        while time.monotonic() < end:
            d = self.recv(end - time.monotonic())
            if d is None:
                break
            dgrams.append(d)
        return dgrams


_seq = [int(time.time()) % 100000 * 10]


def next_seq():
    _seq[0] += 1
    return _seq[0]


def resolve_family(nl, name="TASKSTATS"):
    seq = next_seq()
    req = genl_msg(GENL_ID_CTRL, CTRL_CMD_GETFAMILY, 1, nla_str(CTRL_ATTR_FAMILY_NAME, name), seq)
    nl.send(req)
    dgrams = nl.drain([seq], extra_wait=0)
    info = {"request_seq": seq, "request_hex": req.hex()}
    for d in dgrams:
        for m in parse_stream(d):
            if m["type"] == NLMSG_ERROR:
                err, _ = nl_error(m)
                raise CaptureError("CTRL_CMD_GETFAMILY(%s): %s" % (name, errno.errorcode.get(err, err)))
            if m["type"] != GENL_ID_CTRL:
                continue
            for t, data in parse_attrs(m["payload"][4:]):
                if t == CTRL_ATTR_FAMILY_ID:
                    info["id"], = struct.unpack_from("=H", data)
                elif t == CTRL_ATTR_FAMILY_NAME:
                    info["name"] = data.split(b"\0", 1)[0].decode()
                elif t == CTRL_ATTR_VERSION:
                    info["version"], = struct.unpack_from("=I", data)
                elif t == CTRL_ATTR_HDRSIZE:
                    info["hdrsize"], = struct.unpack_from("=I", data)
                elif t == CTRL_ATTR_MAXATTR:
                    info["maxattr"], = struct.unpack_from("=I", data)
                elif t == CTRL_ATTR_OPS:
                    ops = []
                    for _i, op in parse_attrs(data):
                        o = {}
                        for t2, d2 in parse_attrs(op):
                            if t2 in (1, 2):  # CTRL_ATTR_OP_ID, CTRL_ATTR_OP_FLAGS
                                o["id" if t2 == 1 else "flags"], = struct.unpack_from("=I", d2)
                        ops.append(o)
                    info["ops"] = ops
                elif t == CTRL_ATTR_MCAST_GROUPS:
                    info["mcast_groups"] = len(parse_attrs(data))
    if "id" not in info:
        raise CaptureError("no family id in CTRL reply")
    return info, dgrams


# ---------------------------------------------------------------- process helpers
_libc = None


def set_comm(name):
    """prctl(PR_SET_NAME) for the calling thread (name: str, truncated by the kernel to 15 bytes)."""
    global _libc
    if _libc is None:
        _libc = ctypes.CDLL(None, use_errno=True)
    buf = ctypes.create_string_buffer(name.encode()[:15])
    if _libc.prctl(PR_SET_NAME, buf, 0, 0, 0) != 0:
        raise OSError(ctypes.get_errno(), "prctl(PR_SET_NAME)")


def read_proc(pid, what):
    with open("/proc/%d/%s" % (pid, what)) as f:
        return f.read()


def proc_state(pid):
    s = read_proc(pid, "stat")
    return s[s.rindex(")") + 2:].split()[0]


def proc_status(pid):
    d = {}
    for line in read_proc(pid, "status").splitlines():
        k, _, v = line.partition(":")
        d[k] = v.strip()
    return d


class Child:
    """A forked child running fn(ready_w, go_r). The parent reads one JSON line from the child (ready()) and
    lets it continue with go(). A safety alarm kills forgotten children."""

    def __init__(self, fn, alarm=60):
        r_ready, w_ready = os.pipe()
        r_go, w_go = os.pipe()
        pid = os.fork()
        if pid == 0:  # child
            code = 0
            try:
                os.close(r_ready)
                os.close(w_go)
                signal.alarm(alarm)
                fn(w_ready, r_go)
            except BaseException:
                code = 120
            os._exit(code)
        os.close(w_ready)
        os.close(r_go)
        self.pid, self.r, self.w, self.status = pid, r_ready, w_go, None

    def ready(self, timeout=10.0):
        buf = b""
        deadline = time.monotonic() + timeout
        while not buf.endswith(b"\n"):
            left = deadline - time.monotonic()
            if left <= 0 or not select.select([self.r], [], [], left)[0]:
                raise CaptureError("child %d not ready" % self.pid)
            chunk = os.read(self.r, 4096)
            if not chunk:
                raise CaptureError("child %d died before ready" % self.pid)
            buf += chunk
        return json.loads(buf)

    def go(self, byte=b"g"):
        os.write(self.w, byte)

    def wait(self, timeout=10.0):
        deadline = time.monotonic() + timeout
        while True:
            pid, st = os.waitpid(self.pid, os.WNOHANG)
            if pid:
                self.status = st
                break
            if time.monotonic() > deadline:
                os.kill(self.pid, signal.SIGKILL)
                _, self.status = os.waitpid(self.pid, 0)
                raise CaptureError("child %d did not exit" % self.pid)
            time.sleep(0.01)
        for fd in (self.r, self.w):
            try:
                os.close(fd)
            except OSError:
                pass
        return self.status

    def kill(self):
        if self.status is None:
            try:
                os.kill(self.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            try:
                self.wait(5)
            except (CaptureError, ChildProcessError):
                pass


def child_say(w, obj):
    os.write(w, (json.dumps(obj) + "\n").encode())


def child_wait_go(r):
    return os.read(r, 1)


def dead_pid():
    """A pid that certainly belonged to a process a moment ago and is now reaped."""
    pid = os.fork()
    if pid == 0:
        os._exit(0)
    os.waitpid(pid, 0)
    return pid


def wait_threads(n, timeout=5.0):
    deadline = time.monotonic() + timeout
    while len(os.listdir("/proc/self/task")) != n:
        if time.monotonic() > deadline:
            raise RuntimeError("thread count did not reach %d" % n)
        time.sleep(0.002)


# ---------------------------------------------------------------- system facts
def cpulist_to_set(s):
    cpus = set()
    for part in s.strip().split(","):
        if not part:
            continue
        a, _, b = part.partition("-")
        cpus.update(range(int(a), int(b or a) + 1))
    return cpus


def read_file(path, default=None):
    try:
        with open(path) as f:
            return f.read().strip()
    except OSError:
        return default


def cpu_facts():
    possible = read_file("/sys/devices/system/cpu/possible", "0")
    online = read_file("/sys/devices/system/cpu/online", possible)
    kmax = read_file("/sys/devices/system/cpu/kernel_max")
    pset = cpulist_to_set(possible)
    return {
        "online_count": len(cpulist_to_set(online)),
        "online": online,
        "possible": possible,
        "possible_count": len(pset),
        "nr_cpu_ids": max(pset) + 1,         # what the kernel computes from cpu_possible_mask
        "kernel_max": int(kmax) if kmax is not None else None,   # NR_CPUS - 1
        "os_cpu_count": os.cpu_count(),
        "affinity_count": len(os.sched_getaffinity(0)),
    }


def cgroup_mounts():
    """(v1 mount points with their options, v2 mount points) from /proc/self/mountinfo."""
    v1, v2 = [], []
    try:
        with open("/proc/self/mountinfo") as f:
            for line in f:
                pre, _, post = line.partition(" - ")
                fields, pfields = pre.split(), post.split()
                if len(fields) < 5 or len(pfields) < 3:
                    continue
                mnt = fields[4].replace("\\040", " ")
                if pfields[0] == "cgroup":
                    v1.append((mnt, pfields[2]))
                elif pfields[0] == "cgroup2":
                    v2.append(mnt)
    except OSError:
        pass
    return v1, v2


# ---------------------------------------------------------------- the capture session
class Session:
    def __init__(self, outdir):
        self.outdir = outdir
        self.captures = {}
        self.skipped = {}
        self.notes = []
        self.doc_differences = []
        self.nl = NL()
        self.family = None
        self.struct_version = None

    # -- bookkeeping
    def save(self, name, dgrams, requests=(), expect=None, what="", extra=None):
        data = b"".join(dgrams)
        with open(os.path.join(self.outdir, name + ".bin"), "wb") as f:
            f.write(data)
        msgs = parse_stream(data)
        entry = {
            "file": name + ".bin",
            "what": what,
            "bytes": len(data),
            "datagrams": [len(d) for d in dgrams],
            "message_count": len(msgs),
            "requests": list(requests),
            "expect": expect or {},
            "observed": describe_stream(data),
        }
        if extra:
            entry.update(extra)
        self.captures[name] = entry
        return entry

    def req(self, cmd, attrs, flags=NLM_F_REQUEST, family=None):
        seq = next_seq()
        fam = self.family["id"] if family is None else family
        raw = genl_msg(fam, cmd, TASKSTATS_GENL_VERSION, attrs, seq, flags)
        return seq, raw

    @staticmethod
    def req_info(seq, raw, **kw):
        d = {"seq": seq, "hex": raw.hex()}
        d.update(kw)
        return d

    def query(self, attr, ident, nl=None):
        nl = nl or self.nl
        seq, raw = self.req(TASKSTATS_CMD_GET, nla_u32(attr, ident))
        nl.send(raw)
        return seq, raw, nl.drain([seq])

    # -- 1. family
    def cap_family(self):
        self.family, dgrams = resolve_family(self.nl)
        self.save("family", dgrams,
                  requests=[{"seq": self.family["request_seq"], "hex": self.family["request_hex"]}],
                  what="CTRL_CMD_GETFAMILY reply (CTRL_CMD_NEWFAMILY) for \"TASKSTATS\"",
                  expect={"family_id": self.family["id"], "name": "TASKSTATS", "messages": 1})

    # -- 2. pid_self
    def cap_pid_self(self):
        pid = os.getpid()
        st = proc_status(pid)
        seq, raw, dgrams = self.query(CMD_ATTR_PID, pid)
        for m in parse_stream(b"".join(dgrams)):
            if m["type"] == NLMSG_ERROR:
                err, _ = nl_error(m)
                if err == errno.EPERM:  # not root / no CAP_NET_ADMIN: keep the reply as a capture of its own
                    self.save("error_eperm", dgrams, [self.req_info(seq, raw, attr="PID", id=pid)],
                              what="TASKSTATS_CMD_GET without CAP_NET_ADMIN -> NLMSG_ERROR -EPERM",
                              expect={"seq": seq, "errno": errno.EPERM, "messages": 1, "uid": os.getuid()})
                raise CaptureError("TASKSTATS_CMD_GET(own pid): %s (needs root / CAP_NET_ADMIN)"
                                   % errno.errorcode.get(err, err))
        e = self.save("pid_self", dgrams, [self.req_info(seq, raw, attr="PID", id=pid)],
                      what="TASKSTATS_CMD_GET by pid for the capturing process itself",
                      expect={"seq": seq, "records": ["PID"], "pid": pid, "tgid": int(st["Tgid"]),
                              "ppid": os.getppid(), "comm": read_proc(pid, "comm").rstrip("\n"),
                              "uid": os.getuid(), "gid": os.getgid(), "messages": 1})
        recs = e["observed"][0].get("records", [])
        stats = [r["stats"] for r in recs if "stats" in r]
        if not stats:
            raise CaptureError("no STATS in the pid_self reply")
        self.struct_version = stats[0]["version"]
        self.stats_size = stats[0]["size"]

    # -- 3. tgid_threads
    def cap_tgid_threads(self, nthreads=3):
        def body(w, r):
            set_comm("ts_tgid_main")
            stop = threading.Event()
            started = []

            def worker(i):
                set_comm("ts_tgid_t%d" % i)
                started.append(threading.get_native_id())
                stop.wait(30)

            ths = [threading.Thread(target=worker, args=(i,)) for i in range(1, nthreads)]
            for t in ths:
                t.start()
            wait_threads(nthreads)
            child_say(w, {"tids": [threading.get_native_id()] + started})
            child_wait_go(r)
            stop.set()
            for t in ths:
                t.join()
            os._exit(0)

        c = Child(body)
        try:
            info = c.ready()
            ntask = len(os.listdir("/proc/%d/task" % c.pid))
            seq, raw, dgrams = self.query(CMD_ATTR_TGID, c.pid)
            c.go()
            status = c.wait()
        finally:
            c.kill()
        self.save("tgid_threads", dgrams, [self.req_info(seq, raw, attr="TGID", id=c.pid)],
                  what="TASKSTATS_CMD_GET by tgid for a live child running %d threads" % nthreads,
                  expect={"seq": seq, "records": ["TGID"], "tgid": c.pid, "nthreads": ntask,
                          "tids": info["tids"], "ppid": os.getpid(), "uid": os.getuid(),
                          "comm_main": "ts_tgid_main", "child_exit_status": status, "messages": 1,
                          "doc": "TGID reply: sums over threads; comm/pid/uid zero per taskstats-abi.md"})

    # -- 4. errors
    def cap_errors(self):
        pid = None
        for _ in range(5):
            p = dead_pid()
            if not os.path.exists("/proc/%d" % p):
                pid = p
                break
        if pid is None:
            raise CaptureError("could not find a dead pid")
        seq, raw, dgrams = self.query(CMD_ATTR_PID, pid)
        self.save("error_esrch", dgrams, [self.req_info(seq, raw, attr="PID", id=pid)],
                  what="TASKSTATS_CMD_GET by pid for a reaped pid -> NLMSG_ERROR -ESRCH",
                  expect={"seq": seq, "errno": errno.ESRCH, "pid": pid, "messages": 1})

        seq, raw = self.req(TASKSTATS_CMD_GET, b"")
        self.nl.send(raw)
        dgrams = self.nl.drain([seq])
        self.save("error_einval", dgrams, [self.req_info(seq, raw, attr=None)],
                  what="TASKSTATS_CMD_GET without any attribute -> NLMSG_ERROR -EINVAL",
                  expect={"seq": seq, "errno": errno.EINVAL, "messages": 1})

    # -- 5. batch
    def cap_batch(self):
        def sleeper(name):
            def body(w, r):
                set_comm(name)
                child_say(w, {})
                child_wait_go(r)
                os._exit(0)
            return body

        kids = [Child(sleeper("ts_batch_a")), Child(sleeper("ts_batch_b"))]
        try:
            for k in kids:
                k.ready()
            dead = dead_pid()
            plan = [(os.getpid(), "PID"), (os.getppid(), "PID"), (dead, errno.ESRCH),
                    (kids[0].pid, "PID"), (kids[1].pid, "PID")]
            reqs, raws, seqs = [], [], []
            for ident, exp in plan:
                seq, raw = self.req(TASKSTATS_CMD_GET, nla_u32(CMD_ATTR_PID, ident))
                raws.append(raw)
                seqs.append(seq)
                d = self.req_info(seq, raw, attr="PID", id=ident)
                if exp == "PID":
                    d.update(expect="PID", comm=read_proc(ident, "comm").rstrip("\n"))
                else:
                    d.update(expect="error", errno=exp)
                reqs.append(d)
            blob = b"".join(raws)
            self.nl.send(blob)  # ONE sendmsg carrying 5 requests
            dgrams = self.nl.drain(seqs, extra_wait=0.3)
        finally:
            for k in kids:
                k.go()
                try:
                    k.wait()
                except CaptureError:
                    pass
                k.kill()
        self.save("batch", dgrams, reqs,
                  what="5 TASKSTATS_CMD_GET requests (4 live pids, 1 reaped) in ONE send; all replies drained",
                  expect={"requests": len(reqs), "replies": len(reqs), "messages": len(reqs),
                          "send_hex_len": len(blob)})

    # -- 6/7/8. exit events
    def register(self, nl, mask, dereg=False):
        attr = CMD_ATTR_DEREGISTER_CPUMASK if dereg else CMD_ATTR_REGISTER_CPUMASK
        seq, raw = self.req(TASKSTATS_CMD_GET, nla_str(attr, mask), flags=NLM_F_REQUEST | NLM_F_ACK)
        nl.send(raw)
        # the listener may already receive exit events of unrelated processes: pick out the ACK by seq
        deadline = time.monotonic() + RECV_TIMEOUT
        while time.monotonic() < deadline:
            d = nl.recv(deadline - time.monotonic())
            if d is None:
                break
            if d == "ENOBUFS":
                continue
            for m in parse_stream(d):
                if m["type"] == NLMSG_ERROR and m["seq"] == seq:
                    err, _ = nl_error(m)
                    return seq, raw, d, err
        raise CaptureError("no ACK for %sregister %r" % ("de" if dereg else "", mask))

    def collect_exits(self, nl, want, timeout=EVENT_TIMEOUT):
        """Receive exit datagrams until for each pid in `want` (pid -> set of record kinds) all kinds seen.
        Only datagrams with a record for one of our pids are kept (raw, untouched)."""
        pending = {p: set(k) for p, k in want.items()}
        kept, foreign, enobufs = [], 0, 0
        deadline = time.monotonic() + timeout
        while any(pending.values()) and time.monotonic() < deadline:
            d = nl.recv(deadline - time.monotonic())
            if d is None:
                break
            if d == "ENOBUFS":
                enobufs += 1
                continue
            mine = False
            for m in parse_stream(d):
                if m["type"] < 0x10:
                    continue
                for rec in decode_taskstats_msg(m)["records"]:
                    ident = rec.get("id")
                    if rec["kind"] == "PID" and ident in pending:
                        mine = True
                        pending[ident].discard("PID")
                    elif rec["kind"] == "TGID" and ident in pending:
                        mine = True
                        pending[ident].discard("TGID")
            if mine:
                kept.append(d)
            else:
                foreign += 1
        missing = {p: sorted(k) for p, k in pending.items() if k}
        return kept, {"foreign_datagrams_dropped": foreign, "enobufs": enobufs, "missing": missing}

    def cap_exit_single(self, lnl, mask):
        plan = [("ts_exit3", ("exit", 3)), ("ts_exit7", ("exit", 7)), ("ts_exit0", ("exit", 0)),
                ("ts_sigkill", ("signal", signal.SIGKILL)), ("ts_sigterm", ("signal", signal.SIGTERM))]
        kids = []
        for name, (how, val) in plan:
            pid = os.fork()
            if pid == 0:
                try:
                    signal.signal(signal.SIGTERM, signal.SIG_DFL)
                    set_comm(name)
                    if how == "exit":
                        os._exit(val)
                    os.kill(os.getpid(), val)
                    time.sleep(5)
                finally:
                    os._exit(99)
            kids.append((pid, name, how, val))
        expect_kids = []
        for pid, name, how, val in kids:
            _, st = os.waitpid(pid, 0)
            want_st = (val << 8) if how == "exit" else int(val)
            if st != want_st:
                self.notes.append("exit_single: %s wait status %d, wanted %d" % (name, st, want_st))
            flags = AFORK | (AXSIG if how == "signal" else 0)
            expect_kids.append({"pid": pid, "tgid": pid, "comm": name, "ppid": os.getpid(), "uid": os.getuid(),
                                "gid": os.getgid(), "ac_exitcode": st, "records": ["PID"],
                                "ac_flag_set": flags, "how": "%s %d" % (how, val)})
        dgrams, stat = self.collect_exits(lnl, {k["pid"]: {"PID"} for k in expect_kids})
        if stat["missing"]:
            raise CaptureError("exit_single: no event for %s" % stat["missing"])
        return dgrams, expect_kids, stat

    def cap_exit_threads(self, lnl, nthreads=3):
        def body(w, r):
            set_comm("ts_mt_main")
            evs = [threading.Event() for _ in range(1, nthreads)]
            tids = [None] * (nthreads - 1)
            up = threading.Barrier(nthreads)

            def worker(i):
                set_comm("ts_mt_t%d" % (i + 1))
                tids[i] = threading.get_native_id()
                up.wait(10)
                evs[i].wait(30)

            ths = [threading.Thread(target=worker, args=(i,)) for i in range(nthreads - 1)]
            for t in ths:
                t.start()
            up.wait(10)
            child_say(w, {"main": threading.get_native_id(), "tids": tids})
            child_wait_go(r)
            # let the threads exit one by one, each really gone from the kernel before the next
            for i, t in enumerate(ths):
                evs[i].set()
                t.join()
                wait_threads(nthreads - 1 - i)
            os._exit(5)

        c = Child(body)
        try:
            info = c.ready()
            c.go()
            status = c.wait()
        finally:
            c.kill()
        tgid = c.pid
        threads = []
        for i, tid in enumerate(info["tids"]):
            threads.append({"tid": tid, "pid": tid, "tgid": tgid, "comm": "ts_mt_t%d" % (i + 1), "ac_exitcode": 0,
                            "records": ["PID"], "ac_flag_set": 0, "order": i})
        threads.append({"tid": info["main"], "pid": info["main"], "tgid": tgid, "comm": "ts_mt_main",
                        "ac_exitcode": status, "records": ["PID", "TGID"], "ac_flag_set": AFORK,
                        "order": len(threads), "last_thread": True})
        want = {t["tid"]: {"PID"} for t in threads}
        want[tgid] = {"PID", "TGID"}
        dgrams, stat = self.collect_exits(lnl, want)
        if stat["missing"]:
            raise CaptureError("exit_threads: missing %s" % stat["missing"])
        return dgrams, threads, tgid, status, stat

    def cap_exits(self):
        possible = read_file("/sys/devices/system/cpu/possible", "0")
        lnl = NL(rcvbuf=1 << 20)
        try:
            seq, raw, ack, err = self.register(lnl, possible)
            self.save("register_ack", [ack], [self.req_info(seq, raw, attr="REGISTER_CPUMASK", mask=possible,
                                                            flags=NLM_F_REQUEST | NLM_F_ACK)],
                      what="ACK (NLMSG_ERROR, error 0) of a REGISTER_CPUMASK request for all possible CPUs",
                      expect={"seq": seq, "errno": 0, "messages": 1, "mask": possible})
            if err != 0:
                raise CaptureError("register %r failed: %s" % (possible, errno.errorcode.get(err, err)))
            try:
                dg, kids, st = self.cap_exit_single(lnl, possible)
                self.save("exit_single", dg, [],
                          what="exit events of %d single-threaded children (PID-only messages), only ours kept"
                               % len(kids),
                          expect={"children": kids, "messages": len(kids), "nlmsg_pid": 0,
                                  "order": "as received; one datagram per child"},
                          extra={"filter": st, "listener_mask": possible})
            except CaptureError as ex:
                self.skipped["exit_single"] = "failed: %s" % ex
            try:
                dg, threads, tgid, status, st = self.cap_exit_threads(lnl)
                self.save("exit_threads", dg, [],
                          what="exit events of a 3-thread child: 2 threads exit first (PID-only), then the main "
                               "thread calls _exit(5): PID+TGID in one datagram",
                          expect={"tgid": tgid, "threads": threads, "nthreads": len(threads),
                                  "messages": len(threads), "datagrams": len(threads),
                                  "child_exit_status": status, "ppid": os.getpid(), "uid": os.getuid(),
                                  "last_datagram_records": ["PID", "TGID"]},
                          extra={"filter": st, "listener_mask": possible})
            except CaptureError as ex:
                self.skipped["exit_threads"] = "failed: %s" % ex
            seq, raw, ack, err = self.register(lnl, possible, dereg=True)
            self.save("deregister_ack", [ack], [self.req_info(seq, raw, attr="DEREGISTER_CPUMASK", mask=possible,
                                                              flags=NLM_F_REQUEST | NLM_F_ACK)],
                      what="ACK of the DEREGISTER_CPUMASK request", expect={"seq": seq, "errno": 0, "messages": 1})
        finally:
            lnl.close()

    def cap_register_bad(self):
        cf = cpu_facts()
        cases = [
            ("register_bad", str(cf["nr_cpu_ids"]), errno.ERANGE,
             "REGISTER_CPUMASK with CPU nr_cpu_ids (%d, one past the last possible CPU)" % cf["nr_cpu_ids"]),
            ("register_garbage", "garbage", errno.EINVAL, "REGISTER_CPUMASK with the string \"garbage\""),
            ("register_huge", "0-%d" % 100000, errno.ERANGE, "REGISTER_CPUMASK \"0-100000\" (beyond NR_CPUS)"),
        ]
        for name, mask, doc_err, what in cases:
            nl = NL()
            try:
                seq, raw, ack, err = self.register(nl, mask)
                if err == 0:  # should not happen; do not stay registered
                    self.register(nl, mask, dereg=True)
            finally:
                nl.close()
            exp = {"seq": seq, "errno": err, "doc_errno": doc_err, "mask": mask, "messages": 1,
                   "nr_cpu_ids": cf["nr_cpu_ids"], "kernel_max": cf["kernel_max"]}
            self.save(name, [ack], [self.req_info(seq, raw, attr="REGISTER_CPUMASK", mask=mask,
                                                  flags=NLM_F_REQUEST | NLM_F_ACK)],
                      what=what + " -> NLMSG_ERROR", expect=exp)
            if err != doc_err:
                self.doc_differences.append("%s: mask %r gave %s, taskstats-abi.md says %s" % (
                    name, mask, errno.errorcode.get(err, err), errno.errorcode.get(doc_err, doc_err)))

    # -- 9. cgroupstats
    def cgroup_query(self, fd):
        seq, raw = self.req(CGROUPSTATS_CMD_GET, nla_u32(CGROUPSTATS_CMD_ATTR_FD, fd),
                            flags=NLM_F_REQUEST | NLM_F_ACK)
        self.nl.send(raw)
        return seq, raw, self.nl.drain([seq], extra_wait=0.3)

    def cap_cgroups(self):
        v1, v2 = cgroup_mounts()
        self.cgroup_info = {"v1": [m for m, _ in v1], "v2": v2}
        if not v1:
            self.skipped["cgroup_v1"] = "no cgroup v1 hierarchy mounted"
        else:
            # prefer a plain controller hierarchy (cpu, pids, ...) over named ones (name=systemd)
            v1.sort(key=lambda mo: ("name=" in mo[1], mo[0]))
            self.cap_cgroup_v1(v1[0][0])
        if not v2:
            self.skipped["cgroup_v2_error"] = "no cgroup2 hierarchy mounted"
        else:
            fd = os.open(v2[0], os.O_RDONLY | os.O_DIRECTORY)
            try:
                seq, raw, dgrams = self.cgroup_query(fd)
            finally:
                os.close(fd)
            self.save("cgroup_v2_error", dgrams, [self.req_info(seq, raw, attr="FD", path=v2[0],
                                                                flags=NLM_F_REQUEST | NLM_F_ACK)],
                      what="CGROUPSTATS_CMD_GET on a cgroup v2 directory fd -> NLMSG_ERROR -EINVAL",
                      expect={"seq": seq, "errno": errno.EINVAL, "messages": 1, "path": v2[0]})
        # a directory that is not a cgroup at all, and an fd number that is not open
        fd = os.open("/", os.O_RDONLY | os.O_DIRECTORY)
        try:
            seq, raw, dgrams = self.cgroup_query(fd)
        finally:
            os.close(fd)
        self.save("cgroup_notcg_error", dgrams, [self.req_info(seq, raw, attr="FD", path="/")],
                  what="CGROUPSTATS_CMD_GET on the fd of / (not a cgroup) -> NLMSG_ERROR -EINVAL",
                  expect={"seq": seq, "errno": errno.EINVAL, "messages": 1})
        badfd = 1000
        while True:
            try:
                os.fstat(badfd)
                badfd += 1
            except OSError:
                break
        seq, raw, dgrams = self.cgroup_query(badfd)
        self.save("cgroup_badfd", dgrams, [self.req_info(seq, raw, attr="FD", fd=badfd)],
                  what="CGROUPSTATS_CMD_GET with an fd number that is not open -> no reply, only the ACK",
                  expect={"seq": seq, "errno": 0, "messages": 1, "doc": "only the ACK (error 0)"})

    def cap_cgroup_v1(self, mnt):
        sub = os.path.join(mnt, "ts_capture_%d" % os.getpid())
        made = False
        kids = []
        try:
            try:
                os.mkdir(sub)
                made = True
            except OSError as ex:
                self.notes.append("cgroup_v1: mkdir %s failed (%s); querying the hierarchy root" % (sub, ex))
            target = sub if made else mnt
            states = {}
            expect = {}
            if made:
                def sleeper(w, r):
                    set_comm("ts_cg_sleep")
                    child_say(w, {})
                    child_wait_go(r)
                    os._exit(0)

                def spinner(w, r):
                    set_comm("ts_cg_spin")
                    child_say(w, {})
                    end = time.monotonic() + 20
                    while time.monotonic() < end:
                        pass
                    os._exit(0)

                def stopper(w, r):
                    set_comm("ts_cg_stop")
                    child_say(w, {})
                    child_wait_go(r)
                    os._exit(0)

                kids = [Child(sleeper), Child(spinner), Child(stopper)]
                for k in kids:
                    k.ready()
                    with open(os.path.join(sub, "cgroup.procs"), "w") as f:
                        f.write(str(k.pid))
                os.kill(kids[2].pid, signal.SIGSTOP)
                os.waitpid(kids[2].pid, os.WUNTRACED)
                time.sleep(0.05)
                states = {k.pid: proc_state(k.pid) for k in kids}
                expect = {"nr_sleeping": 1, "nr_running": 1, "nr_stopped": 1, "nr_uninterruptible": 0,
                          "nr_io_wait": 0, "tasks": 3}
            fd = os.open(target, os.O_RDONLY | os.O_DIRECTORY)
            try:
                with open(os.path.join(target, "tasks")) as f:
                    ntasks = len(f.read().split())
                seq, raw, dgrams = self.cgroup_query(fd)
            finally:
                os.close(fd)
            states_after = {k.pid: proc_state(k.pid) for k in kids}
            if not expect:
                expect = {"tasks_max": ntasks, "doc": "sum of the 5 counters <= tasks_max"}
            expect.update(seq=seq, messages=2, records=["CGROUPSTATS_CMD_NEW", "ACK"], path=target)
            self.save("cgroup_v1", dgrams, [self.req_info(seq, raw, attr="FD", path=target,
                                                          flags=NLM_F_REQUEST | NLM_F_ACK)],
                      what="CGROUPSTATS_CMD_GET (with NLM_F_ACK) on a cgroup v1 directory holding 1 sleeping, "
                           "1 running (busy loop) and 1 stopped child: CGROUPSTATS_CMD_NEW reply, then the ACK",
                      expect=expect,
                      extra={"proc_states_before": states, "proc_states_after": states_after,
                             "child_comms": ["ts_cg_sleep", "ts_cg_spin", "ts_cg_stop"]})
        finally:
            for k in kids:
                k.kill()
            if made:
                for _ in range(50):
                    try:
                        os.rmdir(sub)
                        break
                    except OSError:
                        time.sleep(0.05)

    # -- driver
    def run(self):
        steps = [("family", self.cap_family), ("pid_self", self.cap_pid_self),
                 ("tgid_threads", self.cap_tgid_threads), ("error_esrch", self.cap_errors),
                 ("batch", self.cap_batch), ("exit_single", self.cap_exits),
                 ("register_bad", self.cap_register_bad), ("cgroup_v1", self.cap_cgroups)]
        for name, fn in steps:
            t0 = time.monotonic()
            try:
                fn()
            except (CaptureError, OSError) as ex:
                self.skipped[name] = "failed: %s: %s" % (type(ex).__name__, ex)
                if name in ("family", "pid_self"):
                    break
            self.notes.append("%s step took %.2fs" % (name, time.monotonic() - t0))
        self.check_doc()
        self.write_manifest()

    def check_doc(self):
        """Compare a few observations with taskstats-abi.md and record differences."""
        sizes = {4: 272, 5: 288, 6: 312, 7: 328, 8: 328, 9: 344, 10: 352, 11: 368, 12: 400, 13: 416, 14: 432,
                 15: 560, 16: 560, 17: 688}
        v = self.struct_version
        if v in sizes and getattr(self, "stats_size", None) not in (None, sizes[v]):
            self.doc_differences.append("struct v%d payload %d bytes, doc says %d" % (v, self.stats_size, sizes[v]))
        cap = self.captures.get("exit_threads")
        if cap:
            last = cap["observed"][-1] if cap["observed"] else {}
            kinds = [r["kind"] for r in last.get("records", [])]
            if kinds != ["PID", "TGID"]:
                self.doc_differences.append("last exit_threads message records %s" % kinds)
            for r in last.get("records", []):
                if r["kind"] == "TGID":
                    self.tgid_exit_version = r.get("stats", {}).get("version")
        cap = self.captures.get("pid_self")
        if cap and v in sizes and cap["bytes"] != 36 + sizes[v] and not any(
                o.get("null_pad") for o in cap["observed"]):
            self.doc_differences.append("pid_self message %d bytes, expected 36+%d" % (cap["bytes"], sizes[v]))

    def write_manifest(self):
        u = os.uname()
        man = {
            "format": FORMAT_VERSION,
            "tool": "tests/kernels/capture.py",
            "captured_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            "kernel": {"release": u.release, "version": u.version, "machine": u.machine},
            "python": platform.python_version(),
            "cpus": cpu_facts(),
            "nr_cpus": os.cpu_count(),
            "struct_version": self.struct_version,
            "stats_size": getattr(self, "stats_size", None),
            "tgid_exit_record_version": getattr(self, "tgid_exit_version", None),
            "family_id": self.family["id"] if self.family else None,
            "family": {k: v for k, v in (self.family or {}).items() if k not in ("request_hex",)},
            "capturer": {"pid": os.getpid(), "ppid": os.getppid(), "uid": os.getuid(), "gid": os.getgid(),
                         "comm": read_proc(os.getpid(), "comm").rstrip("\n")},
            "task_delayacct": read_file("/proc/sys/kernel/task_delayacct"),
            "cgroup_mounts": getattr(self, "cgroup_info", None),
            "captures": self.captures,
            "skipped": self.skipped,
            "notes": self.notes,
            "doc_differences": self.doc_differences,
        }
        with open(os.path.join(self.outdir, "manifest.json"), "w") as f:
            json.dump(man, f, indent=1, sort_keys=True)
            f.write("\n")


def quick_info():
    nl = NL()
    try:
        fam, _ = resolve_family(nl)
        seq = next_seq()
        nl.send(genl_msg(fam["id"], TASKSTATS_CMD_GET, TASKSTATS_GENL_VERSION, nla_u32(CMD_ATTR_PID, os.getpid()),
                         seq))
        for d in nl.drain([seq], extra_wait=0):
            for m in parse_stream(d):
                if m["type"] == NLMSG_ERROR:
                    err, _ = nl_error(m)
                    raise CaptureError("TASKSTATS_CMD_GET: %s" % errno.errorcode.get(err, err))
                for r in decode_taskstats_msg(m)["records"]:
                    if "stats" in r:
                        return {"release": os.uname().release, "cpus": os.cpu_count(),
                                "struct_version": r["stats"]["version"], "stats_size": r["stats"]["size"],
                                "family_id": fam["id"]}
    finally:
        nl.close()
    raise CaptureError("no stats in reply")


def main(argv):
    if len(argv) == 2 and argv[1] in ("--version-only", "--info"):
        try:
            info = quick_info()
        except (CaptureError, OSError) as ex:
            print("capture.py: %s" % ex, file=sys.stderr)
            return 1
        print(info["struct_version"] if argv[1] == "--version-only" else json.dumps(info, sort_keys=True))
        return 0
    if len(argv) != 2 or argv[1].startswith("-"):
        print(__doc__.strip(), file=sys.stderr)
        return 2
    outdir = argv[1]
    os.makedirs(outdir, exist_ok=True)
    s = Session(outdir)
    s.run()
    print("capture.py: %s: struct v%s family %s, %d captures, skipped: %s" % (
        outdir, s.struct_version, s.family and s.family["id"], len(s.captures), sorted(s.skipped) or "none"))
    for n in s.doc_differences:
        print("  differs from taskstats-abi.md: " + n)
    for n in s.notes:
        if "wanted" in n or "failed" in n:
            print("  note: " + n)
    for name, why in sorted(s.skipped.items()):
        if why.startswith("failed"):
            print("  %s %s" % (name, why), file=sys.stderr)
    return 0 if s.struct_version is not None else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv))
