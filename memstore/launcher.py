"""Deprecated: the launchers moved to :mod:`memstore.deploy` (this alias goes next release)."""

from __future__ import annotations

import warnings

from memstore.address import write_file as write_address_file
from memstore.deploy.admin import request_once, set_cluster, stop_addresses
from memstore.deploy.curve import secure_args, secure_keys
from memstore.deploy.jobs import Job, Launcher
from memstore.deploy.local import LocalCluster, restart_shard, start_shards
from memstore.deploy.processes import ChildProcess, ready_line, stop_processes

warnings.warn(
    "memstore.launcher is deprecated: import memstore.deploy (local, jobs, admin, processes)",
    DeprecationWarning,
    stacklevel=2,
)

ShardProcess = ChildProcess
# Old private names some callers reached for; the public ones above replace them.
_request = request_once
_ready_line = ready_line

__all__ = [
    "Job",
    "Launcher",
    "LocalCluster",
    "ShardProcess",
    "restart_shard",
    "secure_args",
    "secure_keys",
    "set_cluster",
    "start_shards",
    "stop_addresses",
    "stop_processes",
    "write_address_file",
]
