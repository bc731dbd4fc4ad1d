"""One-shot admin requests to shards: a fresh socket per request, no cluster discovery.

Launchers use these before a cluster exists (``cluster``: tell each shard the full list)
and after clients are gone (``shutdown``); a :class:`memstore.Client` would first ask the
shards for the cluster it is trying to set up or stop.
"""

from __future__ import annotations

import zmq

from memstore import auth, wire
from memstore.config import STARTUP_TIMEOUT
from memstore.errors import AuthError, MemstoreError


def request_once(
    address: str,
    op: str,
    fields: dict | None = None,
    timeout: float = STARTUP_TIMEOUT,
    curve: auth.ClientKeys | None = None,
) -> dict:
    """Send one request to the shard at ``address``; its reply header.

    Args:
        curve: the identity for secure shards (default: the one ``MEMSTORE_CURVE_*`` name).

    Raises:
        MemstoreError: no answer within ``timeout`` s, or the shard refused the request
            (:class:`AuthError` when it refused this key).
    """
    socket = zmq.Context.instance().socket(zmq.DEALER)
    socket.setsockopt(zmq.LINGER, 0)
    curve = curve if curve is not None else auth.client_keys()
    if curve is not None:
        curve.apply(socket)
    try:
        socket.connect(address)
        socket.send_multipart(wire.request(1, op, fields))
        if not socket.poll(int(timeout * 1000)):
            raise MemstoreError(f"shard {address} did not answer {op} within {timeout}s")
        header = wire.unpack_header(socket.recv_multipart()[0])
    finally:
        socket.close()
    if not header.get("ok"):
        kind = AuthError if header.get("code") == AuthError.code else MemstoreError
        raise kind(f"shard {address} refused {op}: {header.get('msg')}")
    return header


def set_cluster(
    shard_addresses: list[str],
    timeout: float = STARTUP_TIMEOUT,
    curve: auth.ClientKeys | None = None,
) -> None:
    """Tell every shard the full shard list and its own place in it."""
    for index, address in enumerate(shard_addresses):
        fields = {"shards": shard_addresses, "index": index}
        request_once(address, "cluster", fields, timeout, curve=curve)


def stop_addresses(
    shard_addresses: list[str],
    timeout: float = 5.0,
    curve: auth.ClientKeys | None = None,
    refused: list[AuthError] | None = None,
) -> list[str]:
    """Ask each shard to shut down; the addresses that did not answer.

    With ``refused``, a shard that answered but refused this key (``--admin-key``) goes
    there as its error instead (it still serves).
    """
    silent = []
    for address in shard_addresses:
        try:
            request_once(address, "shutdown", timeout=timeout, curve=curve)
        except AuthError as exc:
            if refused is None:
                silent.append(address)
            else:
                refused.append(exc)
        except MemstoreError:
            silent.append(address)
    return silent
