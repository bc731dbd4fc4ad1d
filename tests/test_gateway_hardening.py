"""Issue 25 items 9 and 14: the RESP gateway's memory caps and its password.

Real ``memstore gateway`` processes in front of real shards, driven by raw sockets and
redis-py. Memory is read from the gateway's /proc/PID/status; "the gateway has read what we
sent" is read from /proc/net/tcp (both sockets' queues empty), never waited for by sleeping.
"""

from __future__ import annotations

import os
import select
import socket
import subprocess
import sys
import time
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import pytest

import memstore
from memstore.config import GATEWAY_READY_LINE
from memstore.gateway.resp import Parser, encode

redis = pytest.importorskip("redis")

MiB = 1024 * 1024
TIMEOUT = 20.0
#: Documented in docs/security.md: the most a connection holds beyond the query buffer caps
#: (one read, and what asyncio buffers before it pauses the socket).
PER_CONNECTION = 3 * MiB


@pytest.fixture(scope="module")
def store():
    with memstore.LocalCluster(1, shm=False) as running:
        yield running


@contextmanager
def gateway(address: str, *options: str, env: dict | None = None):
    """A ``memstore gateway`` process: yields (process, port); stopped at the end."""
    process = subprocess.Popen(
        [sys.executable, "-m", "memstore.cli", "gateway", "--port", "0", "--address", address,
         "--timeout", "10", *options],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env,
    )  # fmt: skip
    try:
        line = process.stdout.readline()  # bounded: the process prints it or exits
        assert line.startswith(GATEWAY_READY_LINE), line + process.stderr.read()
        yield process, int(line.rsplit(":", 1)[1])
    finally:
        process.terminate()
        try:
            process.wait(10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(10)


def status_mib(pid: int, field: str) -> float:
    """A memory figure of /proc/PID/status (VmRSS, VmHWM) in MiB."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) / 1024
    raise AssertionError(f"no {field} in /proc/{pid}/status")


def _unsent(mine: int, gateway_port: int) -> int:
    """Bytes of the loopback connection from port ``mine`` still on their way: in our send
    queue, or received by the gateway's socket but not yet read by the gateway."""
    left = 0
    for line in Path("/proc/net/tcp").read_text().splitlines()[1:]:
        fields = line.split()
        local, remote = (int(f.split(":")[1], 16) for f in fields[1:3])
        tx, rx = (int(q, 16) for q in fields[4].split(":"))
        if (local, remote) == (mine, gateway_port):
            left += tx
        elif (local, remote) == (gateway_port, mine):
            left += rx
    return left


def wait_delivered(sock: socket.socket, gateway_port: int) -> None:
    """Until every byte sent on ``sock`` has been read by the gateway (or it closed)."""
    mine = sock.getsockname()[1]
    deadline = time.monotonic() + TIMEOUT
    while _unsent(mine, gateway_port):
        assert time.monotonic() < deadline, f"the gateway did not read port {mine}'s bytes"
        time.sleep(0.005)


def wire(*args: bytes) -> bytes:
    return b"".join(bytes(chunk) for chunk in encode(list(args)))


def bulk_start(size: int) -> bytes:
    """An ``HSET k f <value>`` whose value announces ``size`` bytes; the value follows."""
    return b"*4\r\n$4\r\nHSET\r\n$1\r\nk\r\n$1\r\nf\r\n$%d\r\n" % size


def reply_of(sock: socket.socket, lines: int = 1) -> bytes:
    """The gateway's next ``lines`` reply lines (less if it closes first)."""
    sock.settimeout(TIMEOUT)
    data = b""
    for _ in range(1000):
        if data.count(b"\r\n") >= lines:
            break
        try:
            chunk = sock.recv(65536)
        except ConnectionResetError:
            break
        if not chunk:
            break
        data += chunk
    return data


def connect(port: int) -> socket.socket:
    return socket.create_connection(("127.0.0.1", port), timeout=TIMEOUT)


# -- item 9: query buffer caps ---------------------------------------------------------------

CAPS = ("--query-buffer-limit", "8MiB", "--query-buffer-total", "16MiB")


def test_a_bulk_announced_over_the_connection_limit_is_refused_at_once(store):
    """Before: the gateway waited for the 100 MB (and would have held them all)."""
    with gateway(store.address, *CAPS) as (_, port), connect(port) as sock:
        sock.sendall(bulk_start(100_000_000))
        reply = reply_of(sock)
        assert reply.startswith(b"-ERR query buffer limit"), reply
        assert b"--query-buffer-limit" in reply and b"8388608" in reply, reply


def test_unfinished_bulks_stay_within_the_total_cap(store):
    """Twelve connections each hold an unfinished 6 MiB value: two fit the 16 MiB total,
    the others get an error and are closed; the two then finish and a new connection is
    served. Before: all twelve were held (+72 MiB); three ~476 MiB bulks took a gateway
    from 45 to 1,462 MiB."""
    with gateway(store.address, *CAPS) as (process, port):
        with redis.Redis(port=port, protocol=2, socket_timeout=TIMEOUT) as r:
            r.hset("warm", "f", b"x" * 4096)  # the client is connected, pools are warm
        base = status_mib(process.pid, "VmRSS")
        socks = [connect(port) for _ in range(12)]
        try:
            for sock in socks:
                try:
                    sock.sendall(bulk_start(7 * MiB) + b"v" * (6 * MiB))
                except (BrokenPipeError, ConnectionResetError):
                    pass  # refused, and closed while we were sending
                wait_delivered(sock, port)
            peak = status_mib(process.pid, "VmHWM")
            for sock in socks[:2]:
                sock.sendall(b"v" * MiB + b"\r\n")
                assert reply_of(sock) in (b":1\r\n", b":0\r\n")
            for sock in socks[2:]:
                sock.shutdown(socket.SHUT_WR)
                reply = reply_of(sock)
                assert reply.startswith(b"-ERR gateway query buffers full"), reply
                assert b"--query-buffer-total" in reply, reply
        finally:
            for sock in socks:
                sock.close()
        with redis.Redis(port=port, protocol=2, socket_timeout=TIMEOUT) as r:
            r.hset("after", "f", b"y" * 4 * MiB)
            assert len(r.hget("after", "f")) == 4 * MiB
        bound = 16 + PER_CONNECTION / MiB * len(socks)
        assert peak - base <= bound, f"RSS {base:.0f} -> peak {peak:.0f} MiB, bound +{bound}"


def test_a_tensorset_over_the_connection_limit_is_refused(store):
    """One AI.TENSORSET with three 3 MiB blobs (9 MiB) under an 8 MiB limit: refused when
    the third blob is announced; nothing stored; other connections keep working. Before:
    stored (three 400 MiB blobs took a gateway to 1,979 MiB)."""
    blob = b"\0" * (3 * MiB)
    command = wire(b"AI.TENSORSET", b"big", b"UINT8", b"%d" % (9 * MiB), b"BLOB", blob, blob, blob)
    with gateway(store.address, *CAPS) as (_, port), store.client(timeout=10) as native:
        with connect(port) as sock:
            try:
                sock.sendall(command)
            except (BrokenPipeError, ConnectionResetError):
                pass
            sock.shutdown(socket.SHUT_WR)
            reply = reply_of(sock)
        assert reply.startswith(b"-ERR query buffer limit"), reply
        assert not native.tensor_exists("big")
        with redis.Redis(port=port, protocol=2, socket_timeout=TIMEOUT) as r:
            assert r.execute_command("AI.TENSORSET", "small", "UINT8", 2, "BLOB", b"ab")
        np.testing.assert_array_equal(native.get_tensor("small"), [97, 98])


def test_a_multi_queue_counts_against_the_connection_limit(store):
    """MULTI then three 3 MiB HSETs: the third would make the connection hold over 8 MiB.
    Before: all queued, without bound."""
    value = b"q" * (3 * MiB)
    with gateway(store.address, *CAPS) as (_, port), connect(port) as sock:
        sock.sendall(wire(b"MULTI") + wire(b"HSET", b"a", b"f", value) * 2)
        replies = reply_of(sock, 3)
        assert replies == b"+OK\r\n+QUEUED\r\n+QUEUED\r\n", replies
        try:
            sock.sendall(wire(b"HSET", b"c", b"f", value))
        except (BrokenPipeError, ConnectionResetError):
            pass
        sock.shutdown(socket.SHUT_WR)
        reply = reply_of(sock)
        assert reply.startswith(b"-ERR query buffer limit"), reply


def _send_until_stalled(sock: socket.socket, data: bytes, most: int) -> int:
    """Send ``data`` over and over (at most ``most`` bytes) until the gateway stops taking
    it: nothing could be sent for 1 s. The bytes sent."""
    sock.setblocking(False)
    sent = 0
    while sent < most:
        try:
            sent += sock.send(data)
        except BlockingIOError:
            _, writable, _ = select.select([], [sock], [], 1.0)
            if not writable:
                break
    sock.setblocking(True)
    return sent


def test_a_connection_that_stops_reading_holds_little_beyond_its_reply(store):
    """A client asks for a 4 MiB tensor, never reads the reply, and keeps sending: the
    gateway stops reading it once it holds 2 MiB more (asyncio's pause), so the connection
    costs its reply and about 3 MiB. Before: 32 MiB more (a 16 MiB StreamReader limit)."""
    with store.client(timeout=10) as native:
        native.put_tensor("reply", np.zeros(4 * MiB, np.uint8))
    with gateway(store.address) as (process, port):
        with redis.Redis(port=port, protocol=2, socket_timeout=TIMEOUT) as r:
            r.hset("warm", "f", b"x" * 4096)
        base = status_mib(process.pid, "VmRSS")
        sock = socket.socket()
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 64 * 1024)  # a slow reader
        sock.connect(("127.0.0.1", port))
        with sock:
            sock.sendall(wire(b"AI.TENSORGET", b"reply", b"BLOB"))
            sent = _send_until_stalled(sock, b"PING\r\n" * 10_000, 256 * MiB)
            peak = status_mib(process.pid, "VmHWM")
        assert sent < 256 * MiB, "the gateway never stopped reading"
        bound = 2 * 4 + PER_CONNECTION / MiB
        assert peak - base <= bound, f"RSS {base:.0f} -> peak {peak:.0f} MiB, bound +{bound}"


