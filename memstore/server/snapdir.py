"""A snapshot directory on the saving side: who may write there, under which names, and
how the manifest moves from one whole generation to the next.

Every save writes a file of its own, ``shard-<i>-<random>.msnap``, through an unpredictable
temporary name opened with ``O_CREAT | O_EXCL | O_NOFOLLOW`` (mode 0600), fsyncs it, then,
under ``.lock``, renames it into place and records it in ``manifest.json`` (a temporary
file, fsync, rename, fsync of the directory: a reader sees the old manifest or the new one).
The manifest names one complete generation in ``files`` (what a restore reads) and the
files saved since in ``pending``; once every shard of the cluster has a pending file, they
become the generation and the files they replace are removed. A crash at any point leaves
the last generation whole; a failed save leaves it untouched.

The directory must belong to the shard's user and be writable by nobody else (created
0700 when missing). ``.saving-<cluster>-<i>.lock``, held with ``fcntl.flock`` for the whole
save, makes a second store saving into the directory at the same time fail with a clear
error. Temporary files of dead processes and files no manifest names (a crash between the
rename and the manifest update) are removed by the next save.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import hashlib
import json
import os
import secrets
import signal
import socket
import stat
import time
from collections.abc import Callable, Iterator
from typing import BinaryIO

from memstore.errors import SnapshotError
from memstore.server import snapshot

LOCK = ".lock"
SAVING = ".saving-"
TEMP = ".tmp-"
#: Test-only: the path of a file whose lines ``<action>-<point> <shard index>`` make that
#: shard's next saves crash (``exit``: SIGKILL to itself, kill -9), fail (``fail``) or
#: wait (``wait``: create ``<path>.reached``, then open the FIFO ``<path>.go`` the test made,
#: which blocks until the test opens it to write) at that point. Read at each save only when
#: set; never set it in production. Points: ``before-rename``, ``after-rename`` (the shard
#: file is in place, the manifest not yet updated).
FAULT_ENV = "MEMSTORE_TEST_SAVE_FAULT"
_CREATE = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC


class SaveDir:
    """The directory ``path`` opened for shard ``index`` of ``shards`` to save into: checked,
    claimed against other stores and cleaned of dead saves' leftovers. Use as a context
    manager; :meth:`save` writes one generation's file."""

    def __init__(self, path: str, shards: list[str], index: int):
        self.path, self.shards, self.index = path, shards, index
        self.cluster = hashlib.sha256(json.dumps(shards).encode()).hexdigest()[:16]
        self.fd = _open_private(path)
        self._claim: int | None = None
        try:
            with self._locked():
                self._clean()
                self._claim = self._claim_saving()
        except BaseException:
            os.close(self.fd)
            raise

    def __enter__(self) -> SaveDir:
        return self

    def __exit__(self, *exc) -> None:
        with self._locked():
            with contextlib.suppress(FileNotFoundError):
                os.unlink(self._saving_name(self.cluster, self.index), dir_fd=self.fd)
            os.close(self._claim)
        os.close(self.fd)

    def save(self, fill: Callable[[BinaryIO], tuple[str, int, int]]) -> snapshot.Saved:
        """Write a new file with ``fill`` (its SHA-256, bytes, keys), put it in place and
        record it in the manifest; what was saved."""
        started = time.monotonic()
        name = f"shard-{self.index}-{secrets.token_hex(8)}.msnap"
        temp = _temp_name()
        try:
            fd = os.open(temp, _CREATE, 0o600, dir_fd=self.fd)
            os.fchmod(fd, 0o600)
            with os.fdopen(fd, "wb", buffering=0) as file:
                sha256, nbytes, keys = fill(file)
            _fault("before-rename", self.index)
            with self._locked():
                os.rename(temp, name, src_dir_fd=self.fd, dst_dir_fd=self.fd)
                _fsync(self.fd)
                _fault("after-rename", self.index)
                self._record(name, sha256, nbytes, keys)
        except BaseException:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(temp, dir_fd=self.fd)
            raise
        path = os.path.join(self.path, name)
        return snapshot.Saved(path, sha256, nbytes, keys, time.monotonic() - started)

    # -- the manifest ----------------------------------------------------------------------

    def _record(self, name: str, sha256: str, nbytes: int, keys: int) -> None:
        """Add ``name`` to the pending generation, make that the manifest's generation once
        every shard has a file in it, and remove the files no longer named."""
        manifest = self._manifest() or {"format": snapshot.FORMAT, "shards": [], "files": {}}
        before = _named(manifest)
        pending = manifest.get("pending")
        if not isinstance(pending, dict) or pending.get("shards") != self.shards:
            pending = {"shards": self.shards, "files": {}}  # a new layout starts over
        pending["files"][str(self.index)] = {
            "file": name, "sha256": sha256, "bytes": nbytes, "keys": keys, "saved": time.time()
        }  # fmt: skip
        if len(pending["files"]) == len(self.shards):
            manifest.pop("pending", None)
            manifest["shards"], manifest["files"] = self.shards, pending["files"]
            manifest["generation"] = int(manifest.get("generation", 0)) + 1
        else:
            manifest["pending"] = pending
        manifest["updated"] = time.time()
        self._write_manifest(manifest)
        for old in before - _named(manifest):
            with contextlib.suppress(FileNotFoundError):
                os.unlink(old, dir_fd=self.fd)

    def _manifest(self) -> dict | None:
        try:
            return snapshot.read_manifest(self.path, self.fd)
        except SnapshotError:
            return None  # unreadable: the next generation replaces it

    def _write_manifest(self, manifest: dict) -> None:
        temp = _temp_name()
        try:
            fd = os.open(temp, _CREATE, 0o600, dir_fd=self.fd)
            os.fchmod(fd, 0o600)
            with os.fdopen(fd, "w") as out:
                json.dump(manifest, out, indent=1, sort_keys=True)
                out.flush()
                os.fsync(out.fileno())
            os.rename(temp, snapshot.MANIFEST, src_dir_fd=self.fd, dst_dir_fd=self.fd)
        except BaseException:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(temp, dir_fd=self.fd)
            raise
        _fsync(self.fd)

    # -- locks and leftovers ---------------------------------------------------------------

    @contextlib.contextmanager
    def _locked(self) -> Iterator[None]:
        """``.lock`` held: shards of one cluster update the manifest one at a time."""
        fd = _open_lock(LOCK, self.fd)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            yield
        finally:
            os.close(fd)

    def _saving_name(self, cluster: str, index: int) -> str:
        return f"{SAVING}{cluster}-{index}.lock"

    def _claim_saving(self) -> int:
        """Hold this shard's ``.saving-`` lock; refuse while another store holds one."""
        for name in os.listdir(self.fd):
            if not name.startswith(SAVING) or name.startswith(f"{SAVING}{self.cluster}-"):
                continue
            fd = _open_lock(name, self.fd)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                other = os.read(fd, 1 << 16).decode(errors="replace") or "?"
                raise self._busy(other) from None
            finally:
                os.close(fd)
            os.unlink(name, dir_fd=self.fd)  # its store died mid-save
        fd = _open_lock(self._saving_name(self.cluster, self.index), self.fd)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            raise self._busy(",".join(self.shards)) from None
        os.ftruncate(fd, 0)
        os.write(fd, ",".join(self.shards).encode())
        return fd

    def _busy(self, other: str) -> SnapshotError:
        return SnapshotError(
            f"snapshot directory {self.path} is in use: another store (shards {other}) is "
            "saving into it now; save into another directory, or wait for that save to end"
        )

    def _clean(self) -> None:
        """Remove temporary files of dead processes on this host, and snapshot files no
        manifest names (left by a crash between their rename and the manifest update)."""
        manifest = self._manifest()
        named = _named(manifest) if manifest is not None else None
        host = socket.gethostname()
        for name in os.listdir(self.fd):
            if name.startswith(TEMP):
                parts = name[len(TEMP) :].split("-", 2)
                if len(parts) == 3 and parts[2] == host and not _alive(parts[0]):
                    with contextlib.suppress(FileNotFoundError):
                        os.unlink(name, dir_fd=self.fd)
            elif named is not None and _is_shard_file(name) and name not in named:
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(name, dir_fd=self.fd)


