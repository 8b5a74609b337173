"""The C codec under AddressSanitizer and UBSan.

tests/c/parse_harness.c is built together with csrc/ using -fsanitize=address,undefined and
run over every malformed case of tests/malformed_messages.py, every real capture, every
truncation of each capture and seeded random corruptions.  Any out-of-bounds read, misaligned access or undefined
arithmetic aborts the harness and fails the test.
"""

from __future__ import annotations

import glob
import os
import random
import struct
import subprocess

import malformed_messages

HERE = os.path.dirname(os.path.abspath(__file__))
CSRC = os.path.join(HERE, "..", "csrc")
CAPTURES = glob.glob(os.path.join(HERE, "data", "captures", "*", "*.bin"))


def _messages(data):
    off = 0
    while off + 16 <= len(data):
        length = struct.unpack_from("=I", data, off)[0]
        if length < 16 or off + length > len(data):
            return
        yield data[off:off + length]
        off += (length + 3) & ~3


def corpus():
    cases = {f"malformed_{k}": malformed_messages.GOOD + v[0] + malformed_messages.GOOD2
             for k, v in malformed_messages.MALFORMED.items()}
    # alone, so the fault sits at the very end of the heap buffer
    cases.update({f"malformed_alone_{k}": v[0] for k, v in malformed_messages.MALFORMED.items()})
    cases.update({f"framing_{k}": malformed_messages.GOOD + v[0] for k, v in malformed_messages.FRAMING.items()})
    rng = random.Random(20261126)
    for path in CAPTURES:
        data = open(path, "rb").read()
        tag = "_".join(path.split(os.sep)[-2:])
        cases[tag] = data
        for cut in range(0, len(data), 7 if len(data) > 300 else 1):
            cases[f"{tag}_cut{cut}"] = data[:cut]
        # a message cut short but with nlmsg_len telling the truth about the cut: the framing
        # passes, so every attribute length is checked against the true end of the buffer
        for m, msg in enumerate(_messages(data)):
            for cut in range(16, len(msg)):
                cases[f"{tag}_m{m}_trunc{cut}"] = struct.pack("=I", cut) + msg[4:cut]
        for i in range(20):
            flipped = bytearray(data)
            for _ in range(rng.randint(1, 6)):
                flipped[rng.randrange(len(flipped))] = rng.randrange(256)
            cases[f"{tag}_flip{i}"] = bytes(flipped)
    return cases


def test_codec_is_clean_under_asan_and_ubsan(asan_harness, tmp_path):
    exe, plan = asan_harness
    d = tmp_path
    files = []
    for name, data in corpus().items():
        p = d / f"{name.replace('/', '_')}.in"
        p.write_bytes(data)
        files.append(str(p))
    assert len(files) > 1000
    env = dict(os.environ, ASAN_OPTIONS="detect_leaks=1:abort_on_error=0:exitcode=86",
               UBSAN_OPTIONS="print_stacktrace=1:halt_on_error=1:exitcode=87")
    for start in range(0, len(files), 2000):
        batch = files[start:start + 2000]
        run = subprocess.run([str(exe), str(plan)] + batch, capture_output=True, text=True, env=env)
        assert run.returncode == 0, run.stderr[-4000:]
        assert run.stdout.count("records=") == len(batch)
    # the harness really decodes: a real capture yields its records under the sanitizers too
    pid_self = [f for f in files if f.endswith("6.18_pid_self.bin.in")]
    out = subprocess.run([str(exe), str(plan)] + pid_self, capture_output=True, text=True, env=env).stdout
    assert "records=1 " in out
