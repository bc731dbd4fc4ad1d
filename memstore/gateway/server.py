"""The gateway's asyncio server: one connection per task, commands run in a thread pool.

Each connection's commands run one after another, in order (pipelining works); ``MULTI``
queues them until ``EXEC``. Bytes that are not RESP get one ``-ERR Protocol error`` and the
connection is closed, as Redis does; the shards never see them. A connection must ``AUTH``
first when the gateway has a password (:mod:`memstore.gateway.access`), and one that would
hold more than its query buffer limit, or take every connection together past theirs, gets
an error and is closed (:mod:`memstore.gateway.limits`).
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import logging
import threading
from typing import Any

from memstore.gateway import ai, keys, streams  # noqa: F401  (they fill the command table)
from memstore.gateway.access import (
    HELLO_NOAUTH,
    UNAUTHENTICATED_ARGS,
    UNAUTHENTICATED_BULK,
    Access,
    command_name,
)
from memstore.gateway.commands import Context, Parked, execute, resume
from memstore.gateway.limits import Budget, QueryLimits
from memstore.gateway.resp import (
    BIG_BULK,
    MAX_ARGS,
    MAX_BULK,
    OK,
    Error,
    LimitExceeded,
    Parser,
    RespError,
    Status,
    encode,
)

log = logging.getLogger(__name__)

#: Bytes read per ``read`` call and the most commands run at once (over all connections).
READ_SIZE = 1024 * 1024
WORKERS = 16
#: Seconds a parked command waits past its own timeout for the shard's answer.
PARK_GRACE = 5.0
#: Seconds a connection closed for an error still reads (and drops) what its client sends.
LINGER = 2.0
#: asyncio stops reading a connection whose unread bytes pass twice this (its default,
#: 64 KiB, makes a large tensor arrive in thousands of small reads; 16 MiB made each idle
#: connection able to buffer 32 MiB outside the query buffer caps). With READ_SIZE it sets
#: the most a connection holds beyond the caps: 2 * 1 + 1 MiB, and one socket read.
STREAM_LIMIT = 1024 * 1024


class Gateway:
    """A RESP server on ``host:port`` in front of ``client``'s shards.

    ``client`` is a :class:`memstore.Client` or a function making one on first use;
    ``peers`` lists every gateway of the store (``CLUSTER SLOTS``), see :class:`Context`;
    ``access`` holds its passwords and ``limits`` its query buffer caps.
    """

    def __init__(
        self,
        client: Any,
        host: str = "127.0.0.1",
        port: int = 6379,
        peers: list | None = None,
        *,
        access: Access | None = None,
        limits: QueryLimits | None = None,
    ):
        self.host, self.port = host, port
        self.access = access or Access()
        self.limits = limits or QueryLimits()
        self.budget = Budget(self.limits.total)
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
        connection = Connection(self)
        try:
            while True:
                data = await reader.read(READ_SIZE)
                if not data:
                    return
                if await connection.received(data, writer):
                    if connection.refused:
                        await _discard_until_eof(reader, writer)
                    return
        except (ConnectionError, asyncio.IncompleteReadError):
            return
        except Exception:  # a bug here must cost one connection, never the gateway
            log.exception("gateway connection failed")
        finally:
            connection.close()
            try:
                await asyncio.wait_for(writer.drain(), 5.0)
                writer.close()
            except (TimeoutError, ConnectionError):
                writer.transport.abort()

    async def run(self, args: list) -> Any:
        """One command on the thread pool: its reply. A :class:`Parked` command waits on
        this event loop, not on a pool thread, then finishes on the pool."""
        loop = asyncio.get_running_loop()
        reply = await loop.run_in_executor(self._pool, execute, self.ctx, args)
        while isinstance(reply, Parked):
            waiting = asyncio.wrap_future(reply.future)
            await asyncio.wait([waiting], timeout=reply.seconds + PARK_GRACE)
            reply = await loop.run_in_executor(self._pool, resume, reply)
        return reply


class Connection:
    """One client connection's state: its parser, ``MULTI`` queue, user and held bytes.

    Commands run one after another, in order. Every byte the connection holds (its
    unfinished command, the command running, its ``MULTI`` queue) is counted against the
    gateway's :class:`QueryLimits`; past them it gets an error and is closed.
    """

    def __init__(self, gateway: Gateway):
        self.gateway = gateway
        self.parser = Parser(gateway.limits.per_connection)
        self.holding = gateway.budget.holding()
        self.queued: list | None = None  # the MULTI block's commands
        self.queued_bytes = 0
        self.user: str | None = None
        self.refused = False  # closed for an error: the client's later bytes are unread
        self.resp3 = False  # said HELLO 3
        self._login(gateway.access.first_user())

    def _login(self, user: str | None) -> None:
        self.user = user
        authenticated = user is not None
        self.parser.max_args = MAX_ARGS if authenticated else UNAUTHENTICATED_ARGS
        self.parser.max_bulk = MAX_BULK if authenticated else UNAUTHENTICATED_BULK

    def close(self) -> None:
        self.queued = None
        self.holding.release()

    async def received(self, data: bytes, writer: asyncio.StreamWriter) -> bool:
        """Parse ``data`` and answer every command it completes; True: close now."""
        try:
            self.parser.feed(data)
            self.holding.set(self.parser.held() + self.queued_bytes)
            for args in self.parser.commands():
                reply, close = await self._one(args)
                self.holding.set(self.parser.held() + self.queued_bytes)
                self.parser.extra = self.queued_bytes
                write_reply(writer, reply_chunks(reply, self.resp3))
                if close:
                    return True
                await writer.drain()
        except LimitExceeded as exc:
            log.warning("gateway: %s", exc)
            self._refuse(writer, Error(f"ERR {exc}"))
            return True
        except RespError as exc:
            self._refuse(writer, Error(f"ERR Protocol error: {exc}"))
            return True
        return False

    def _refuse(self, writer: asyncio.StreamWriter, error: Error) -> None:
        """Answer ``error`` and free what this connection holds: it is closing."""
        self.refused = True
        self.parser = Parser(0)
        self.close()
        writer.writelines(encode(error))

    async def _one(self, args: list) -> tuple[Any, bool]:
        """Reply to one command: (reply, close the connection)."""
        name = command_name(args)
        refusal = self.gateway.access.refusal(self.user, args)
        if refusal is not None:
            return refusal, False
        if name == b"QUIT":
            return OK, True
        if name == b"AUTH":
            return self._auth(args[1:]), False
        if name == b"HELLO":
            return await self._hello(args), False
        if name in (b"MULTI", b"DISCARD", b"EXEC"):
            return await self._transaction(name), False
        if self.queued is not None:
            self.queued.append(args)
            self.queued_bytes += command_size(args)
            return Status("QUEUED"), False
        return await self.gateway.run(args), False

    def _auth(self, args: list) -> Any:
        user, reply = self.gateway.access.login(args)
        if user is not None:
            self._login(user)
        return reply

    async def _hello(self, args: list) -> Any:
        """``HELLO [protover [AUTH user password] [SETNAME name]]``."""
        upper = [bytes(a).upper() for a in args[:6]]
        if b"AUTH" in upper[2:3]:
            reply = self._auth(args[3:5])
            if isinstance(reply, Error):
                return reply
        if self.user is None:
            return HELLO_NOAUTH
        reply = await self.gateway.run(args[:2])
        if len(args) > 1 and not isinstance(reply, Error):
            self.resp3 = bytes(args[1]) == b"3"
        return reply

    async def _transaction(self, name: bytes) -> Any:
        if name == b"MULTI":
            if self.queued is not None:
                return Error("ERR MULTI calls can not be nested")
            self.queued = []
            return OK
        if self.queued is None:
            return Error(f"ERR {name.decode()} without MULTI")
        queued, self.queued, self.queued_bytes = self.queued, None, 0
        if name == b"DISCARD":
            return OK
        return [await self.gateway.run(a) for a in queued]


async def _discard_until_eof(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    """After an error reply that closes the connection: end our side, then read and drop
    what the client still sends, for at most :data:`LINGER` seconds. Closing with unread
    bytes would send a reset, which can destroy the error reply before the client reads it."""
    try:
        writer.write_eof()
        async with asyncio.timeout(LINGER):
            while await reader.read(READ_SIZE):
                pass
    except (TimeoutError, OSError):
        pass


def command_size(args: list) -> int:
    """The bytes a parsed command holds (its arguments)."""
    return sum(len(a) for a in args)


def write_reply(writer: asyncio.StreamWriter, chunks: list) -> None:
    """Write a reply's chunks: small ones joined, a large one (a tensor's buffer) on its
    own, so it is not copied into a joined reply first (``writelines`` joins them all)."""
    small: list = []
    for chunk in chunks:
        if memoryview(chunk).nbytes < BIG_BULK:
            small.append(chunk)
            continue
        if small:
            writer.write(b"".join(small))
            small = []
        writer.write(chunk)
    if small:
        writer.write(b"".join(small))


def reply_chunks(reply: Any, resp3: bool = False) -> list:
    """``reply`` encoded; a reply that has no RESP form (a handler's bug) becomes an error
    reply, so the connection and the commands pipelined behind it are still served."""
    try:
        return encode(reply, resp3)
    except TypeError as exc:
        log.warning("gateway: a reply could not be encoded: %s", exc)
        return encode(Error(f"ERR the reply could not be encoded: {exc}"))


def serve(
    client: Any,
    host: str = "127.0.0.1",
    port: int = 6379,
    ready=None,
    peers=None,
    **options: Any,
) -> None:
    """Run a gateway until interrupted; ``ready(port)`` is called once it listens.
    ``options``: :class:`Gateway`'s ``access`` and ``limits``."""

    async def main() -> None:
        gateway = Gateway(client, host, port, peers, **options)
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
    ``ctx.peers`` (the MPI bootstrap learns them once every gateway listens); ``options``:
    :class:`Gateway`'s ``access`` and ``limits``."""

    def __init__(
        self, client: Any, host: str, port: int, peers: list | None = None, **options: Any
    ):
        super().__init__(name=f"memstore-gateway {host}:{port}", daemon=True)
        self.gateway = Gateway(client, host, port, peers, **options)
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


def serve_in_thread(
    client: Any, host: str, port: int, timeout: float = 30.0, **options: Any
) -> int:
    """Start a gateway on a daemon thread (``memstore-server --resp-port``); its port once
    it listens. ``client`` may be a function making the client on first use; ``options``:
    :class:`Gateway`'s ``access`` and ``limits``.

    Raises:
        OSError: the port could not be bound (or the gateway did not listen in ``timeout``).
    """
    return GatewayThread(client, host, port, **options).listen(timeout)


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