def test_the_parser_holds_a_big_bulk_once():
    """A 4 MiB value fed in 64 KiB pieces: the parser holds what arrived, not a copy too,
    and hands the value out as the buffer it was read into."""
    parser = Parser()
    header = bulk_start(4 * MiB)
    data = header + b"z" * (4 * MiB) + b"\r\n"
    for fed in range(64 * 1024, len(data), 64 * 1024):
        parser.feed(data[fed - 64 * 1024 : fed])
        assert list(parser.commands()) == []
        assert fed - len(header) <= parser.held() <= fed
    parser.feed(data[fed:])
    (command,) = list(parser.commands())
    assert isinstance(command[3], bytearray) and command[3] == b"z" * (4 * MiB)
    assert parser.held() == 0


# -- item 14: AUTH, the admin user, a CURVE store ---------------------------------------------


@pytest.fixture(scope="module")
def secure_store():
    with memstore.LocalCluster(1, secure=True) as running:
        yield running


def password_file(tmp_path: Path, name: str, password: str, mode: int = 0o600) -> str:
    path = tmp_path / name
    path.write_text(password + "\n")
    os.chmod(path, mode)
    return str(path)


def test_a_gateway_in_front_of_a_curve_store_needs_a_password(secure_store):
    """Before: it started and served anyone on its port with the cluster's key."""
    env = {**os.environ, **secure_store.env}
    env.pop("MEMSTORE_GATEWAY_PASSWORD", None)
    run = subprocess.run(
        [sys.executable, "-m", "memstore.cli", "gateway", "--port", "0",
         "--address", secure_store.address],
        env=env, capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert run.returncode == 2, run.stdout + run.stderr
    assert "CURVE" in run.stderr and "--requirepass-file" in run.stderr, run.stderr
    assert GATEWAY_READY_LINE not in run.stdout


def test_only_clients_that_authenticate_are_served(secure_store, tmp_path):
    """Before: a keyless redis-py read and deleted tensors and rewrote CLUSTER SLOTS."""
    with secure_store.client(timeout=10) as native:
        native.put_tensor("secret", np.arange(3, dtype=np.int32))
    env = {**os.environ, **secure_store.env}
    secret = password_file(tmp_path, "pw", "s3cret pass")
    with gateway(secure_store.address, "--requirepass-file", secret, env=env) as (_, port):
        with redis.Redis(port=port, protocol=2, socket_timeout=TIMEOUT) as stranger:
            for attempt in (
                lambda: stranger.execute_command("AI.TENSORGET", "secret", "VALUES"),
                lambda: stranger.delete("secret"),
                lambda: stranger.execute_command("MEMSTORE.GATEWAYS", "127.0.0.1:1"),
                lambda: stranger.execute_command("MULTI"),
            ):
                with pytest.raises(redis.AuthenticationError, match="Authentication required"):
                    attempt()
        with pytest.raises(redis.AuthenticationError, match="invalid username-password pair"):
            redis.Redis(port=port, password="wrong", socket_timeout=TIMEOUT).ping()
        for options in ({"protocol": 2}, {"protocol": 2, "username": "default"}, {}):
            with redis.Redis(
                port=port, password="s3cret pass", socket_timeout=TIMEOUT, **options
            ) as friend:  # AUTH pw; AUTH default pw; HELLO 3 AUTH default pw
                got = friend.execute_command("AI.TENSORGET", "secret", "VALUES")
                assert got[-1] == [0, 1, 2]
        with secure_store.client(timeout=10) as native:
            assert native.tensor_exists("secret")


def test_before_auth_only_small_commands_are_read(store, tmp_path):
    """Redis's bounds for unauthenticated connections: 10 arguments of 16 KiB."""
    secret = password_file(tmp_path, "pw", "pw")
    with gateway(store.address, "--requirepass-file", secret) as (_, port):
        with connect(port) as sock:
            sock.sendall(bulk_start(100_000))
            assert reply_of(sock) == b"-ERR Protocol error: unauthenticated bulk length\r\n"
        with connect(port) as sock:
            sock.sendall(b"*11\r\n")
            assert reply_of(sock) == b"-ERR Protocol error: unauthenticated multibulk length\r\n"
        with connect(port) as sock:
            sock.sendall(wire(b"AUTH", b"pw") + bulk_start(100_000) + b"w" * 100_000 + b"\r\n")
            assert reply_of(sock, 2) in (b"+OK\r\n:1\r\n", b"+OK\r\n:0\r\n")


def test_only_the_admin_rewrites_the_gateway_list(store, tmp_path):
    """MEMSTORE.GATEWAYS with arguments needs AUTH admin; reading the list does not."""
    user = password_file(tmp_path, "user", "user-pw")
    admin = password_file(tmp_path, "admin", "admin-pw")
    options = ("--requirepass-file", user, "--admin-password-file", admin)
    with gateway(store.address, *options) as (_, port):
        mine = f"127.0.0.1:{port}".encode()
        with redis.Redis(port=port, password="user-pw", socket_timeout=TIMEOUT) as r:
            with pytest.raises(redis.exceptions.NoPermissionError, match="AUTH admin"):
                r.execute_command("MEMSTORE.GATEWAYS", "127.0.0.1:1")
            assert r.execute_command("MEMSTORE.GATEWAYS") == [mine]
        with redis.Redis(
            port=port, username="admin", password="admin-pw", socket_timeout=TIMEOUT
        ) as root:
            assert root.execute_command("MEMSTORE.GATEWAYS", mine.decode(), "other:1")
            slots = root.execute_command("CLUSTER", "SLOTS")
            assert [node[2][:2] for node in slots] == [[b"127.0.0.1", port], [b"other", 1]]
    with (
        gateway(store.address) as (_, port),  # no admin password: nobody may
        redis.Redis(port=port, socket_timeout=TIMEOUT) as r,
        pytest.raises(redis.exceptions.NoPermissionError, match="no admin password"),
    ):
        r.execute_command("MEMSTORE.GATEWAYS", "127.0.0.1:1")


def test_a_password_file_others_can_read_is_refused(store, tmp_path):
    loose = password_file(tmp_path, "pw", "pw", mode=0o644)
    run = subprocess.run(
        [sys.executable, "-m", "memstore.cli", "gateway", "--port", "0",
         "--address", store.address, "--requirepass-file", loose],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert run.returncode == 2 and f"chmod 600 {loose}" in run.stderr, run.stderr


def test_a_gateway_beyond_loopback_is_warned_about():
    """The warning ``memstore gateway`` prints before it binds, asked for the host strings
    a user might give; nothing is bound here (tests bind loopback only)."""
    from memstore.gateway.access import Access, exposure_warnings

    for host in ("0.0.0.0", "198.18.0.1", "node1.cluster"):
        open_gateway = exposure_warnings(host, 6379, Access())
        assert open_gateway and "beyond loopback" in open_gateway[0], host
        assert "--requirepass-file" in open_gateway[0]
        guarded = exposure_warnings(host, 6379, Access(password="pw"))
        assert guarded and "not encrypted" in guarded[0], host
    for host in ("127.0.0.1", "localhost"):
        assert exposure_warnings(host, 6379, Access()) == [], host


def test_local_cluster_gateways_of_a_curve_store_take_its_password():
    """LocalCluster(secure=True, resp_port=0): the password is in keys_dir, mode 0600."""
    from memstore.deploy.gateways import PASSWORD_FILE

    with memstore.LocalCluster(1, secure=True, resp_port=0) as secure:
        path = Path(secure.keys_dir) / PASSWORD_FILE
        assert path.stat().st_mode & 0o777 == 0o600
        port = int(secure.resp_addresses[0].rsplit(":", 1)[1])
        with (
            redis.Redis(port=port, protocol=2, socket_timeout=TIMEOUT) as stranger,
            pytest.raises(redis.AuthenticationError),
        ):
            stranger.hget("x", "f")
        password = path.read_text().strip()
        with redis.Redis(port=port, password=password, socket_timeout=TIMEOUT) as friend:
            friend.hset("x", "f", b"1")
            assert friend.hget("x", "f") == b"1"


def test_requirepass_on_the_command_line_works_and_is_warned_about(store):
    with gateway(store.address, "--requirepass", "typed") as (process, port):
        with redis.Redis(port=port, password="typed", socket_timeout=TIMEOUT) as r:
            assert r.ping()
        process.terminate()
        process.wait(10)
        assert "(ps)" in process.stderr.read()


def test_memstore_server_resp_port_is_refused_with_curve(tmp_path):
    """Before: refused only with --mpi; one shard started a gateway without a password in
    front of itself."""
    made = memstore.auth.keygen(tmp_path / "keys")
    run = subprocess.run(
        [sys.executable, "-m", "memstore.server", "--port", "0", "--resp-port", "0",
         "--curve-secret-key", str(made["server"])],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert run.returncode == 2, run.stdout + run.stderr
    assert "no authentication" in run.stderr and "--requirepass-file" in run.stderr
