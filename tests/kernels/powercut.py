#!/usr/bin/env python3
"""The power-cut campaign: ``record`` writes to an ext4 disk in a qemu guest, and the guest's
power is cut (qemu killed with SIGKILL) at random moments.  After each cut the disk must fsck
clean, every file under a final name must read completely, and the recording must hold every
exit older than the last flush (``--flush-seconds`` plus a margin): what fsync said was on disk.

How (the approach of /work/shared/kernels/krun.sh, self-contained here so CI needs only this
repository): a Debian kernel package and busybox-static are unpacked under $KROOT; an
initramfs mounts this machine's / read-only over virtiofs, the disk image (a sparse file on the
host, mkfs.ext4'd once) as /dev/vda at /tmp/disk inside that root, and chroots into it.  There
``record`` and a producer (tests/crash/kill9.py --produce) start together: the producer forks
children with known names and logs each exit to the second serial port, which qemu writes to a
host file as it arrives; the job marks there, in the guest's clock, when ``record`` said it was
recording.  The host cuts the power (SIGKILL to qemu) at a random moment, a quarter of the time
before that mark (Python's start-up, registration, and the recovery of the last cut), copies the
image, runs ``e2fsck -fy`` on the copy (journal replay and check) and reads it back with
``debugfs rdump``: every data file under a final name must read whole, and the readers must
find every exit logged after the mark and older than the cut by the flush window plus a margin,
exactly once.  The next boot mounts the original (the guest kernel replays its journal) and
``record`` starts on the same directory, recovering what the cut left; after it the earlier
boots' exits must all still be there exactly once.  Configurations get runs of consecutive
boots (``--formats``): each format's exit stream, and ``record --interval`` (interval rows by
task, and their PSI rows in DIR/_psi, each dataset checked the same way: every exit older than
the window plus the interval in its interval's rows once, that interval's system PSI row once,
as ``make crash`` checks its interval configurations).  The last boot stops the producer,
then ``record`` with SIGTERM, and powers off cleanly; every exit logged must be there, exactly
once.

What a cut loses: the guest's page cache, and whatever it had not yet sent to the virtual disk.
Writes the guest had sent survive (qemu's default writeback cache is the host's page cache,
which outlives qemu), as on a disk whose write cache is power-safe.

    tests/kernels/powercut.py [--cuts N] [--kernel PKG] [--seed S] [--out DIR] [--python PY]

Needs root, qemu-system-x86_64, virtiofsd, cpio, kmod (depmod), e2fsprogs; `make powercut-deps`
installs them.  Exit status 0 when every check held, 1 otherwise, 2 when it could not run.
"""

from __future__ import annotations

import argparse
import glob
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from typing import Dict, List, Optional, Sequence, Tuple

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(os.path.dirname(HERE))
sys.path.insert(0, os.path.join(REPO, "tests", "crash"))
import kill9  # noqa: E402  (the producer and the exactly-once check)

KERNEL = "linux-image-6.12.117+deb12-cloud-amd64"
BUSYBOX = "busybox-static"
READY = "POWERCUT-READY"
STOPPED = "POWERCUT-PRODUCER-STOPPED"
#: record's flush window and the margin on top, in guest seconds (the guest's clock: under TCG
#: it runs slower than the host's, and the flush timer runs on it); an interval recording's
#: rows add their interval (``kill9.Config.window``: they are written as an interval closes)
WINDOW_SECONDS = kill9.FLUSH_SECONDS + kill9.MARGIN_SECONDS
#: the start line comes just after the listener registered
START_LAG_SECONDS = 0.5
#: a cut lands this many host seconds after record said it was recording: past the flush
#: window mostly (a cut inside it checks nothing of its boot), and across rotations; an
#: interval recording's later by its interval (at the low end) and two (at the high end), as
#: its rows are written an interval later
CUT_AFTER_SECONDS = (1.0, 10.0)
#: the share of cuts aimed at start-up (imports, the recovery of the last cut, registration)
EARLY_SHARE = 0.25
#: how long the clean last boot records before it stops
CLEAN_SECONDS = 4
IMAGE_MB = 64
BOOT_TIMEOUT = 240.0
CONFIGS = (
    kill9.Config("parquet", ("--format", "parquet", "--rotate-seconds", "1")),
    kill9.Config("npy", ("--format", "npy", "--rotate-seconds", "3")),
    kill9.Config("arrow", ("--format", "arrow")),
    kill9.Config("csv", ("--format", "csv", "--rotate-seconds", "2")),
    # the interval rows by task and their PSI (DIR/_psi), each a dataset of its own, rotating
    kill9.Config("interval", ("--format", "parquet", "--interval", "1", "--rotate-seconds", "2"),
                 interval=1.0),
)


