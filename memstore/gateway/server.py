"""The gateway's asyncio server: one connection per task, commands run in a thread pool.

Each connection's commands run one after another, in order (pipelining works); ``MULTI``
queues them until ``EXEC``. Bytes that are not RESP get one ``-ERR Protocol error`` and the
connection is closed, as Redis does; the shards never see them.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import logging
import threading
from typing import Any

from memstore.gateway import ai, keys  # noqa: F401  (they fill the command table)
from memstore.gateway.commands import Context, execute
from memstore.gateway.resp import OK, Error, Parser, RespError, Status, encode

log = logging.getLogger(__name__)

#: Bytes read per ``read`` call and the most commands run at once (over all connections).
READ_SIZE = 1024 * 1024
WORKERS = 16
#: bytes a connection buffers before asyncio stops reading it (default 64 KiB: a large
#: tensor then arrives in thousands of small reads)
STREAM_LIMIT = 16 * 1024 * 1024


class Gateway:
    """A RESP server on ``host:port`` in front of ``client``'s shards.

    ``client`` is a :class:`memstore.Client` or a function making one on first use;
    ``peers`` lists every gateway of the store (``CLUSTER SLOTS``), see :class:`Context`.
    """

    def __init__(
        self, client: Any, host: str = "127.0.0.1", port: int = 6379, peers: list | None = None
    ):
        self.host, self.port = host, port
        self._pool = concurrent.futures.ThreadPoolExecutor(WORKERS, "memstore-gateway")
        self._server: asyncio.base_events.Server | None = None
        self.ctx = Context(client, host, port, peers)

    async def start(self) -> None:
        self._server = await asyncio.start_server(
            self._serve, self.host, self.port, limit=STREAM_LIMIT
        )
        self.port = self.ctx.port = self._server.sockets[0].getsockname()[1]

    async def serve_forever(self) -> None:
        if self._server is None:
            await self.start()
        async with self._server:
            await self._server.serve_forever()

    def close(self) -> None:
        if self._server is not None:
            self._server.close()
        self._pool.shutdown(wait=False, cancel_futures=True)
        self.ctx.close()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        parser, queued = Parser(), None  # queued: the MULTI block's commands
        loop = asyncio.get_running_loop()
        try:
            while True:
                data = await reader.read(READ_SIZE)
                if not data:
                    return
                parser.feed(data)
                try:
                    for args in parser.commands():
                        reply, queued, close = await self._one(loop, args, queued)
                        writer.writelines(reply_chunks(reply))
                        if close:
                            return
                        await writer.drain()
                except RespError as exc:
                    writer.writelines(encode(Error(f"ERR Protocol error: {exc}")))
                    return
        except (ConnectionError, asyncio.IncompleteReadError):
            return
        except Exception:  # a bug here must cost one connection, never the gateway
            log.exception("gateway connection failed")
        finally:
            try:
                await asyncio.wait_for(writer.drain(), 5.0)
                writer.close()
            except (TimeoutError, ConnectionError):
                writer.transport.abort()

    async def _one(self, loop, args: list, queued: list | None) -> tuple[Any, list | None, bool]:
        """Reply to one command: (reply, the MULTI queue afterwards, close the connection)."""
        name = args[0].upper()
        if name == b"QUIT":
            return OK, queued, True
        if name == b"MULTI":
            if queued is not None:
                return Error("ERR MULTI calls can not be nested"), queued, False
            return OK, [], False
        if name == b"DISCARD":
            if queued is None:
                return Error("ERR DISCARD without MULTI"), None, False
            return OK, None, False
        if name == b"EXEC":
            if queued is None:
                return Error("ERR EXEC without MULTI"), None, False
            replies = [await self._run(loop, a) for a in queued]
            return replies, None, False
        if queued is not None:
            queued.append(args)
            return Status("QUEUED"), queued, False
        return await self._run(loop, args), None, False

    async def _run(self, loop, args: list) -> Any:
        return await loop.run_in_executor(self._pool, execute, self.ctx, args)


def reply_chunks(reply: Any) -> list:
    """``reply`` encoded; a reply that has no RESP form (a handler's bug) becomes an error
    reply, so the connection and the commands pipelined behind it are still served."""
    try:
        return encode(reply)
    except TypeError as exc:
        log.warning("gateway: a reply could not be encoded: %s", exc)
        return encode(Error(f"ERR the reply could not be encoded: {exc}"))


def serve(client: Any, host: str = "127.0.0.1", port: int = 6379, ready=None, peers=None) -> None:
    """Run a gateway until interrupted; ``ready(port)`` is called once it listens."""

    async def main() -> None:
        gateway = Gateway(client, host, port, peers)
        await gateway.start()
        if ready is not None:
            ready(gateway.port)
        try:
            await gateway.serve_forever()
        finally:
            gateway.close()

    asyncio.run(main())


class GatewayThread(threading.Thread):
    """A gateway served on a daemon thread of this process, stopped by :meth:`stop`
    (``memstore-server --resp-port``, the MPI bootstrap). ``client`` may be a function
    making the client on first use; ``peers`` as :class:`Gateway`'s, settable later on
    ``ctx.peers`` (the MPI bootstrap learns them once every gateway listens)."""

    def __init__(self, client: Any, host: str, port: int, peers: list | None = None):
        super().__init__(name=f"memstore-gateway {host}:{port}", daemon=True)
        self.gateway = Gateway(client, host, port, peers)
        self.ctx = self.gateway.ctx
        self._loop: asyncio.AbstractEventLoop | None = None
        self._task: asyncio.Task | None = None
        self._listening = threading.Event()
        self._error: BaseException | None = None

    def listen(self, timeout: float = 30.0) -> int:
        """Start the thread; its port once it listens.

        Raises:
            OSError: the port could not be bound (or the gateway did not listen in
                ``timeout``).
        """
        host, port = self.gateway.host, self.gateway.port
        self.start()
        if not self._listening.wait(timeout):
            raise OSError(f"the gateway did not listen on {host}:{port} within {timeout}s")
        if self._error is not None:
            raise OSError(f"the gateway could not listen on {host}:{port}: {self._error}")
        return self.gateway.port

    def run(self) -> None:
        try:
            asyncio.run(self._main())
        except asyncio.CancelledError:  # stop(): serve_forever was cancelled
            pass
        except BaseException as exc:  # reported to the starting thread
            self._error = exc
            self._listening.set()

    async def _main(self) -> None:
        await self.gateway.start()
        self._loop, self._task = asyncio.get_running_loop(), asyncio.current_task()
        self._listening.set()
        try:
            await self.gateway.serve_forever()
        finally:
            self.gateway.close()

    def stop(self, timeout: float = 5.0) -> bool:
        """Stop listening, end the thread and close its client; False if it would not."""
        if self._loop is not None and self.is_alive():
            try:
                self._loop.call_soon_threadsafe(self._task.cancel)
            except RuntimeError:  # the loop closed meanwhile: the thread is ending
                pass
        self.join(timeout)
        return not self.is_alive()


def serve_in_thread(client: Any, host: str, port: int, timeout: float = 30.0) -> int:
    """Start a gateway on a daemon thread (``memstore-server --resp-port``); its port once
    it listens. ``client`` may be a function making the client on first use.

    Raises:
        OSError: the port could not be bound (or the gateway did not listen in ``timeout``).
    """
    return GatewayThread(client, host, port).listen(timeout)


def connect(address: Any, timeout: float = 5.0, **options: Any) -> Any:
    """The :class:`memstore.Client` a gateway serves with: no ensemble prefixes of its own,
    since SmartRedis clients add theirs to the keys they send. ``options``: more
    ``Client`` keyword arguments (``aliases``)."""
    from memstore.client import Client

    client = Client(address, timeout=timeout, **options)
    for use in (
        client.use_tensor_ensemble_prefix,
        client.use_dataset_ensemble_prefix,
        client.use_list_ensemble_prefix,
        client.use_model_ensemble_prefix,
    ):
        use(False)
    return client
