"""MPI itself, for the bootstrap and the store: loading it, timed waits, the last resort.

Kept apart from both so that :mod:`._store` (which waits and aborts at shutdown) and
:mod:`._bootstrap` (which waits at the rendezvous and builds the store) share one copy.
"""

from __future__ import annotations

import logging
import os
import signal
import sys
import time
from collections.abc import Callable
from typing import Any

log = logging.getLogger(__name__)

#: How often a rank waiting on a non-blocking MPI request tests it. MPI has no timed wait,
#: and a blocking wait spins a core that an oversubscribed node (servers + apps) lacks.
POLL_S = 0.02


def load_mpi() -> Any:
    """``mpi4py.MPI``, imported on first use (importing it initialises MPI)."""
    try:
        from mpi4py import MPI
    except (ImportError, RuntimeError) as exc:
        raise ImportError(
            f"memstore.mpi could not load MPI ({exc}); install mpi4py and an MPI library "
            "with: pip install 'memstore[mpi]'"
        ) from exc
    return MPI


def wait_for(
    request: Any, deadline: float | None, check: Callable[[], float | None] | None = None
) -> bool:
    """Test the MPI ``request`` until it completes (True) or ``deadline`` passes (False).

    ``check`` runs between tests and may raise (a crashed shard) or return a new deadline.
    """
    while not request.Test():
        if check is not None:
            new = check()
            if new is not None:
                deadline = new if deadline is None else min(deadline, new)
        if deadline is not None and time.monotonic() >= deadline:
            return False
        time.sleep(POLL_S)
    return True


def abort_job(message: str) -> None:
    """Last resort: end every rank of the job (a peer may sit in a collective forever).

    Never returns: MPICH's ``MPI_Abort`` may return while ``mpiexec`` is still ending the
    job (seen with a silent node), and this rank must not go on as if it had shut down.
    """
    log.critical("%s; aborting the MPI job", message)
    print(f"memstore.mpi: {message}; aborting the MPI job (MPI_Abort)", file=sys.stderr)
    sys.stderr.flush()
    load_mpi().COMM_WORLD.Abort(1)
    os.kill(os.getpid(), signal.SIGKILL)  # no exit handlers: MPI_Finalize among them
