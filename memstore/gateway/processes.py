"""Deprecated: moved to :mod:`memstore.deploy.gateways` (this alias goes next release)."""

from __future__ import annotations

import warnings

from memstore.deploy.gateways import command, start_gateways
from memstore.deploy.processes import ChildProcess

warnings.warn(
    "memstore.gateway.processes is deprecated: import memstore.deploy.gateways",
    DeprecationWarning,
    stacklevel=2,
)

GatewayProcess = ChildProcess

__all__ = ["GatewayProcess", "command", "start_gateways"]
