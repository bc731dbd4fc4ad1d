"""Deprecated: moved to :mod:`memstore.deploy.schedulers` (this alias goes next release)."""

from __future__ import annotations

import warnings

from memstore.deploy.schedulers import (
    KINDS,
    SCRIPT_STORE_TIMEOUT,
    Placement,
    Step,
    allocation_hosts,
    batch_script,
    check_kind,
    find_mpiexec,
    hosts_for,
    launch_argv,
    nodes_needed,
    server_program,
)

warnings.warn(
    "memstore.schedulers is deprecated: import memstore.deploy.schedulers",
    DeprecationWarning,
    stacklevel=2,
)

__all__ = [
    "KINDS",
    "SCRIPT_STORE_TIMEOUT",
    "Placement",
    "Step",
    "allocation_hosts",
    "batch_script",
    "check_kind",
    "find_mpiexec",
    "hosts_for",
    "launch_argv",
    "nodes_needed",
    "server_program",
]
