"""Whether this run is CI's, whether the kernel's TASKSTATS can be used here, and what a test does
when its tools or privileges are missing: under CI (``CI=true``), which runs as root with every
tool installed, a skip is a failure."""

from __future__ import annotations

import os
from typing import NoReturn

import pytest

UNDER_CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")


def unavailable(why: str) -> NoReturn:
    """A test whose tools or privileges are missing here: skip with the reason, fail under CI=true
    (CI runs `make test` as root, which installs every tool the suite needs)."""
    if UNDER_CI:
        pytest.fail(why, pytrace=False)
    pytest.skip(why)


def _kernel_unavailable_reason():
    if os.geteuid() != 0:
        return "needs root (CAP_NET_ADMIN) for TASKSTATS queries"
    try:
        from taskstats_fast.kernel import netlink
        netlink.resolve_family()
    except Exception as e:  # any failure here is a reason, reported verbatim
        return f"TASKSTATS is not usable here: {e}"
    return None


_REASON = "unchecked"


def kernel_unavailable_reason():
    global _REASON
    if _REASON == "unchecked":
        _REASON = _kernel_unavailable_reason()
    return _REASON
