"""This process's resident memory, read from ``/proc`` for the ``info`` operation.

Kept apart from the shard because it is about the operating system, not the protocol:
the figures show whether ``--max-memory`` and the shard's own overhead fit the node.
"""

from __future__ import annotations

import resource
import sys


def rss() -> int:
    """This process's resident memory in bytes (0 where /proc is missing)."""
    return _proc_status("VmRSS:")


def rss_peak() -> int:
    """The most resident memory this process has used, in bytes: VmHWM, since getrusage's
    maxrss on Linux carries over the parent's peak across fork and exec."""
    peak = _proc_status("VmHWM:")
    if peak:
        return peak
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak if sys.platform == "darwin" else peak * 1024  # Linux and BSDs count KiB


def _proc_status(field: str) -> int:
    """A ``/proc/self/status`` line's figure in bytes (0 if it cannot be read)."""
    try:
        with open("/proc/self/status") as status:
            for line in status:
                if line.startswith(field):
                    return int(line.split()[1]) * 1024  # the kernel writes kB
    except (OSError, ValueError, IndexError):
        pass
    return 0
