"""CURVE keys, and who may talk to a shard and run its admin operations.

A secure shard (``--curve-secret-key``) speaks ZeroMQ CURVE: every connection is encrypted
and authenticated, and a ZAP handler admits only client public keys it was given
(``--curve-authorized-keys DIR``) plus its own, which is the *cluster key*: the launcher and
the other shards (model workers) connect with it, and a client that holds it is admitted
too. Key files are ZeroMQ certificates (``zmq.auth``): ``NAME.key`` holds the public key,
``NAME.key_secret`` both. Secret files must be private to their owner (mode 0600) or they
are refused. docs/security.md has the threat model.
"""

from __future__ import annotations

import os
import stat
import tempfile
import threading
from dataclasses import dataclass, field
from pathlib import Path

import zmq
import zmq.auth
from zmq.auth.thread import ThreadAuthenticator

from memstore.config import ENV_CURVE_CLIENT_KEY, ENV_CURVE_DIR, ENV_CURVE_SERVER_KEY
from memstore.errors import MemstoreError

#: Operations that change or stop the whole shard; ``--admin-key`` / ``--no-admin`` guard them.
ADMIN_OPS = frozenset({"flush", "shutdown", "cluster", "save", "config"})
#: The names ``memstore keygen`` gives its two key pairs.
SERVER, CLIENT = "server", "client"
_ZAP_DOMAIN = "memstore"
_Z85_KEY_LEN = 40


@dataclass(frozen=True)
class ClientKeys:
    """What a client needs to reach secure shards: their public key and its own pair."""

    server_public: bytes
    public: bytes
    secret: bytes

    def apply(self, socket: zmq.Socket) -> None:
        """Make ``socket`` (before it connects) a CURVE client of the shards."""
        socket.curve_serverkey = self.server_public
        socket.curve_publickey = self.public
        socket.curve_secretkey = self.secret

    def env(self, directory: str | os.PathLike) -> dict[str, str]:
        """Write these keys into ``directory`` (0700, files 0600); the variables naming them."""
        server = _write_cert(Path(directory), "cluster-server", self.server_public, None)
        client = _write_cert(Path(directory), "cluster-client", self.public, self.secret)
        return {ENV_CURVE_SERVER_KEY: str(server), ENV_CURVE_CLIENT_KEY: str(client)}


@dataclass(frozen=True)
class ServerKeys:
    """A shard's CURVE identity, the client keys it admits, and its admin policy.

    ``admin`` is ``"open"`` (every admitted client), ``"key"`` (only ``admin_keys``) or
    ``"off"`` (no client). The cluster key (``public``) may always run admin operations: the
    launcher sets the shard list and stops shards with it.
    """

    public: bytes
    secret: bytes
    authorized: frozenset[bytes] = frozenset()
    admin: str = "open"
    admin_keys: frozenset[str] = field(default_factory=frozenset)

    def cluster_client(self) -> ClientKeys:
        """The cluster key as a client identity: how shards and launchers reach shards."""
        return ClientKeys(self.public, self.public, self.secret)

    def admits(self, client_public: bytes) -> bool:
        return (
            client_public == self.public
            or client_public in self.authorized
            or client_public.decode() in self.admin_keys  # the admin is a client too
        )


def generate() -> ServerKeys:
    """A fresh cluster key pair, in memory (``--secure`` launchers and ``mpi.init``)."""
    public, secret = zmq.curve_keypair()
    return ServerKeys(public, secret)


def keygen(directory: str | os.PathLike, force: bool = False) -> dict[str, Path]:
    """Write a server and a client key pair into ``directory`` (made 0700, files 0600).

    Raises:
        MemstoreError: keys are there already (and not ``force``).
    """
    path = Path(directory)
    path.mkdir(mode=0o700, parents=True, exist_ok=True)
    os.chmod(path, 0o700)  # before any secret is written: nobody else can look inside
    made = {}
    for name in (SERVER, CLIENT):
        secret = path / f"{name}.key_secret"
        if secret.exists() and not force:
            raise MemstoreError(f"{secret} exists already: keep it, or pass --force to replace")
        public_file, secret_file = zmq.auth.create_certificates(str(path), name)
        for f in (public_file, secret_file):
            os.chmod(f, 0o600)
        made[name] = Path(secret_file)
        made[f"{name}_public"] = Path(public_file)
    return made