# ---- the guest -------------------------------------------------------------------------------
def fetch(kroot: str, package: str) -> str:
    """Unpack a Debian package under kroot/x/PACKAGE (modules decompressed, depmod run)."""
    dest = os.path.join(kroot, "x", package)
    if os.path.isdir(dest):
        return dest
    debs = os.path.join(kroot, "debs")
    os.makedirs(debs, exist_ok=True)
    os.makedirs(os.path.dirname(dest), exist_ok=True)
    subprocess.run(["apt-get", "download", package], cwd=debs, check=True,
                   stdout=subprocess.DEVNULL)
    deb = next(p for p in sorted(glob.glob(os.path.join(debs, "*.deb")), key=os.path.getmtime,
                                 reverse=True)
               if subprocess.run(["dpkg-deb", "-f", p, "Package"], capture_output=True,
                                 text=True).stdout.strip() == package)
    subprocess.run(["dpkg-deb", "-x", deb, dest + ".tmp"], check=True)
    for ko in glob.glob(os.path.join(dest + ".tmp", "lib/modules/*/**/*.ko.xz"), recursive=True):
        subprocess.run(["xz", "-d", ko], check=True)
    for version in glob.glob(os.path.join(dest + ".tmp", "lib/modules/*")):
        subprocess.run(["depmod", "-b", dest + ".tmp", os.path.basename(version)], check=True)
    os.rename(dest + ".tmp", dest)
    return dest


def modules(kdir: str, names: Sequence[str]) -> List[str]:
    """The .ko files ``names`` need, in load order (modprobe --show-depends); built-ins: none."""
    version = os.path.basename(glob.glob(os.path.join(kdir, "lib/modules/*"))[0])
    out: List[str] = []
    for name in names:
        res = subprocess.run(["modprobe", "-d", kdir, "-S", version, "--show-depends", name],
                             capture_output=True, text=True, check=True)
        out += [ln.split()[1] for ln in res.stdout.splitlines() if ln.startswith("insmod ")]
    return list(dict.fromkeys(out))


INIT = r"""#!/bin/busybox sh
/bin/busybox --install -s /bin
export PATH=/bin
mount -t proc proc /proc; mount -t sysfs sysfs /sys; mount -t devtmpfs devtmpfs /dev
for m in $(cat /modules.load); do insmod "$m" || echo "POWERCUT: insmod $m failed"; done
mount -t virtiofs -o ro hostroot /host || echo "POWERCUT: virtiofs mount failed"
mount -t proc proc /host/proc; mount -t sysfs sysfs /host/sys; mount -t devtmpfs devtmpfs /host/dev
mount -t cgroup2 cgroup2 /host/sys/fs/cgroup || echo "POWERCUT: cgroup2 mount failed"
mkdir -p /hosttmp; mount -o bind /host/tmp /hosttmp
mount -t tmpfs tmpfs /host/tmp; mkdir -p /host/tmp/disk
for p in @CARRY@; do
  mkdir -p "/host$p"; mount -o bind "/hosttmp${p#/tmp}" "/host$p" || echo "POWERCUT: bind $p failed"
done
n=0; while [ ! -b /dev/vda ] && [ $n -lt 100 ]; do sleep 0.1; n=$((n + 1)); done
if mount -t ext4 /dev/vda /host/tmp/disk; then echo "POWERCUT: mounted"; else echo "POWERCUT: mount failed"; fi
cp /job.sh /host/tmp/job.sh
chroot /host /usr/bin/env -i PATH=/usr/sbin:/usr/bin:/sbin:/bin HOME=/root PYTHONDONTWRITEBYTECODE=1 \
  TMPDIR=/tmp /bin/sh /tmp/job.sh
echo "POWERCUT: job rc=$?"
umount /host/tmp/disk && echo "POWERCUT: unmounted"
sync
poweroff -f
"""

