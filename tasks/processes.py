"""Process plumbing shared by the producers' servers and the workers' supervisor."""

from __future__ import annotations

import signal
import sys


def die_with_parent(sig: int = signal.SIGTERM) -> None:
    """For `preexec_fn`: the child gets `sig` when the process that started it dies (Linux), so a
    child never outlives its parent: servers started by a test run, workers of a supervisor."""
    import ctypes

    if sys.platform.startswith("linux"):
        PR_SET_PDEATHSIG = 1
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(PR_SET_PDEATHSIG, sig)