def _write_cert(directory: Path, name: str, public: bytes, secret: bytes | None) -> Path:
    """One certificate file, created 0600 in a 0700 directory (never readable by others)."""
    directory.mkdir(mode=0o700, parents=True, exist_ok=True)
    os.chmod(directory, 0o700)
    path = directory / (f"{name}.key_secret" if secret else f"{name}.key")
    lines = ["curve", f'    public-key = "{public.decode()}"']
    if secret:
        lines.append(f'    secret-key = "{secret.decode()}"')
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write("\n".join(lines) + "\n")
    return path


def write_server_files(keys: ServerKeys, directory: str | os.PathLike) -> Path:
    """The cluster's secret certificate for ``memstore-server --curve-secret-key``."""
    return _write_cert(Path(directory), "cluster", keys.public, keys.secret)


def _check_private(path: Path) -> None:
    mode = os.stat(path).st_mode
    if mode & (stat.S_IRWXG | stat.S_IRWXO):
        raise MemstoreError(
            f"secret key file {path} is readable by others (mode {stat.S_IMODE(mode):04o}): "
            f"run chmod 600 {path}"
        )


def _load(path: str | os.PathLike, need_secret: bool) -> tuple[bytes, bytes | None]:
    path = Path(path)
    try:
        public, secret = zmq.auth.load_certificate(str(path))
    except (OSError, ValueError) as exc:
        raise MemstoreError(f"cannot read CURVE key file {path}: {exc}") from None
    if need_secret:
        if not secret:
            raise MemstoreError(f"{path} holds no secret key: give the .key_secret file")
        _check_private(path)
    return public, secret


def load_server(
    secret_file: str | os.PathLike,
    authorized_dir: str | os.PathLike | None = None,
    admin_key: str | os.PathLike | None = None,
    no_admin: bool = False,
) -> ServerKeys:
    """The keys of ``memstore-server --curve-secret-key/--curve-authorized-keys/--admin-key``.

    Without ``authorized_dir`` only holders of the server's own secret (the cluster key) are
    admitted. ``admin_key`` is a certificate whose public key alone may run admin operations.
    """
    public, secret = _load(secret_file, need_secret=True)
    authorized: set[bytes] = set()
    if authorized_dir is not None:
        directory = Path(authorized_dir)
        if not directory.is_dir():
            raise MemstoreError(f"--curve-authorized-keys {directory} is not a directory")
        for cert in sorted(directory.glob("*.key")):
            authorized.add(_load(cert, need_secret=False)[0])
        if not authorized:
            raise MemstoreError(f"no public key files (*.key) in {directory}")
    admin, admin_keys = "open", frozenset()
    if no_admin and admin_key is not None:
        raise MemstoreError("give --admin-key or --no-admin, not both")
    if no_admin:
        admin = "off"
    elif admin_key is not None:
        admin, admin_keys = "key", frozenset({_load(admin_key, need_secret=False)[0].decode()})
    return ServerKeys(public, secret, frozenset(authorized), admin, admin_keys)


def _public_from(text: str) -> bytes:
    """A public key given as 40 Z85 characters or as a certificate file."""
    if len(text) == _Z85_KEY_LEN and not os.path.exists(text):
        return text.encode()
    return _load(text, need_secret=False)[0]


def client_keys(
    server_key: str | None = None,
    client_key: str | os.PathLike | None = None,
    directory: str | os.PathLike | None = None,
) -> ClientKeys | None:
    """A client's keys from arguments, else ``MEMSTORE_CURVE_*``; None when none are given.

    ``directory`` is what ``memstore keygen`` wrote (``server.key``, ``client.key_secret``);
    ``server_key`` a public key (file or Z85 text) and ``client_key`` a secret certificate.
    """
    directory = directory or os.environ.get(ENV_CURVE_DIR) or None
    server_key = server_key or os.environ.get(ENV_CURVE_SERVER_KEY) or None
    client_key = client_key or os.environ.get(ENV_CURVE_CLIENT_KEY) or None
    if directory is not None:
        server_key = server_key or str(Path(directory) / f"{SERVER}.key")
        client_key = client_key or str(Path(directory) / f"{CLIENT}.key_secret")
    if server_key is None and client_key is None:
        return None
    if server_key is None or client_key is None:
        raise MemstoreError(
            f"CURVE needs both the shards' public key ({ENV_CURVE_SERVER_KEY}) and this "
            f"client's secret key file ({ENV_CURVE_CLIENT_KEY}), or {ENV_CURVE_DIR}"
        )
    public, secret = _load(client_key, need_secret=True)
    return ClientKeys(_public_from(str(server_key)), public, secret)  # type: ignore[arg-type]