# Run in the guest's chroot (dash).  The producer starts with record, not after it: under TCG
# each Python start-up takes many seconds, and the two overlap.  record runs with pandas hidden:
# it never uses it, but pyarrow imports it to ask whether an array is a pandas one, which under
# TCG was the biggest part of each boot (python -X importtime in the guest).  Exits before record says it is
# recording are not expected; the guest's monotonic clock (= /proc/uptime here, no suspend)
# marks that moment on the producer's serial port, so host and guest times never mix.
JOB = r"""cd {repo} || exit 9
up() {{ cut -d' ' -f1 /proc/uptime; }}
mkdir -p /tmp/nopandas/pandas && echo "raise ImportError('{nopandas}')" > /tmp/nopandas/pandas/__init__.py
{py} tests/crash/kill9.py --produce {nonce} --rate {rate} --log /dev/ttyS1 &
prod=$!
PYTHONPATH=/tmp/nopandas {py} -m taskstats_fast record -o /tmp/disk/{name} --no-status {args} 2> /tmp/record.err &
rec=$!
while ! grep -q "recording every" /tmp/record.err 2> /dev/null; do
  kill -0 $rec 2> /dev/null || break
  sleep 0.1
done
echo "{ready} $(up)" > /dev/ttyS1
cat /tmp/record.err > /dev/console
{finish}
"""
# the last boot: the producer stops first, so that every exit it logged must be recorded; then
# record stops on SIGTERM (writing what it holds), and the init unmounts and powers off
FINISH_CLEAN = """sleep {seconds}; kill -TERM $prod; wait $prod; echo "{stopped} $(up)" > /dev/ttyS1
sleep 1; kill -TERM $rec; wait $rec; echo "POWERCUT: record rc=$?" > /dev/console
cat /tmp/record.err > /dev/console"""
FINISH_NEVER = "wait $rec"


def carried(paths: Sequence[str]) -> List[str]:
    """The host directories under /tmp that the guest must still see: its /tmp is a tmpfs of
    its own (the shared root is read-only), which would hide a checkout or a venv there, as
    CI's clean checkout may be."""
    out = []
    for path in paths:
        path = os.path.abspath(path)
        if path.startswith("/tmp/") and " " not in path and path not in out:
            out.append(path)
    return out


def build_initrd(work: str, busybox: str, kos: Sequence[str], kdir: str,
                 carry: Sequence[str] = ()) -> str:
    stage = os.path.join(work, "stage")
    shutil.rmtree(stage, ignore_errors=True)
    for d in ("bin", "proc", "sys", "dev", "tmp", "host", "etc"):
        os.makedirs(os.path.join(stage, d))
    shutil.copy(os.path.join(busybox, "bin", "busybox"), os.path.join(stage, "bin", "busybox"))
    loads = []
    for ko in kos:
        rel = os.path.relpath(ko, kdir)
        os.makedirs(os.path.join(stage, os.path.dirname(rel)), exist_ok=True)
        shutil.copy(ko, os.path.join(stage, rel))
        loads.append("/" + rel)
    with open(os.path.join(stage, "modules.load"), "w") as f:
        f.write("\n".join(loads) + "\n")
    with open(os.path.join(stage, "init"), "w") as f:
        f.write(INIT.replace("@CARRY@", " ".join(carry)))
    os.chmod(os.path.join(stage, "init"), 0o755)
    initrd = os.path.join(work, "initrd.gz")
    files = subprocess.run(["find", "."], cwd=stage, capture_output=True, check=True).stdout
    cpio = subprocess.run(["cpio", "-o", "-H", "newc", "--quiet"], cwd=stage, input=files,
                          capture_output=True, check=True).stdout
    with open(initrd, "wb") as f:
        f.write(subprocess.run(["gzip", "-1"], input=cpio, capture_output=True, check=True).stdout)
    shutil.rmtree(stage)
    return initrd


@dataclass
class Boot:
    index: int
    config: str
    nonce: str
    clean: bool
    ready_after: Optional[float] = None   #: host seconds from qemu's start to READY
    cut_after: Optional[float] = None     #: host seconds from qemu's start to the cut (clean: None)
    seconds: float = 0.0                  #: host wall time of the boot
    record_rc: Optional[int] = None       #: the clean boot's record exit status
    console_tail: List[str] = field(default_factory=list)


