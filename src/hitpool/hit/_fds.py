"""File descriptors for the connections: RLIMIT_NOFILE raised from its soft to its hard
limit, and a `FileLimit` before the first request when ``-c`` still cannot fit.

Without this a run asked for more connections than the soft limit (1024 on most Linux
desktops, while the hard limit is far higher) fails its connects with EMFILE, which the
summary could only count as ``connect_error``: a fault of the generator shown as one of
the server. The limit is per process, and ``-p`` children inherit the raised one.
"""

from __future__ import annotations

import resource

from ._errors import FileLimit

__all__ = ["RESERVE", "ensure_room"]

# Descriptors a process holds besides its connections: stdio, the loop's epoll and signal
# pipe, the channel to the parent, files the imports left open, and the new socket of a
# lane that reconnects before the old one is closed.
RESERVE = 64


def ensure_room(connections: int, *, processes: int) -> int:
    """Raise the soft limit to the hard one; FileLimit if ``connections`` (in one process)
    plus `RESERVE` still do not fit. Returns the soft limit now in force."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != hard:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
            soft = hard
        except (ValueError, OSError):
            # an unlimited hard limit is not a number the kernel takes for NOFILE (nr_open
            # bounds it on Linux, OPEN_MAX on macOS): keep the soft limit, check against it
            pass
    need = connections + RESERVE
    if soft != resource.RLIM_INFINITY and need > soft:
        what = f"{connections} connection{'s' if connections != 1 else ''}"
        verb = "needs" if connections == 1 else "need"
        if processes > 1:
            what += " per process"
        # more processes help only when each has more than one connection to give away
        spread = ", or spread them over more processes with -p" if connections > 1 else ""
        raise FileLimit(
            f"{what} {verb} about {need} file descriptors, and RLIMIT_NOFILE allows {soft} "
            f"(hard limit {hard}). Fix: raise the hard limit (ulimit -Hn {need}, or "
            f"LimitNOFILE= for a systemd service){spread}"
        )
    return soft
