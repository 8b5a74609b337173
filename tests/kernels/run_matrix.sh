#!/bin/bash
# run_matrix.sh -- run a command (default: the kernel-marked pytest suite) under several Linux kernels and
# print one table row per kernel: release, struct taskstats version, CPUs, pytest passed/failed/skipped, time.
#
#   tests/kernels/run_matrix.sh [-k KERNELS] [-c CMD] [-o OUTDIR] [-p PY] [-t TIMEOUT_S] [-C] [-n] [-h]
#
#   -k  comma-separated kernels (default: 6.1,6.12,host,6.12x64):
#         6.1      linux-image-6.1.0-56-cloud-amd64, qemu -smp 4, 1024 MB
#         6.12     linux-image-6.12.117+deb12-cloud-amd64, qemu -smp 4, 1024 MB
#         host     this machine's kernel, run directly (no qemu)
#         6.12x64  the 6.12 kernel with -smp 64, 4096 MB   (alias: 64)
#         PKG[@SMP[@MB]]  any other Debian kernel package, e.g. linux-image-6.1.0-56-cloud-amd64@32@2048
#   -c  command run with /bin/sh -c from the repo root (default:
#         "CI=true $PY -m pytest -m kernel -p no:cacheprovider -q tests": CI=true makes a skipped kernel test a
#         failure, so "passed" means every kernel test ran); env has PYTHONDONTWRITEBYTECODE=1 TMPDIR=/tmp.
#       In a guest the command runs through tests/kernels/unchroot.py: kchroot.sh chroots into the host's /, and
#       the kernel refuses user namespaces to a chrooted process, which the namespace tests need.
#       In a guest the host's / is shared READ-ONLY and /tmp is a fresh tmpfs: files the command needs must be
#       outside /tmp (e.g. under /var/tmp or the repo); files it writes to /tmp/out come back to OUTDIR/<kernel>/.
#   -o  where logs go (default /tmp/kmatrix-YYYYmmdd-HHMMSS). Per kernel: OUTDIR/<label>/{cmd.log,cmd.rc,info.json,
#       kchroot.log,timing.txt,console.log}. OUTDIR/summary.tsv holds the table.
#   -p  python interpreter (default /root/.pyenv/versions/3.11.7/bin/python3; use a real path, not the pyenv shim)
#   -t  qemu timeout per guest in seconds (default 1800)
#   -C  also run tests/kernels/capture.py into OUTDIR/<label>/captures (raw netlink captures + manifest.json)
#   -n  dry run: print what would run
# Guests run one after another (kchroot.sh uses the fixed directory $KROOT/run-chroot). Needs
# `apt-get install qemu-system-x86 kmod cpio`. Exit status: 0 if every command exited 0, else 1.
set -uo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
REPO=$(cd "$HERE/../.." && pwd)
KDIR_SCRIPTS=${KDIR_SCRIPTS:-/work/shared/kernels}
KROOT=${KROOT:-/tmp/kern}
export KROOT
PY=/root/.pyenv/versions/3.11.7/bin/python3
KERNELS=6.1,6.12,host,6.12x64
CMD= OUT= TMO=1800 CAPTURE=0 DRY=0
usage() { sed -n '2,27p' "$0" | sed 's/^# \{0,1\}//'; }
while getopts "k:c:o:p:t:Cnh" o; do
  case $o in
    k) KERNELS=$OPTARG;; c) CMD=$OPTARG;; o) OUT=$OPTARG;; p) PY=$OPTARG;; t) TMO=$OPTARG;;
    C) CAPTURE=1;; n) DRY=1;; h) usage; exit 0;; *) usage >&2; exit 2;;
  esac
done
shift $((OPTIND - 1))
[ $# -eq 0 ] || { echo "run_matrix: unexpected arguments: $*" >&2; usage >&2; exit 2; }
CMD=${CMD:-"CI=true $PY -m pytest -m kernel -p no:cacheprovider -q tests"}
OUT=${OUT:-/tmp/kmatrix-$(date +%Y%m%d-%H%M%S)}
PKG61=linux-image-6.1.0-56-cloud-amd64
PKG612=linux-image-6.12.117+deb12-cloud-amd64

# label pkg smp mem   (pkg "host" = no qemu)
resolve() {
  case $1 in
    6.1) echo "6.1 $PKG61 4 1024";;
    6.12) echo "6.12 $PKG612 4 1024";;
    host) echo "host host - -";;
    6.12x64|64) echo "6.12x64 $PKG612 64 4096";;
    linux-image-*)
      IFS=@ read -r pkg smp mem <<< "$1"
      smp=${smp:-4}; mem=${mem:-1024}
      echo "${pkg#linux-image-}x$smp $pkg $smp $mem";;
    *) echo "run_matrix: unknown kernel '$1'" >&2; return 1;;
  esac
}