def _open_private(path: str) -> int:
    """A descriptor of directory ``path``, created 0700 if missing; refused (naming it)
    unless it belongs to this process's user and nobody else may write it."""
    created = False
    for _ in range(2):  # the second time after making its parents
        try:
            os.mkdir(path, 0o700)
            created = True
            break
        except FileExistsError:  # there already, or another shard of the store made it
            break
        except FileNotFoundError:
            os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    flags = os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC | (os.O_NOFOLLOW if created else 0)
    try:
        fd = os.open(path, flags)
    except OSError as exc:
        raise SnapshotError(f"snapshot directory {path} cannot be opened: {exc}") from None
    try:
        if created:
            os.fchmod(fd, 0o700)  # whatever the umask
        _check_private(path, os.fstat(fd))
    except BaseException:
        os.close(fd)
        raise
    return fd


def _check_private(path: str, st: os.stat_result) -> None:
    if st.st_uid != os.geteuid():
        raise SnapshotError(
            f"snapshot directory {path} belongs to uid {st.st_uid}, not to this shard's user "
            f"(uid {os.geteuid()}): refused, its owner could swap the files; save into a "
            "directory of your own"
        )
    if st.st_mode & 0o022:
        raise SnapshotError(
            f"snapshot directory {path} is writable by other users (mode "
            f"{stat.S_IMODE(st.st_mode):04o}): refused, they could plant or replace files; "
            f"`chmod go-w {path}` or save into a private directory"
        )