class Guard:
    """A shard's CURVE server side: the ZAP handler of its context and the admin check.

    A context has one ZAP handler (a :class:`zmq.auth.thread.ThreadAuthenticator`), so the
    secure shards of one process (``memstore.mpi`` runs several in threads) share one guard:
    get it with :meth:`acquire`, give it back with :meth:`release`.
    """

    _lock = threading.Lock()
    _by_context: dict[int, Guard] = {}

    def __init__(self, context: zmq.Context, keys: ServerKeys):
        self.keys = keys
        self._context_id = id(context)
        self._users = 0
        self._auth = ThreadAuthenticator(context)
        self._auth.start()
        self._auth.configure_curve_callback(_ZAP_DOMAIN, credentials_provider=self)

    @classmethod
    def acquire(cls, context: zmq.Context, keys: ServerKeys) -> Guard:
        """The guard of ``context``, started on first use.

        Raises:
            MemstoreError: another shard of this process uses other keys.
        """
        with cls._lock:
            guard = cls._by_context.get(id(context))
            if guard is None:
                guard = cls._by_context[id(context)] = cls(context, keys)
            elif guard.keys != keys:
                raise MemstoreError(
                    "another secure shard in this process uses other CURVE keys: the shards "
                    "of one process must share the cluster's keys"
                )
            guard._users += 1
            return guard

    def release(self) -> None:
        """One shard less; the last one stops the ZAP handler."""
        with self._lock:
            self._users -= 1
            if self._users > 0:
                return
            del self._by_context[self._context_id]
        self._auth.stop()

    def callback(self, domain: str, client_key: bytes) -> bool:
        """The ZAP thread's question: is this (Z85) client key admitted?"""
        return self.keys.admits(client_key)

    def apply(self, socket: zmq.Socket) -> None:
        """Make ``socket`` (before it binds) a CURVE server checked by this guard."""
        socket.zap_domain = _ZAP_DOMAIN.encode()
        socket.curve_server = True
        socket.curve_publickey = self.keys.public
        socket.curve_secretkey = self.keys.secret

    def admin_refusal(self, frame: object) -> str | None:
        """Why the client that sent ``frame`` may not run admin operations (None: it may)."""
        if self.keys.admin == "open":
            return None
        try:
            user = frame.get("User-Id")  # type: ignore[attr-defined]  # set by the ZAP reply
        except (AttributeError, zmq.ZMQError):
            user = None
        if user == self.keys.public.decode():  # the cluster key: launchers, the shards
            return None
        if self.keys.admin == "off":
            return (
                "admin operations are switched off for clients on this shard (--no-admin); "
                "only the cluster key may run them"
            )
        if user in self.keys.admin_keys:
            return None
        return "admin operations need the admin key (--admin-key) and this client lacks it"


def exposure_warning(address: str, secure: bool) -> str | None:
    """A warning for a shard reachable beyond this machine without CURVE, else None."""
    if secure or not address.startswith("tcp://"):
        return None
    host = address[len("tcp://") :].rsplit(":", 1)[0].strip("[]")
    if host in ("127.0.0.1", "localhost", "::1") or host.startswith("127."):
        return None
    return (
        f"WARNING: shard at {address} listens beyond loopback WITHOUT authentication or "
        "encryption: anyone who can reach this port can read, overwrite or delete every key, "
        "flush or stop the shard, and (with --models torchscript/all) run code as this user. "
        "Use --secure (memstore start) or --curve-secret-key (docs/security.md)."
    )


def private_tempdir(prefix: str = "memstore-keys-") -> str:
    """A fresh directory only this user can enter (mkdtemp makes it 0700)."""
    return tempfile.mkdtemp(prefix=prefix)
