"""Shard keywords from ``memstore-server``'s parsed command line.

Both ways of starting shards (one shard, :mod:`memstore.cli.server`; every rank of an MPI
job, :mod:`memstore.mpi.program`) build their :class:`~memstore.server.shard.Shard` with
these, so a new ``Shard`` keyword with a same-named option reaches both without a list to
keep in step.
"""

from __future__ import annotations

import argparse
import inspect
from typing import Any

from memstore.server.shard import Shard


def shard_options(args: argparse.Namespace) -> dict[str, Any]:
    """Every ``Shard`` keyword that ``args`` holds under its own name, and ``shm`` from
    ``--no-shm``; not ``address`` or ``curve`` (keys are loaded and checked by the caller).
    """
    names = set(inspect.signature(Shard).parameters) - {"address", "curve"}
    options = {name: getattr(args, name) for name in names if hasattr(args, name)}
    if getattr(args, "no_shm", False):
        options["shm"] = False  # otherwise None: the MEMSTORE_SHM setting decides
    return options
