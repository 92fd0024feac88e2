"""The one way every command ends: an exit code, and Janus's own errors in one line each.

0 done; 1 the service stopped on a failure of its own (a broker or database it could not
recover from); 2 a problem to fix before running again (configuration, connection settings,
bad input); 3 a command's own "not yet" (documented with it); 130 interrupted; 141 the reader
of our output went away (`janus why JOB | head -1`), as a shell reports SIGPIPE. A bug is
not one of Janus's errors: its traceback is shown in full.
"""

from __future__ import annotations

import os
import select
import sys
from collections.abc import Callable

from janus.errors import ConfigError, JanusError

EXIT_FAILED = 1
EXIT_USAGE = 2
EXIT_INTERRUPTED = 130
EXIT_BROKEN_PIPE = 141


def say(error: BaseException) -> None:
    print(f"janus: {error}", file=sys.stderr)


def finish(command: Callable[[], int]) -> int:
    try:
        return command()
    except BrokenPipeError:
        if not _stdout_gone():
            raise  # a socket's, not our output's: not ours to hide
        _silence_stdout()
        return EXIT_BROKEN_PIPE
    except JanusError as exc:
        say(exc)
        return EXIT_USAGE
    except BaseExceptionGroup as group:
        # The service's supervised tasks fail as a group; say plainly what Janus itself raised.
        ours, others = group.split(JanusError)
        if others is not None:
            raise
        assert ours is not None
        leaves = _leaves(ours)
        for error in leaves:
            say(error)
        return EXIT_USAGE if all(isinstance(e, ConfigError) for e in leaves) else EXIT_FAILED
    except KeyboardInterrupt:
        return EXIT_INTERRUPTED


def _leaves(group: BaseExceptionGroup[JanusError]) -> list[BaseException]:
    leaves: list[BaseException] = []
    for exc in group.exceptions:
        leaves.extend(_leaves(exc) if isinstance(exc, BaseExceptionGroup) else [exc])
    return leaves


def _stdout_gone() -> bool:
    """Has standard output's reader gone (a pipe with no reader left)?"""
    try:
        sys.stdout.flush()
    except BrokenPipeError:
        return True
    except (OSError, ValueError):
        return False
    try:
        poller = select.poll()
        poller.register(sys.stdout.fileno(), select.POLLOUT)
        return any(event & select.POLLERR for _, event in poller.poll(0))
    except (OSError, ValueError, AttributeError):
        return False


def _silence_stdout() -> None:
    # What is still buffered would fail again when the interpreter flushes it at exit
    # ("Exception ignored ... BrokenPipeError"): let it go nowhere instead.
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
    except (OSError, ValueError, AttributeError):
        pass
