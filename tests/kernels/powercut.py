#!/usr/bin/env python3
"""The power-cut campaign: ``record`` writes to an ext4 disk in a qemu guest, and the guest's
power is cut (qemu killed with SIGKILL) at random moments.  After each cut the disk must fsck
clean, every file under a final name must read completely, and the recording must hold every
exit older than the last flush (``--flush-seconds`` plus a margin): what fsync said was on disk.

How (the approach of /work/shared/kernels/krun.sh, self-contained here so CI needs only this
repository): a Debian kernel package and busybox-static are unpacked under $KROOT; an
initramfs mounts this machine's / read-only over virtiofs, the disk image (a sparse file on the
host, mkfs.ext4'd once) as /dev/vda at /tmp/disk inside that root, and chroots into it.  There a
producer (tests/crash/kill9.py --produce) forks children with known names and logs each exit to
the second serial port, which qemu writes to a host file as it arrives, once ``record`` has
said it is recording.  The host cuts the power, copies the image, runs ``e2fsck -fy`` on the
copy (journal replay and check) and reads it back with ``debugfs rdump``; the next boot mounts
the original (the guest kernel replays its journal) and ``record`` starts on the same
directory, recovering what the cut left (a cut during that start-up lands in the recovery).
The last boot stops ``record`` with SIGTERM and powers off cleanly; everything must be there,
exactly once.

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
from typing import Dict, List, Optional, Sequence

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(os.path.dirname(HERE))
sys.path.insert(0, os.path.join(REPO, "tests", "crash"))
import kill9  # noqa: E402  (the producer and the exactly-once check)

KERNEL = "linux-image-6.12.117+deb12-cloud-amd64"
BUSYBOX = "busybox-static"
READY = "POWERCUT-READY"
#: record's flush window and the margin on top, in guest seconds (the guest's clock: under TCG
#: it runs slower than the host's, and the flush timer runs on it)
WINDOW_SECONDS = kill9.FLUSH_SECONDS + 2.0
CONFIGS = (
    ("parquet", ("--format", "parquet", "--rotate-seconds", "2")),
    ("npy", ("--format", "npy", "--rotate-seconds", "3")),
    ("arrow", ("--format", "arrow")),
    ("csv", ("--format", "csv", "--rotate-seconds", "2")),
)


# ---- the guest -------------------------------------------------------------------------------
def fetch(kroot: str, package: str) -> str:
    """Unpack a Debian package under kroot/x/PACKAGE (modules decompressed, depmod run)."""
    dest = os.path.join(kroot, "x", package)
    if os.path.isdir(dest):
        return dest
    debs = os.path.join(kroot, "debs")
    os.makedirs(debs, exist_ok=True)
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
mount -t tmpfs tmpfs /host/tmp; mkdir -p /host/tmp/disk
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

# Run in the guest's chroot (dash): record first; once it says it is recording, the producer.
JOB = r"""cd {repo} || exit 9
{py} -m taskstats_fast record -o /tmp/disk/{name} --no-status {args} 2> /tmp/record.err &
rec=$!
while ! grep -q "recording every" /tmp/record.err 2> /dev/null; do
  kill -0 $rec 2> /dev/null || break
  sleep 0.1
