"""How a serving program ends on a signal: one place for ``memstore-server`` and its
``--mpi`` form, so both close their shards the same way."""

from __future__ import annotations

import signal


def _interrupt(signum: int, frame: object) -> None:
    """SIGTERM ends the loop like Ctrl-C does; later signals are ignored while closing."""
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    raise KeyboardInterrupt


def stop_on_signals() -> None:
    """Make SIGTERM and SIGINT raise ``KeyboardInterrupt`` in the main thread, once."""
    signal.signal(signal.SIGTERM, _interrupt)
    signal.signal(signal.SIGINT, _interrupt)
