"""hit's standard streams, which can fail under it: stdout a pipe whose reader left
(``hit ... | head -1``) or a full disk, stderr a closed pipe, a descriptor the shell
closed (``2>&-``). What the run produced (its files, its exit code) still comes out, and
no traceback does.
"""

from __future__ import annotations

import contextlib
import os
import sys

__all__ = ["open_stdio", "out", "say"]


def open_stdio() -> None:
    """Put /dev/null on a standard descriptor the shell closed (``hit ... 2>&-``). Left
    closed, the next descriptor opened takes its number: libuv's epoll fd became fd 2 and
    libuv aborted the run (SIGABRT), or a connection became fd 1 and would get the
    summary. Python sets sys.stdout/sys.stderr to None then: they get the /dev/null too."""
    for fd in (0, 1, 2):
        try:
            os.fstat(fd)
        except OSError:
            null = os.open(os.devnull, os.O_RDWR)  # the lowest free number: ``fd`` itself
            if null != fd:
                os.dup2(null, fd)
                os.close(null)
    if sys.stdout is None:
        sys.stdout = open(1, "w", encoding="utf-8", closefd=False)  # noqa: SIM115 (for good)
    if sys.stderr is None:
        sys.stderr = open(2, "w", encoding="utf-8", closefd=False)  # noqa: SIM115 (for good)


def say(text: str) -> None:
    """Text for stderr; what cannot be written (stderr a closed pipe) is dropped."""
    with contextlib.suppress(OSError, ValueError):
        sys.stderr.write(text)
        sys.stderr.flush()


def out(text: str, who: str = "hit") -> bool:
    """Write ``text`` to stdout; False when it could not be written. A reader that left
    is not an error and says nothing; a full disk or an I/O error is said on stderr.
    Either way stdout is then pointed at /dev/null, so nothing later (the interpreter's
    own flush at exit) raises again."""
    try:
        sys.stdout.write(text)
        sys.stdout.flush()
    except BrokenPipeError:
        _silence_stdout()
        return True
    except OSError as e:
        _silence_stdout()
        say(f"{who}: cannot write to stdout: {e.strerror}\n")
        return False
    return True


def _silence_stdout() -> None:
    with contextlib.suppress(OSError, ValueError):
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        os.close(devnull)
