"""A CURVE keys folder seen from a launcher: the shards' options and the launcher's key.

These live in deploy, not in :mod:`memstore.auth`: they spell ``memstore-server``'s
command-line options and decide which key a launcher speaks with, both launcher business;
auth stays what shards and clients share (key files, the ZAP handler).
"""

from __future__ import annotations

import os
from pathlib import Path

from memstore import auth


def secure_args(keys_dir: str | os.PathLike) -> list[str]:
    """``memstore-server`` options for CURVE with the keys in ``keys_dir``."""
    directory = Path(keys_dir)
    return [
        "--curve-secret-key",
        str(directory / f"{auth.SERVER}.key_secret"),
        "--curve-authorized-keys",
        str(directory),
    ]


def secure_keys(keys_dir: str | os.PathLike) -> auth.ClientKeys:
    """The cluster key in ``keys_dir`` as the launcher's identity; generated if missing."""
    directory = Path(keys_dir)
    if not (directory / f"{auth.SERVER}.key_secret").exists():
        auth.keygen(directory)
    return auth.load_server(directory / f"{auth.SERVER}.key_secret").cluster_client()
