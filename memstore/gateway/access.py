"""Who may use a gateway: Redis's ``requirepass`` and ``AUTH``, plus an admin password.

With a password (``--requirepass-file``, ``MEMSTORE_GATEWAY_PASSWORD``) a connection must
send ``AUTH password`` or ``AUTH default password`` (or ``HELLO 3 AUTH default password``)
first; before that every command but ``AUTH``, ``HELLO`` and ``QUIT`` is answered
``-NOAUTH Authentication required.`` and, as in Redis, a command may hold at most 10
arguments of 16 KiB each. ``MEMSTORE.GATEWAYS host:port ...`` (which rewrites what
``CLUSTER SLOTS`` answers) needs ``AUTH admin ADMIN_PASSWORD``; a gateway without an admin
password refuses it to every client. docs/security.md says who may do what.
"""

from __future__ import annotations

import hmac
import os
import stat
from dataclasses import dataclass
from typing import Any

from memstore import auth
from memstore.errors import MemstoreError
from memstore.gateway.resp import OK, Error

ENV_PASSWORD = "MEMSTORE_GATEWAY_PASSWORD"
ENV_ADMIN_PASSWORD = "MEMSTORE_GATEWAY_ADMIN_PASSWORD"
DEFAULT_USER, ADMIN_USER = "default", "admin"
#: Commands a connection may send before it is authenticated (Redis's ``no-auth`` ones).
BEFORE_AUTH = frozenset({b"AUTH", b"HELLO", b"QUIT"})
#: Redis's bounds on an unauthenticated connection's commands: arguments, bytes each.
UNAUTHENTICATED_ARGS = 10
UNAUTHENTICATED_BULK = 16 * 1024
#: Commands (with arguments) only the admin user may run.
ADMIN_ONLY = frozenset({b"MEMSTORE.GATEWAYS"})

NOAUTH = Error("NOAUTH Authentication required.")
WRONGPASS = Error("WRONGPASS invalid username-password pair or user is disabled.")
HELLO_NOAUTH = Error(
    "NOAUTH HELLO must be called with the client already authenticated, otherwise the "
    "HELLO <proto> AUTH <user> <pass> option can be used to authenticate the client and "
    "select the RESP protocol version at the same time"
)


@dataclass(frozen=True)
class Access:
    """A gateway's passwords: ``password`` for every client (None: no ``AUTH`` needed),
    ``admin_password`` for the ``admin`` user (None: nobody runs admin-only commands)."""

    password: str | None = None
    admin_password: str | None = None

    def first_user(self) -> str | None:
        """A new connection's user: ``default`` when no password is needed, else None."""
        return DEFAULT_USER if self.password is None else None

    def login(self, args: list) -> tuple[str | None, Any]:
        """``AUTH``'s arguments: (the user they prove, or None; the reply)."""
        if len(args) == 1:
            user, given = DEFAULT_USER, args[0]
            if self.password is None:
                return None, Error(
                    "ERR AUTH <password> called without any password configured for the "
                    "default user. Are you sure your configuration is correct?"
                )
        elif len(args) == 2:
            user, given = bytes(args[0]).decode("latin-1"), args[1]
        else:
            return None, Error("ERR wrong number of arguments for 'auth' command")
        expected = {DEFAULT_USER: self.password, ADMIN_USER: self.admin_password}.get(user)
        if expected is None or not hmac.compare_digest(bytes(given), expected.encode()):
            return None, WRONGPASS
        return user, OK

    def refusal(self, user: str | None, args: list) -> Error | None:
        """Why ``user`` (None: not authenticated) may not run ``args``; None if it may."""
        name = command_name(args)
        if user is None and name not in BEFORE_AUTH:
            return NOAUTH
        if name in ADMIN_ONLY and len(args) > 1 and user != ADMIN_USER:
            shown = name.decode("latin-1")
            if self.admin_password is None:
                return Error(
                    f"NOPERM {shown} with arguments is refused: this gateway has no admin "
                    f"password (--admin-password-file or {ENV_ADMIN_PASSWORD}); give the "
                    "gateway list with --peers at start instead"
                )
            return Error(f"NOPERM {shown} with arguments needs AUTH {ADMIN_USER} <password>")
        return None


def command_name(args: list) -> bytes:
    """A command's name in upper case (at most 64 bytes: no real name is longer)."""
    return bytes(args[0][:64]).upper()


def read_password(path: str | os.PathLike) -> str:
    """The first line of a password file, which others must not be able to read.

    Raises:
        MemstoreError: the file is missing, readable by others, or empty.
    """
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW)
    except OSError as exc:
        raise MemstoreError(f"cannot read password file {path}: {exc}") from None
    with os.fdopen(fd, "rb") as f:
        mode = os.fstat(f.fileno()).st_mode
        if not stat.S_ISREG(mode) or mode & (stat.S_IRWXG | stat.S_IRWXO):
            raise MemstoreError(
                f"password file {path} is readable by others or not a plain file (mode "
                f"{stat.S_IMODE(mode):04o}): run chmod 600 {path}"
            )
        lines = f.read(64 * 1024).decode("utf-8", "strict").splitlines()
    if not lines or not lines[0]:
        raise MemstoreError(f"password file {path} is empty: write the password on its first line")
    return lines[0]


def password_from(value: str | None, path: str | os.PathLike | None, env_name: str) -> str | None:
    """A password given on the command line, else in a file, else in ``env_name``."""
    if value is not None and path is not None:
        raise MemstoreError("give a password or a password file, not both")
    if path is not None:
        return read_password(path)
    found = value if value is not None else os.environ.get(env_name)
    if found == "":
        raise MemstoreError(f"an empty password would let anyone in: set {env_name} or unset it")
    return found


def require_password(secure: bool, access: Access, where: str) -> None:
    """Refuse a gateway without a password in front of a CURVE store.

    Raises:
        MemstoreError: ``secure`` and ``access`` has no password.
    """
    if secure and access.password is None:
        raise MemstoreError(
            f"{where}: the store speaks CURVE, and a gateway without a password would serve "
            "anyone who reaches its port with the gateway's own key: give --requirepass-file "
            f"FILE (mode 0600) or {ENV_PASSWORD} (docs/security.md, 'The RESP gateway')"
        )


def exposure_warnings(host: str, port: int, access: Access) -> list[str]:
    """What to say on stderr about a gateway on ``host:port`` reachable beyond loopback."""
    warning = auth.exposure_warning(f"tcp://{host}:{port}", secure=False)
    if warning is None:
        return []
    if access.password is None:
        return [
            f"{warning} (This is a RESP gateway in front of the store: give it a password "
            "with --requirepass-file.)"
        ]
    return [
        f"WARNING: the gateway at {host}:{port} listens beyond loopback and RESP is not "
        "encrypted: its password and every value cross the network in the clear."
    ]
