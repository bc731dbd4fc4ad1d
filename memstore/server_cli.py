"""Deprecated: moved to :mod:`memstore.cli.server` (this alias goes next release)."""

from __future__ import annotations

import warnings

from memstore.cli.server import main, parser

warnings.warn(
    "memstore.server_cli is deprecated: import memstore.cli.server",
    DeprecationWarning,
    stacklevel=2,
)

__all__ = ["main", "parser"]