def _open_lock(name: str, dir_fd: int) -> int:
    flags = os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC
    try:
        fd = os.open(name, flags, 0o600, dir_fd=dir_fd)
    except OSError as exc:
        if exc.errno != errno.ELOOP:
            raise
        raise SnapshotError(
            f"snapshot directory has a symbolic link at {name}: refused (someone planted it); "
            "remove it or save into another directory"
        ) from None
    os.fchmod(fd, 0o600)
    return fd


def _temp_name() -> str:
    """``.tmp-<pid>-<random>-<host>``: unpredictable, and whose process may be checked."""
    return f"{TEMP}{os.getpid()}-{secrets.token_hex(8)}-{socket.gethostname()}"


def _named(manifest: dict) -> set[str]:
    """The file names the manifest's generation and pending files use."""
    entries = list(manifest.get("files", {}).values())
    pending = manifest.get("pending")
    if isinstance(pending, dict) and isinstance(pending.get("files"), dict):
        entries += list(pending["files"].values())
    return {e["file"] for e in entries if isinstance(e, dict) and isinstance(e.get("file"), str)}


def _is_shard_file(name: str) -> bool:
    return name.startswith("shard-") and name.endswith(".msnap")


def _alive(pid: str) -> bool:
    try:
        os.kill(int(pid), 0)
    except ProcessLookupError:
        return False
    except (PermissionError, ValueError, OverflowError):
        return True  # another user's process, or not a pid we wrote: leave it
    return True


def _fsync(fd: int) -> None:
    """Make a rename in the directory ``fd`` durable (where the filesystem allows)."""
    try:
        os.fsync(fd)
    except OSError as exc:  # some filesystems refuse fsync on directories
        if exc.errno not in (errno.EINVAL, errno.EBADF):
            raise


def _fault(point: str, index: int) -> None:
    """The test-only fault hook (:data:`FAULT_ENV`)."""
    path = os.environ.get(FAULT_ENV)
    if not path:
        return
    try:
        with open(path) as file:
            lines = file.read().split("\n")
    except FileNotFoundError:
        return
    for line in lines:
        action, _, where = line.partition("-")
        if where.split() == [point, str(index)]:
            if action == "exit":
                os.kill(os.getpid(), signal.SIGKILL)
            if action == "wait":
                with open(f"{path}.reached", "w"), open(f"{path}.go"):
                    pass
            if action == "fail":
                raise OSError(f"test fault {line.strip()!r} ({FAULT_ENV})")