done
cat /tmp/record.err > /dev/console
echo {ready} > /dev/ttyS1
{py} tests/crash/kill9.py --produce {nonce} --rate {rate} --log /dev/ttyS1 &
prod=$!
{finish}
"""
# the last boot: stop cleanly after a while, then the init unmounts and powers off
FINISH_CLEAN = """sleep {seconds}; kill -TERM $rec; wait $rec; echo "POWERCUT: record rc=$?" > /dev/console
kill -TERM $prod; wait $prod; cat /tmp/record.err > /dev/console"""
FINISH_NEVER = "wait $rec"


def build_initrd(work: str, busybox: str, kos: Sequence[str], kdir: str) -> str:
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
        f.write(INIT)
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
    ready_at: Optional[float] = None      #: host monotonic time READY arrived
    cut_at: Optional[float] = None        #: host monotonic time of the SIGKILL (None: clean)
    seconds: float = 0.0                  #: host wall time of the boot
    console_tail: List[str] = field(default_factory=list)


class Guest:
    """One qemu boot of the kernel with the disk image and the host's root (virtiofs)."""

    def __init__(self, work: str, kdir: str, initrd: str, image: str, smp: int, mem: int):
        self.work, self.kdir, self.base_initrd, self.image = work, kdir, initrd, image
        self.initrd = os.path.join(work, "initrd-job.gz")
        self.smp, self.mem = smp, mem
        self.vmlinuz = glob.glob(os.path.join(kdir, "boot", "vmlinuz-*"))[0]

    def start(self, tag: str):
        sock = os.path.join(self.work, "vfs.sock")
        for p in (sock, self.console(tag), self.serial(tag)):
            if os.path.exists(p):
                os.unlink(p)
        vfs = subprocess.Popen(["/usr/lib/qemu/virtiofsd", f"--socket-path={sock}", "-o",
                                "source=/", "-o", "cache=auto", "-o", "sandbox=chroot"],
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
            "qemu-system-x86_64", "-accel", "tcg,thread=single", "-cpu", "max", "-m", str(self.mem),
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
    fsck = subprocess.run(["e2fsck", "-fy", copy], capture_output=True, text=True)
    dump = os.path.join(work, f"disk-{tag}")
    shutil.rmtree(dump, ignore_errors=True)
    os.makedirs(dump)
    subprocess.run(["debugfs", "-R", f"rdump / {dump}", copy], capture_output=True, check=True)
    os.unlink(copy)
    # e2fsck: 0 clean, 1 errors corrected (a replayed journal alone gives 0), >= 4 uncorrected
    return {"fsck_code": fsck.returncode, "fsck_tail": fsck.stdout.strip().splitlines()[-2:],
            "dump": dump}


def files_read_completely(directory: str) -> List[str]:
    """Each data file under a final name, read alone: the problems (none when all read whole)."""
    from taskstats_fast import recording
    problems = []
    if not os.path.isdir(directory):
        return problems
    for path in recording.find_files(directory):
        try:
            rows = recording.read_records(path)
            meta = recording.read_metadata(path)
        except Exception as e:
            problems.append(f"{os.path.relpath(path, directory)}: {type(e).__name__}: {e}")
            continue
        if "records" in meta and meta["records"] != len(rows):
            problems.append(f"{os.path.relpath(path, directory)}: metadata says {meta['records']} "
                            f"records, {len(rows)} read")
    return problems


def exits_of(serial: str, nonce: str) -> Dict[bytes, float]:
    """comm -> guest monotonic seconds, from the producer's lines on the second serial port."""
    lines = _text(serial).splitlines()
    tmp = tempfile.NamedTemporaryFile("w", delete=False)
    with tmp:
        # the last line may be cut mid-way by the power cut: read_log keeps complete lines only
        tmp.write("\n".join(ln.strip("\r") for ln in lines if ln and ln[0].isdigit()) + "\n")
    try:
        return kill9.read_log(tmp.name, nonce)
    finally:
        os.unlink(tmp.name)


def _text(path: str) -> str:
    try:
        with open(path, errors="replace") as f:
            return f.read()
    except FileNotFoundError:
        return ""


def run_boot(guest: Guest, image: str, boot: Boot, args: Sequence[str], py: str, rng: random.Random,
             rate: float, timeout: float, log) -> None:
    finish = FINISH_CLEAN.format(seconds=6) if boot.clean else FINISH_NEVER
    job = JOB.format(repo=REPO, py=py, name=boot.config, args=" ".join(args), ready=READY,
                     nonce=boot.nonce, rate=rate, finish=finish)
    with_job(guest.base_initrd, job, guest.initrd)
    tag = f"{boot.index:02d}"
    started = time.monotonic()
    qemu, vfs = guest.start(tag)
    early = not boot.clean and rng.random() < 0.25   # cut during record's start-up / recovery
    try:
        deadline = started + timeout
        while time.monotonic() < deadline and qemu.poll() is None:
            text = _text(guest.serial(tag))
            if boot.ready_at is None and READY in text:
                boot.ready_at = time.monotonic()
                if not boot.clean:
                    time.sleep(rng.uniform(2.0, 10.0))
                    break
            if early and "POWERCUT: mounted" in _text(guest.console(tag)):
                time.sleep(rng.uniform(0.5, 15.0))   # python's start-up and record's recovery
                if READY in _text(guest.serial(tag)):
                    boot.ready_at = time.monotonic()
                break
            time.sleep(0.1)
        if not boot.clean:
            boot.cut_at = time.monotonic()
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
    boot.console_tail = _text(guest.console(tag)).splitlines()[-6:]


def campaign(cuts: int, seed: int, out: str, kroot: str, kernel: str, py: str, rate: float,
             smp: int, mem: int, log=print) -> Dict:
    rng = random.Random(seed)
    kdir = fetch(kroot, kernel)
    busybox = fetch(kroot, BUSYBOX)
    initrd = build_initrd(out, busybox, modules(kdir, ["virtio_blk"]), kdir)
    image = os.path.join(out, "disk.img")
    with open(image, "wb") as f:
        f.truncate(256 << 20)
    subprocess.run(["mkfs.ext4", "-q", "-F", image], check=True)
    guest = Guest(out, kdir, initrd, image, smp, mem)
    boots: List[Boot] = []
    checks: List[Dict] = []
    started = time.monotonic()
    for i in range(cuts + 1):
        name, args = CONFIGS[i % len(CONFIGS)] if i < cuts else CONFIGS[(i - 1) % len(CONFIGS)]
        boot = Boot(i, name, f"{i:02x}", clean=(i == cuts))
        run_boot(guest, image, boot, args, py, rng, rate, timeout=300, log=log)
        boots.append(boot)
        checks.append(check_boot(guest, image, out, boot, boots))
        c = checks[-1]
        log(f"powercut: boot {i:2d} {name:8} {'clean' if boot.clean else 'cut'} "
            f"ready={'yes' if boot.ready_at else 'no '} {boot.seconds:5.1f} s  fsck={c['fsck_code']} "
            f"unreadable={len(c['unreadable'])} expected={c['expected']} once={c['once']} "
            f"lost={c['missing']} dup={c['duplicated']} {'ok' if c['ok'] else 'FAIL'}")
    final = checks[-1]
    return {"cuts": cuts, "seed": seed, "kernel": kernel, "seconds": round(time.monotonic() - started, 1),
            "cuts_before_ready": sum(1 for b in boots if not b.clean and b.ready_at is None),
            "boots": [b.__dict__ for b in boots], "checks": checks,
            "ok": all(c["ok"] for c in checks),
            "totals": {"checked": sum(c["expected"] for c in checks),
                       "once": sum(c["once"] for c in checks),
                       "lost": sum(c["missing"] for c in checks),
                       "duplicated": sum(c["duplicated"] for c in checks),
                       "unreadable_files": sum(len(c["unreadable"]) for c in checks),
                       "fsck_uncorrected": sum(1 for c in checks if c["fsck_code"] >= 4),
                       "final_ok": final["ok"]}}


def check_boot(guest: Guest, image: str, out: str, boot: Boot, boots: Sequence[Boot]) -> Dict:
    """After boot ``boot``: the disk fscks, its final-named files read whole, and every exit of
    every boot so far that its recording was up long enough to flush is in it exactly once."""
    tag = f"{boot.index:02d}"
    disk = check_image(image, out, tag)
    result = {"boot": boot.index, "config": boot.config, "fsck_code": disk["fsck_code"],
              "fsck_tail": disk["fsck_tail"], "unreadable": [], "expected": 0, "once": 0,
              "missing": 0, "duplicated": 0, "damaged": [], "error": None}
    for name, _ in CONFIGS:
        result["unreadable"] += files_read_completely(os.path.join(disk["dump"], name))
    # the exits this boot's config must hold: of every boot on it so far, those older than its
    # last flush (a cut) or all (the clean stop)
    for earlier in (b for b in boots if b.config == boot.config):
        exits = exits_of(guest.serial(f"{earlier.index:02d}"), earlier.nonce)
        if not exits:
            continue
        last = max(exits.values())
        keep = {c: t for c, t in exits.items()
                if earlier.clean or t <= last - WINDOW_SECONDS}
        # a later boot that got to recording has recovered the earlier one's leftovers; the
        # boot's own (or one nothing recovered) may be crashed parts readers skip and name
        recovered = earlier is not boot and boot.ready_at is not None
        config = kill9.Config(earlier.config, ())
        check = kill9.check_directory(config, os.path.join(disk["dump"], boot.config),
                                      kill9.RESTARTED if recovered else kill9.AS_LEFT, keep,
                                      earlier.nonce)
        for key in ("expected", "once", "missing", "duplicated"):
            result[key] += getattr(check, key)
        result["damaged"] += check.damaged
        if not check.ok:
            result["error"] = check.error or f"boot {earlier.index}: {check.missing} lost, " \
                f"{check.duplicated} duplicated"
    result["ok"] = (disk["fsck_code"] < 4 and not result["unreadable"]
                    and result["error"] is None)
    if boot.index % 4 != 3 and not boot.clean:
        shutil.rmtree(disk["dump"], ignore_errors=True)   # keep a few dumps to look at
    return result


def report(result: Dict) -> str:
    t = result["totals"]
    return (f"power-cut campaign under {result['kernel']}: {result['cuts']} cuts "
            f"({result['cuts_before_ready']} before record was recording) in {result['seconds']} s; "
            f"{t['checked']:,} exit checks, {t['once']:,} readable exactly once, {t['lost']:,} lost, "
            f"{t['duplicated']:,} duplicated; {t['unreadable_files']} unreadable final files; "
            f"{t['fsck_uncorrected']} fsck runs left errors; final clean boot "
            f"{'ok' if t['final_ok'] else 'FAILED'}")


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
                        "this one; not under /tmp, which the guest does not share)")
    p.add_argument("--rate", type=float, default=40.0, help="exits per second in the guest")
    p.add_argument("--smp", type=int, default=2)
    p.add_argument("--mem", type=int, default=1024)
    p.add_argument("--json", help="also write the result as JSON here")
    args = p.parse_args(argv)
    missing = [t for t in ("qemu-system-x86_64", "cpio", "depmod", "e2fsck", "debugfs", "mkfs.ext4")
               if shutil.which(t) is None] + \
        ([] if os.path.exists("/usr/lib/qemu/virtiofsd") else ["virtiofsd"])
    if missing or os.geteuid() != 0:
        print(f"powercut: needs root and {', '.join(missing) or 'nothing else'} "
              "(make powercut-deps)", file=sys.stderr)
        return 2
    seed = args.seed if args.seed is not None else int(time.time())
    out = args.out or tempfile.mkdtemp(prefix="tsf-powercut-", dir="/var/tmp")
    os.makedirs(out, exist_ok=True)
    result = campaign(args.cuts, seed, out, args.kroot, args.kernel, args.python, args.rate,
                      args.smp, args.mem, log=lambda s: print(s, file=sys.stderr, flush=True))
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