# Download + unpack a kernel .deb the way kfetch.sh does. kfetch.sh quotes its '?' glob, so it cannot find
# .debs of packages whose name contains '+' (the 6.12 one); pre-populate $KROOT/x/PKG so it skips the download.
ensure_kernel() {
  local pkg=$1 dest=$KROOT/x/$1 deb v
  [ -d "$dest" ] && return 0
  mkdir -p "$KROOT/debs" "$KROOT/x"
  (cd "$KROOT/debs" && apt-get download "$pkg" > /dev/null 2>&1) || { echo "apt-get download $pkg failed" >&2; return 1; }
  deb=$(ls -t "$KROOT"/debs/${pkg//+/?}_*.deb 2> /dev/null | head -1)
  [ -n "$deb" ] || { echo "no .deb for $pkg in $KROOT/debs" >&2; return 1; }
  rm -rf "$dest.tmp"; mkdir -p "$dest.tmp" && dpkg-deb -x "$deb" "$dest.tmp" && mv "$dest.tmp" "$dest" || return 1
  if [ -d "$dest/lib/modules" ]; then
    find "$dest/lib/modules" -name '*.ko.xz' -exec xz -d {} +
    for v in "$dest"/lib/modules/*; do depmod -b "$dest" "$(basename "$v")"; done
  fi
}

# The script run by /bin/sh -c in the guest chroot (or on the host): facts first, then the command.
# $1 = directory for result files (/tmp/out in a guest).
job_script() {
  local o=$1 cap=
  if [ "$CAPTURE" = 1 ]; then
    # no cgroup is mounted in a guest chroot: mount v1 (cpu,cpuacct) and v2 on the guest's tmpfs for capture.py
    [ "$o" = /tmp/out ] && cap="mkdir -p /tmp/cgv1 /tmp/cgv2; mount -t cgroup -o cpu,cpuacct cgroup /tmp/cgv1 2>/dev/null; \
mount -t cgroup2 cgroup2 /tmp/cgv2 2>/dev/null; "
    cap="$cap$PY tests/kernels/capture.py $o/captures > $o/capture.log 2>&1;"
  fi
  local cg=
  # a guest chroot has no cgroups mounted: lay out a v1 (cpu,cpuacct) and a v2 hierarchy like the host's
  [ "$o" = /tmp/out ] && cg="mount -t tmpfs tmpfs /sys/fs/cgroup 2>/dev/null; mkdir -p /sys/fs/cgroup/cpu \
/sys/fs/cgroup/unified; mount -t cgroup -o cpu,cpuacct cgroup /sys/fs/cgroup/cpu 2>/dev/null; \
mount -t cgroup2 cgroup2 /sys/fs/cgroup/unified 2>/dev/null; "
  local run="( $CMD )"
  # kchroot.sh's chroot would make the kernel refuse user namespaces: leave it first (see unchroot.py)
  [ "$o" = /tmp/out ] && run="$PY tests/kernels/unchroot.py -- /bin/sh -c $(printf %q "$CMD")"
  printf '%s' "$cg""cd $(printf %q "$REPO") && export PYTHONDONTWRITEBYTECODE=1 TMPDIR=/tmp; mkdir -p $o; \
uname -r > $o/release; nproc > $o/nproc; \
$PY tests/kernels/capture.py --info > $o/info.json 2> $o/info.err; $cap \
t0=\$(date +%s.%N); $run > $o/cmd.log 2>&1; rc=\$?; t1=\$(date +%s.%N); echo \$rc > $o/cmd.rc; \
echo \"\$t0 \$t1\" > $o/cmd.time; exit \$rc"
}

# "N passed, M failed, K skipped, E errors" from pytest's summary line (the last "... in X.XXs" line)
pytest_counts() {
  local line
  line=$(grep -E '(^|[ =])(no tests ran|[0-9]+ (passed|failed|skipped|errors?|deselected|xfailed|xpassed|warnings?))' \
         "$1" 2> /dev/null | grep -E ' in [0-9.]+s' | tail -1)
  local p f s e
  p=$(grep -oE '[0-9]+ passed' <<< "$line" | grep -oE '[0-9]+'); f=$(grep -oE '[0-9]+ failed' <<< "$line" | grep -oE '[0-9]+')
  s=$(grep -oE '[0-9]+ skipped' <<< "$line" | grep -oE '[0-9]+'); e=$(grep -oE '[0-9]+ errors?' <<< "$line" | grep -oE '[0-9]+')
  if [ -z "$line" ]; then echo "- - - -"; else echo "${p:-0} ${f:-0} ${s:-0} ${e:-0}"; fi
}

json_field() { sed -n "s/.*\"$2\": *\([0-9]*\).*/\1/p" "$1" 2> /dev/null | head -1; }

command -v qemu-system-x86_64 > /dev/null || [ "$KERNELS" = host ] || {
  echo "run_matrix: qemu-system-x86_64 missing: apt-get update; apt-get install -y qemu-system-x86 kmod cpio" >&2; exit 2; }
# The guests import the package the host installed: it must be this checkout's (an editable
# install left by another checkout makes every test that runs outside the repo fail).
if [ "$DRY" = 0 ]; then
  case $PY in /tmp/*) [ "$KERNELS" = host ] || {
    echo "run_matrix: $PY is under /tmp, which a guest does not share (it gets a fresh tmpfs)" >&2; exit 2; };; esac
  got=$(cd / && "$PY" -c 'import os, taskstats_fast; print(os.path.dirname(os.path.dirname(taskstats_fast.__file__)))' 2>&1)
  [ "$got" = "$REPO" ] || {
    echo "run_matrix: $PY imports taskstats_fast from '$got', not from $REPO: run 'make install' first" \
         "(make matrix does)" >&2; exit 2; }
fi
mkdir -p "$OUT"
SUMMARY=$OUT/summary.tsv
printf 'label\trelease\tstruct\tfamily\tcpus\tpassed\tfailed\tskipped\terrors\trc\twall_s\tqemu_s\tboot_guest_s\tcmd_guest_s\n' > "$SUMMARY"
echo "run_matrix: logs in $OUT; command: $CMD" >&2
overall=0
IFS=, read -r -a KLIST <<< "$KERNELS"
for k in "${KLIST[@]}"; do
  spec=$(resolve "$k") || { overall=1; continue; }
  read -r label pkg smp mem <<< "$spec"
  d=$OUT/$label; rm -rf "$d"; mkdir -p "$d"
  t0=$(date +%s.%N); rc=0 qemu_s=- boot_s=-
  if [ "$pkg" = host ]; then
    job=$(job_script "$d")
    [ "$DRY" = 1 ] && { echo "[dry] host: sh -c $job"; continue; }
    echo "run_matrix: $label: running on the host kernel ..." >&2
    env -i HOME="$HOME" PATH="$PATH" TERM=dumb /bin/sh -c "$job" > "$d/run.log" 2>&1 || rc=$?
  else
    job=$(job_script /tmp/out)
    [ "$DRY" = 1 ] && { echo "[dry] $label: KROOT=$KROOT kchroot.sh -s $smp -m $mem -t $TMO $pkg -- $job"; continue; }
    ensure_kernel "$pkg" || { overall=1; printf '%s\t-\t-\t-\t-\t-\t-\t-\t-\tFETCH\t-\t-\t-\t-\n' "$label" >> "$SUMMARY"; continue; }
    echo "run_matrix: $label: booting $pkg -smp $smp -m $mem ..." >&2
    rm -rf "$KROOT/run-chroot/out"
    RETRIES=${RETRIES:-1} "$KDIR_SCRIPTS/kchroot.sh" -s "$smp" -m "$mem" -t "$TMO" -C "$REPO" "$pkg" -- "$job" \
      > "$d/kchroot.log" 2>&1 || rc=$?
    if [ -d "$KROOT/run-chroot/out/files" ]; then cp -a "$KROOT/run-chroot/out/files/." "$d/"; fi
    for f in timing.txt console.log qemu.log; do cp "$KROOT/run-chroot/$f" "$d/" 2> /dev/null; done
    cp "$KROOT/run-chroot/out/dmesg.txt" "$d/" 2> /dev/null
    qemu_s=$(sed -n 's/^wall_qemu_s=//p' "$d/timing.txt" 2> /dev/null); qemu_s=${qemu_s:--}
    boot_s=$(sed -n 's/^guest_uptime_at_job_start_s=//p' "$d/timing.txt" 2> /dev/null); boot_s=${boot_s:--}
  fi
  t1=$(date +%s.%N)
  wall=$(awk -v a="$t0" -v b="$t1" 'BEGIN{printf "%.1f", b-a}')
  cmd_s=$(awk '{printf "%.1f", $2-$1}' "$d/cmd.time" 2> /dev/null); cmd_s=${cmd_s:--}
  [ -f "$d/cmd.rc" ] && rc=$(cat "$d/cmd.rc") || { [ "$rc" = 0 ] && rc=NORC; }
  release=$(cat "$d/release" 2> /dev/null || echo -)
  cpus=$(cat "$d/nproc" 2> /dev/null || echo -)
  sv=$(json_field "$d/info.json" struct_version); sv=${sv:--}
  fam=$(json_field "$d/info.json" family_id); fam=${fam:--}
  read -r np nf ns ne <<< "$(pytest_counts "$d/cmd.log")"
  [ "$rc" = 0 ] || overall=1
  printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n' "$label" "$release" "$sv" "$fam" "$cpus" \
    "$np" "$nf" "$ns" "$ne" "$rc" "$wall" "$qemu_s" "$boot_s" "$cmd_s" >> "$SUMMARY"
  echo "run_matrix: $label: rc=$rc wall=${wall}s (cmd.log: $d/cmd.log)" >&2
done
[ "$DRY" = 1 ] && exit 0
echo
column -t -s $'\t' "$SUMMARY" 2> /dev/null || cat "$SUMMARY"
echo
echo "struct = struct taskstats version seen; wall_s = host wall time incl. boot; qemu_s = qemu process time;"
echo "boot_guest_s / cmd_guest_s are measured by the guest clock (TCG: not wall time). Logs: $OUT"
exit $overall