class Guest:
    """One qemu boot of the kernel with the disk image and the host's root (virtiofs)."""

    def __init__(self, work: str, kdir: str, initrd: str, image: str, smp: int, mem: int,
                 cpu: str):
        self.work, self.kdir, self.base_initrd, self.image = work, kdir, initrd, image
        self.initrd = os.path.join(work, "initrd-job.gz")
        self.smp, self.mem, self.cpu = smp, mem, cpu
        self.vmlinuz = glob.glob(os.path.join(kdir, "boot", "vmlinuz-*"))[0]

    def start(self, tag: str):
        # cache=always: the shared root does not change while the guest runs, so the guest
        # keeps what it looked up (every Python import is many lookups)
        sock = os.path.join(self.work, "vfs.sock")
        for p in (sock, self.console(tag), self.serial(tag)):
            if os.path.exists(p):
                os.unlink(p)
        vfs = subprocess.Popen(["/usr/lib/qemu/virtiofsd", f"--socket-path={sock}", "-o",
                                "source=/", "-o", "cache=always", "-o", "sandbox=chroot"],
                               stdout=subprocess.DEVNULL, stderr=open(
                                   os.path.join(self.work, "virtiofsd.log"), "a"))
        deadline = time.monotonic() + 10
        while not os.path.exists(sock) and time.monotonic() < deadline:
            time.sleep(0.05)
        time.sleep(0.3)   # the socket file appears at bind(), connections work after listen()
        mhz = 2000
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("cpu MHz"):
                    mhz = int(float(line.split(":")[1]))
                    break
        qemu = subprocess.Popen([
            "qemu-system-x86_64", "-accel", "tcg,thread=single", "-cpu", self.cpu, "-m", str(self.mem),
            "-smp", str(self.smp), "-display", "none", "-no-reboot", "-nodefaults",
            "-kernel", self.vmlinuz, "-initrd", self.initrd,
            "-append", f"console=ttyS0 panic=-1 quiet lpj={mhz * 1000000 // 250}",
            "-serial", f"file:{self.console(tag)}", "-serial", f"file:{self.serial(tag)}",
            "-drive", f"file={self.image},format=raw,if=virtio,cache=writeback",
            "-chardev", f"socket,id=vfs,path={sock}",
            "-device", "vhost-user-fs-pci,chardev=vfs,tag=hostroot",
            "-object", f"memory-backend-memfd,id=mem,size={self.mem}M,share=on",
            "-numa", "node,memdev=mem"],
            stdout=open(os.path.join(self.work, "qemu.log"), "a"), stderr=subprocess.STDOUT)
        return qemu, vfs

    def console(self, tag: str) -> str:
        return os.path.join(self.work, f"console-{tag}.log")

    def serial(self, tag: str) -> str:
        return os.path.join(self.work, f"serial-{tag}.log")


# ---- the campaign ----------------------------------------------------------------------------
def with_job(base_initrd: str, job: str, path: str) -> str:
    """``base_initrd`` with /job.sh appended as a second cpio archive (the kernel unpacks
    concatenated archives in order): the image itself is never written by the host, whose
    tools would not replay its journal first."""
    stage = tempfile.mkdtemp(prefix="powercut-job-")
    try:
        with open(os.path.join(stage, "job.sh"), "w") as f:
            f.write(job)
        cpio = subprocess.run(["cpio", "-o", "-H", "newc", "--quiet"], cwd=stage, input=b"job.sh\n",
                              capture_output=True, check=True).stdout
    finally:
        shutil.rmtree(stage)
    with open(path, "wb") as out, open(base_initrd, "rb") as base:
        out.write(base.read())
        out.write(subprocess.run(["gzip", "-1"], input=cpio, capture_output=True,
                                 check=True).stdout)
    return path


def check_image(image: str, work: str, tag: str) -> Dict:
    """fsck a copy of the image (journal replay and full check) and dump its files."""
    copy = os.path.join(work, "check.img")
    subprocess.run(["cp", "--sparse=always", image, copy], check=True)
    # the journal replayed alone (what a mount does), then a full read-only check that must
    # find nothing: a clean image is one whose journal replay leaves no error to correct
    subprocess.run(["e2fsck", "-y", "-E", "journal_only", copy], capture_output=True)
    fsck = subprocess.run(["e2fsck", "-fn", copy], capture_output=True, text=True)
    dump = os.path.join(work, f"disk-{tag}")
    shutil.rmtree(dump, ignore_errors=True)
    os.makedirs(dump)
    subprocess.run(["debugfs", "-R", f"rdump / {dump}", copy], capture_output=True, check=True)
    os.unlink(copy)
    # e2fsck -n: 0 clean, 4 errors found
    return {"fsck_code": fsck.returncode, "fsck_tail": fsck.stdout.strip().splitlines()[-2:],
            "dump": dump}


def files_read_completely(directory: str) -> Tuple[int, List[str]]:
    """Each data file under a final name, read alone: how many, and the problems (none when
    all read whole); an interval recording's PSI files (DIR/_psi) too."""
    from taskstats_fast import recording
    from taskstats_fast.recording.psi_rows import psi_path
    problems: List[str] = []
    if not os.path.isdir(directory):
        return 0, problems
    psi = psi_path(directory)
    paths = recording.find_files(directory) + (
        recording.find_files(psi) if psi is not None and os.path.isdir(psi) else [])
    for path in paths:
        try:
            rows = recording.read_records(path)
            meta = recording.read_metadata(path)
        except Exception as e:
            problems.append(f"{os.path.relpath(path, directory)}: {type(e).__name__}: {e}")
            continue
        if "records" in meta and meta["records"] != len(rows):
            problems.append(f"{os.path.relpath(path, directory)}: metadata says {meta['records']} "
                            f"records, {len(rows)} read")
    return len(paths), problems


