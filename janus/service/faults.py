"""Fault injection for tests: a process told so by its environment kills itself (SIGKILL) at a
named point, so a test can lose the leader at a moment no outside signal can hit reliably
(between the commit of a tick and its publishes). Unset, it costs a string comparison."""

from __future__ import annotations

import os
import signal
import sys

CRASH_AT_ENV = "JANUS_TEST_CRASH_AT"
# After the commit of a tick that finished jobs, before their outcomes are published.
OUTCOMES_COMMITTED = "outcomes_committed"
# After the commit of a tick that admitted jobs, before the admissions are published.
ADMISSIONS_COMMITTED = "admissions_committed"

_CRASH_AT = os.environ.get(CRASH_AT_ENV) or None


def crash_point(point: str) -> None:
    """kill -9 this process if the environment names `point`: no cleanup, no flush but this line."""
    if point == _CRASH_AT:
        sys.stderr.write(f"fault injection: killing this process at {point}\n")
        sys.stderr.flush()
        os.kill(os.getpid(), signal.SIGKILL)