def exits_of(serial: str, nonce: str) -> Dict[bytes, float]:
    """comm -> guest monotonic seconds, from the producer's lines on the second serial port."""
    text = _text(serial).replace("\r", "")
    # the last line may be cut mid-way by the power cut: only lines that ended are kept
    lines = text.split("\n")[:-1]
    tmp = tempfile.NamedTemporaryFile("w", delete=False)
    with tmp:
        tmp.write("".join(ln + "\n" for ln in lines if ln and ln[0].isdigit()))
    try:
        return kill9.read_log(tmp.name, nonce)
    finally:
        os.unlink(tmp.name)


def mark_of(serial: str, mark: str) -> Optional[float]:
    """The guest's monotonic seconds the job wrote after ``mark`` on the producer's port."""
    for line in _text(serial).replace("\r", "").split("\n")[:-1]:
        if line.startswith(mark + " "):
            return float(line.split()[1])
    return None


def _text(path: str) -> str:
    try:
        with open(path, errors="replace") as f:
            return f.read()
    except FileNotFoundError:
        return ""


def run_boot(guest: Guest, boot: Boot, args: Sequence[str], py: str, rng: random.Random,
             rate: float, timeout: float, ready_after: List[float], log,
             cut_after: Tuple[float, float] = CUT_AFTER_SECONDS) -> None:
    """One boot: record (and recover) on the disk, then the power cut at a random moment, or
    on the last boot the clean stop.  A quarter of the cuts land before record says it is
    recording (Python's start-up and the recovery of what the last cut left); the rest at a
    random moment of the recording, rotations included."""
    finish = FINISH_CLEAN.format(seconds=CLEAN_SECONDS, stopped=STOPPED) if boot.clean \
        else FINISH_NEVER
    job = JOB.format(repo=REPO, py=py, nopandas="hidden in the power-cut guest", name=boot.config,
                     args=" ".join(args), ready=READY, nonce=boot.nonce, rate=rate, finish=finish)
    with_job(guest.base_initrd, job, guest.initrd)
    tag = f"{boot.index:02d}"
    started = time.monotonic()
    qemu, vfs = guest.start(tag)
    cut_in: Optional[float] = None   # host seconds after READY (or after the mount: early)
    early = not boot.clean and rng.random() < EARLY_SHARE
    try:
        deadline = started + timeout
        mounted_at: Optional[float] = None
        while time.monotonic() < deadline and qemu.poll() is None:
            now = time.monotonic()
            if boot.ready_after is None and READY in _text(guest.serial(tag)):
                boot.ready_after = round(now - started, 1)
                if not boot.clean and not early:
                    ready_after.append(boot.ready_after)
                    cut_in = rng.uniform(*cut_after)
                    time.sleep(cut_in)
                    break
            if early and mounted_at is None and "POWERCUT: mounted" in _text(guest.console(tag)):
                mounted_at = now
                # up to the usual start-up time: into the imports, the recovery, registration
                cut_in = rng.uniform(0.5, sorted(ready_after)[len(ready_after) // 2])
            if early and mounted_at is not None and now >= mounted_at + cut_in:
                break
            time.sleep(0.05)
        if not boot.clean and qemu.poll() is None:
            boot.cut_after = round(time.monotonic() - started, 1)
            qemu.send_signal(signal.SIGKILL)
        qemu.wait(timeout=max(10.0, deadline - time.monotonic()))
    except subprocess.TimeoutExpired:
        log(f"powercut: boot {tag} did not end within {timeout:.0f} s: killed")
        qemu.kill()
        qemu.wait()
    finally:
        vfs.terminate()
        vfs.wait(timeout=10)
    boot.seconds = round(time.monotonic() - started, 1)
    console = _text(guest.console(tag))
    boot.console_tail = console.splitlines()[-6:]
    for line in console.splitlines():
        if line.startswith("POWERCUT: record rc="):
            boot.record_rc = int(line.split("=")[1])


def campaign(cuts: int, seed: int, out: str, kroot: str, kernel: str, py: str, rate: float,
             smp: int, mem: int, cpu: str, configs: Sequence[kill9.Config],
             log=print) -> Dict:
    """``cuts`` cut boots and one clean one.  Each configuration gets a run of consecutive
    boots, so that every cut is followed by a record start on the same directory, which must
    recover it (the last cut of a run but the last one is checked with the readers only)."""
    rng = random.Random(seed)
    kdir = fetch(kroot, kernel)
    busybox = fetch(kroot, BUSYBOX)
    initrd = build_initrd(out, busybox, modules(kdir, ["virtio_blk"]), kdir,
                          carried([REPO, os.path.dirname(os.path.dirname(py))]))
    image = os.path.join(out, "disk.img")
    with open(image, "wb") as f:
        f.truncate(IMAGE_MB << 20)
    subprocess.run(["mkfs.ext4", "-q", "-F", image], check=True)
    guest = Guest(out, kdir, initrd, image, smp, mem, cpu)
    boots: List[Boot] = []
    checks: List[Dict] = []
    ready_after: List[float] = [30.0]
    started = time.monotonic()
    for i in range(cuts + 1):
        config = configs[min(i * len(configs) // max(cuts, 1), len(configs) - 1)]
        name = config.name
        boot = Boot(i, name, f"{i:02x}", clean=(i == cuts))
        lo, hi = CUT_AFTER_SECONDS
        run_boot(guest, boot, config.args, py, rng, rate, BOOT_TIMEOUT, ready_after, log,
                 (lo + config.interval, hi + 2 * config.interval))
        boots.append(boot)
        checks.append(check_boot(guest, image, out, boot, boots, config))
        c = checks[-1]
        log(f"powercut: boot {i:2d} {name:8} "
            + (f"clean stop rc={boot.record_rc}" if boot.clean else
               f"cut at {boot.cut_after:5.1f} s" if boot.cut_after is not None else "no cut")
            + f", ready at {boot.ready_after or '-':>5} s, {boot.seconds:5.1f} s: fsck={c['fsck_code']} "
            f"files={c['files']} unreadable={len(c['unreadable'])} expected={c['expected']} "
            f"once={c['once']} lost={c['missing']} dup={c['duplicated']} "
            + (f"window={c['interval_window']} intervals={c['intervals']} "
               f"psi_once={c['psi_once']} " if config.interval else f"window={c['window']} ")
            + f"{'ok' if c['ok'] else 'FAIL ' + str(c['error'] or '')}")
    final = checks[-1]
    # each check covers every earlier boot of its configuration: the last one per
    # configuration counts each exit once
    last_per_config = list({c["config"]: c for c in checks}.values())
    cut_boots = [b for b in boots if not b.clean]
    windows = sorted(c["window"] for c in checks if c["window"] is not None)
    interval_windows = sorted(c["interval_window"] for c in checks
                              if c["interval_window"] is not None)
    return {"cuts": sum(1 for b in cut_boots if b.cut_after is not None), "seed": seed,
            "kernel": kernel, "seconds": round(time.monotonic() - started, 1),
            "cuts_before_ready": sum(1 for b in cut_boots if b.ready_after is None),
            "boots": [b.__dict__ for b in boots], "checks": checks,
            "ok": all(c["ok"] for c in checks) and len(cut_boots) == cuts,
            "totals": {"checked": sum(c["expected"] for c in checks),
                       "once": sum(c["once"] for c in checks),
                       "lost": sum(c["missing"] for c in checks),
                       "duplicated": sum(c["duplicated"] for c in checks),
                       "files": sum(c["files"] for c in checks),
                       "intervals": sum(c["intervals"] for c in checks),
                       "psi_once": sum(c["psi_once"] for c in checks),
                       "unreadable_files": sum(len(c["unreadable"]) for c in checks),
                       "fsck_unclean": sum(1 for c in checks if c["fsck_code"] != 0),
                       "exits": sum(c["expected"] for c in last_per_config),
                       "exits_once": sum(c["once"] for c in last_per_config),
                       "exits_lost": sum(c["missing"] for c in last_per_config),
                       "exits_recovered": final["once"], "final_expected": final["expected"],
                       "window_median": windows[len(windows) // 2] if windows else 0.0,
                       "window_max": windows[-1] if windows else 0.0,
                       "cuts_losing_any": sum(1 for w in windows if w > 0),
                       "interval_window_max": interval_windows[-1] if interval_windows else None,
                       "interval_cuts": len(interval_windows),
                       "final_ok": final["ok"]}}


def expected_of(boot: Boot, serial: str, window: float = WINDOW_SECONDS) -> Dict[bytes, float]:
    """The exits of ``boot`` its recording must hold: logged after record said it was
    recording (plus the start line's lag), and older than the cut by ``window`` (the flush
    window plus a margin, and an interval recording's interval); on the clean boot every exit
    the producer logged before it stopped."""
    exits = exits_of(serial, boot.nonce)
    ready = mark_of(serial, READY)
    if ready is None:
        return {}
    if boot.clean:
        last = mark_of(serial, STOPPED) or 0.0
    else:   # the cut came after the last thing the guest wrote to the port
        last = max([ready, *exits.values()]) - window
    return {c: t for c, t in exits.items() if ready + START_LAG_SECONDS <= t <= last}


def crash_window(boot: Boot, serial: str, present: set) -> Optional[float]:
    """How far back from the cut the exits it lost reach: from the last thing the guest wrote
    to the producer's port to the oldest exit logged while recording that the disk, as the cut
    left it, does not hold (0: none lost; None: the cut came before record was recording)."""
    exits = exits_of(serial, boot.nonce)
    ready = mark_of(serial, READY)
    if ready is None:
        return None
    last = max([ready, *exits.values()])
    lost = [t for c, t in exits.items() if t >= ready + START_LAG_SECONDS and c not in present]
    return round(last - min(lost), 2) if lost else 0.0


def psi_of_intervals(directory: str, expected: Dict[bytes, float]) -> Tuple[int, int]:
    """An interval recording: the intervals whose rows hold an exit that must be there, and
    how many of them have exactly one system PSI row (``cgroup`` "/") in DIR/_psi (written with
    the interval's rows, as it closed, so fsynced within the same window)."""
    import numpy as np
    from taskstats_fast import recording
    from taskstats_fast.recording.psi_rows import psi_path, psi_schema
    rows = recording.Recordings(directory).records()
    starts = set(rows["interval_start"][np.isin(rows["ac_comm"], list(expected))].tolist())
    where = psi_path(directory)
    if not starts or where is None or not os.path.isdir(where):
        return len(starts), 0
    psi = recording.Recordings(where, schema=psi_schema()).records()
    values, counts = np.unique(psi["interval_start"][psi["cgroup"] == b"/"], return_counts=True)
    once = {v for v, n in zip(values.tolist(), counts.tolist()) if n == 1}
    return len(starts), len(starts & once)


def check_boot(guest: Guest, image: str, out: str, boot: Boot, boots: Sequence[Boot],
               config: kill9.Config) -> Dict:
    """After boot ``boot``: the disk fscks, its final-named files read whole, and every exit of
    every boot so far on its configuration is in the recording exactly once: the cut boot's
    own as the readers find them, the earlier ones after this boot's record start recovered
    what they left.  An interval recording: every exit in its interval's rows (a task once per
    interval), and that interval's system PSI row there exactly once."""
    tag = f"{boot.index:02d}"
    disk = check_image(image, out, tag)
    result = {"boot": boot.index, "config": boot.config, "fsck_code": disk["fsck_code"],
              "fsck_tail": disk["fsck_tail"], "unreadable": [], "files": 0, "expected": 0,
              "once": 0, "missing": 0, "duplicated": 0, "damaged": [], "error": None,
              "window": None, "interval_window": None, "intervals": 0, "psi_once": 0}
    for name in sorted(os.listdir(disk["dump"])):
        if name != "lost+found":
            n, problems = files_read_completely(os.path.join(disk["dump"], name))
            result["files"] += n
            result["unreadable"] += problems
    directory = os.path.join(disk["dump"], boot.config)
    for earlier in (b for b in boots if b.config == boot.config):
        keep = expected_of(earlier, guest.serial(f"{earlier.index:02d}"), config.window)
        recovered = earlier is not boot and boot.ready_after is not None
        check = kill9.check_directory(config, directory,
                                      kill9.RESTARTED if recovered else kill9.AS_LEFT, keep,
                                      earlier.nonce, require_psi=boot.clean)
        for key in ("expected", "once", "missing", "duplicated"):
            result[key] += getattr(check, key)
        if config.interval and check.ok and keep:
            intervals, psi_once = psi_of_intervals(directory, keep)
            result["intervals"] += intervals
            result["psi_once"] += psi_once
            if psi_once < intervals:
                result["error"] = result["error"] or (
                    f"boot {earlier.index}: {intervals - psi_once} of the {intervals} intervals "
                    "holding an exit that must be there have no system PSI row, or several")
        # the exit stream's window apart: interval rows wait for their interval's end too
        if earlier is boot and not boot.clean:
            result["interval_window" if config.interval else "window"] = crash_window(
                boot, guest.serial(tag), check.present)
        result["damaged"] += check.damaged
        if not check.ok or check.missing:   # a power cut: the readers must find it all too
            result["error"] = result["error"] or check.error or (
                f"boot {earlier.index}: {check.missing} lost, {check.duplicated} duplicated, "
                f"{len(check.damaged)} damaged (first: "
                f"{os.path.basename(check.damaged[0]) if check.damaged else '-'}) "
                f"e.g. {', '.join(check.missing_examples[:3])}")
    if boot.clean and boot.record_rc != 0:
        result["error"] = result["error"] or f"the clean stop's record exited {boot.record_rc}"
    result["ok"] = (disk["fsck_code"] == 0 and not result["unreadable"]
                    and result["error"] is None)
    if result["ok"]:
        shutil.rmtree(disk["dump"], ignore_errors=True)   # a failing one stays to look at
    return result


def report(result: Dict) -> str:
    t = result["totals"]
    return (f"power-cut campaign under {result['kernel']}: {'ok' if result['ok'] else 'FAILED'}; "
            f"{result['cuts']} cuts ({result['cuts_before_ready']} before record was recording) "
            f"in {result['seconds']} s (seed {result['seed']}); {t['files']} final files read "
            f"({t['unreadable_files']} unreadable), {t['fsck_unclean']} images not fsck "
            f"clean; {t['exits']:,} exits expected, {t['exits_once']:,} there exactly once, "
            f"{t['exits_lost']:,} lost, {t['duplicated']:,} duplicated ({t['checked']:,} checks "
            f"over all cuts, {t['lost']:,} missing; {t['intervals']:,} checks of an interval "
            f"holding such an exit, {t['psi_once']:,} with its system PSI row once); after the clean stop "
            f"{t['exits_recovered']:,} of its configuration's {t['final_expected']:,}; crash "
            f"window (how far back a cut's lost exits reach) median {t['window_median']:.2f} s, "
            f"max {t['window_max']:.2f} s, {t['cuts_losing_any']} cut(s) losing any"
            + (f"; interval rows' (their interval included) max {t['interval_window_max']:.2f} s "
               f"over {t['interval_cuts']} cut(s)" if t["interval_cuts"] else ""))


def main(argv: Optional[Sequence[str]] = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--cuts", type=int, default=20, help="power cuts (default: %(default)s)")
    p.add_argument("--kernel", default=KERNEL, help="Debian kernel package (default: %(default)s)")
    p.add_argument("--seed", type=int, default=None)
    p.add_argument("--out", help="work directory (default: a temp dir, removed if all is ok)")
    p.add_argument("--kroot", default=os.environ.get("KROOT", "/tmp/kern"),
                   help="where kernel packages are unpacked (default: $KROOT or /tmp/kern)")
    p.add_argument("--python", default=os.path.abspath(sys.executable),
                   help="the interpreter the guest runs, with taskstats_fast installed (default: "
                        "this one; under /tmp it is bound into the guest's own /tmp)")
    p.add_argument("--formats", default=",".join(c.name for c in CONFIGS),
                   help="configurations, in order (default: %(default)s)")
    p.add_argument("--rate", type=float, default=20.0, help="exits per second in the guest")
    p.add_argument("--smp", type=int, default=1)
    p.add_argument("--mem", type=int, default=512)
    p.add_argument("--cpu", default="Nehalem", help="qemu -cpu (default: %(default)s)")
    p.add_argument("--json", help="also write the result as JSON here")
    args = p.parse_args(argv)
    known = {c.name: c for c in CONFIGS}
    configs = [known[f] for f in args.formats.split(",") if f in known]
    if not configs or len(configs) != len(args.formats.split(",")) or args.cuts < 1:
        print(f"powercut: --formats takes some of {', '.join(known)}, --cuts at least 1",
              file=sys.stderr)
        return 2
    missing = [t for t in ("qemu-system-x86_64", "cpio", "depmod", "e2fsck", "debugfs", "mkfs.ext4")
               if shutil.which(t) is None] + \
        ([] if os.path.exists("/usr/lib/qemu/virtiofsd") else ["virtiofsd"])
    if missing or os.geteuid() != 0:
        print(f"powercut: needs root and {', '.join(missing) or 'nothing else'} "
              "(make powercut-deps)", file=sys.stderr)
        return 2
    # The guest shares this root read-only and runs with PYTHONDONTWRITEBYTECODE: without
    # bytecode caches it compiles every module of ours at every start, which under TCG costs
    # more than all the rest of the start-up.
    subprocess.run([sys.executable, "-m", "compileall", "-q", os.path.join(REPO, "taskstats_fast"),
                    os.path.join(REPO, "tests", "crash")], check=True)
    seed = args.seed if args.seed is not None else int(time.time())
    out = args.out or tempfile.mkdtemp(prefix="tsf-powercut-", dir="/var/tmp")
    os.makedirs(out, exist_ok=True)
    result = campaign(args.cuts, seed, out, args.kroot, args.kernel, args.python, args.rate,
                      args.smp, args.mem, args.cpu, configs,
                      log=lambda s: print(s, file=sys.stderr, flush=True))
    print(report(result))
    if args.json:
        with open(args.json, "w") as f:
            json.dump(result, f, indent=2, default=str)
    if result["ok"] and not args.out:
        shutil.rmtree(out, ignore_errors=True)
    else:
        print(f"powercut: work directory kept: {out}", file=sys.stderr)
    return 0 if result["ok"] else 1


if __name__ == "__main__":
    sys.exit(main())
