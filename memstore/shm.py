"""Same-node shared-memory data path: large tensors as files on ``/dev/shm``.

A shard offers a directory of its own (mode 0700) in its ``hello``; a client on the same
node (same boot id, same pid namespace, and it can read the probe file the shard wrote
there: same ``/dev/shm``, never the hostname) uses it for tensors of at least
``memstore.config.shm_threshold()`` bytes:

- put: the client writes the bytes into a new file of its own upload area (one copy, by
  ``write``) and sends the file's name; the shard adopts it by an atomic rename into its
  directory, after checking it is a plain file of its user with one link (no symlink is
  ever followed: ``O_NOFOLLOW`` and ``dir_fd`` lookups of single names).
- get: the shard answers the entry's file name; the client maps it ``MAP_PRIVATE``: no
  copy until the caller writes, and the caller's writes never reach the store.
- overwrite/delete: the shard takes the file out of reach of new gets; mappings held by
  readers stay valid. If nobody holds it open or mapped any more (a write lease tells:
  the kernel grants one only then), it becomes a *spare*: a client's next put of about that
  size writes into its pages, allocated already (~2x faster than fresh tmpfs pages);
  otherwise it is unlinked.

Directory names carry the owner's pid namespace and pid, so a starting shard (or a shard
every :data:`memstore.config.SHM_SWEEP_INTERVAL` seconds) removes those of dead processes:
a killed shard's directory and a killed client's half-written uploads.
"""

from __future__ import annotations

import fcntl
import hmac
import itertools
import logging
import mmap
import os
import queue
import re
import secrets
import shutil
import signal
import stat
import threading
import time
from collections.abc import Callable
from typing import Any

from memstore.config import (
    ENV_SHM,
    ENV_SHM_DIR,
    SHM_ROOT,
    SHM_SPARE_MIN,
    SHM_SWEEP_INTERVAL,
    shm_spare_bytes,
    shm_spare_ttl,
)
from memstore.errors import ProtocolError

log = logging.getLogger(__name__)

#: ``memstore-<shard|client>-<pid namespace>-<pid>-<token>``: what a sweep may remove.
_DIR = re.compile(r"memstore-(shard|client|unix)-(\d+)-(\d+)-([0-9a-f]{32})\Z")
#: Names of files inside an area: short hexadecimal counters, never a path.
FILE_NAME = re.compile(r"[0-9a-f]{1,32}\Z")
PROBE = "probe"
#: In a client's upload area: a secret only the area's owner can read (0600 in a 0700
#: directory). A put naming the area's files carries it (``area_key``), which proves the
#: request comes from the process that made the area: area names are listable in /dev/shm
#: and file names are counters, so without it anyone who can reach the shard could have it
#: adopt another client's files.
AREA_KEY = "key"
#: Subdirectories of a shard's: freed files nobody has open, named ``<size>-<counter>`` (hex),
#: which clients move into their upload areas to write puts into; and freed files being
#: checked, which nobody can find by their old names any more.
SPARE, REAPING = "spare", "reaping"
SPARE_NAME = re.compile(r"([0-9a-f]{1,16})-[0-9a-f]{1,16}\Z")
_TRIM = ""  # queued to the reaper: free spares that waited too long
_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
WRITE_CHUNK = 1 << 30  # Linux writes at most ~2 GiB per call


def enabled() -> bool:
    """False when ``MEMSTORE_SHM=0`` (read each time: tests and programs may set it late)."""
    return os.environ.get(ENV_SHM, "1").strip() not in ("0", "false", "no", "off")


def root() -> str:
    """Where shard directories and upload areas live (``MEMSTORE_SHM_DIR``, else /dev/shm)."""
    return os.environ.get(ENV_SHM_DIR) or SHM_ROOT


def boot_id() -> str:
    try:
        with open("/proc/sys/kernel/random/boot_id") as f:
            return f.read().strip()
    except OSError:
        return ""


def pid_ns() -> str:
    """This process's pid namespace: pids (and their liveness) mean something only within it."""
    try:
        return str(os.stat("/proc/self/ns/pid").st_ino)
    except OSError:
        return "0"


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's process: alive
        return True
    return True


def sweep(where: str | None = None) -> int:
    """Remove directories left by dead shards and clients of this user and pid namespace;
    how many were removed."""
    where = where or root()
    ns, uid, removed = pid_ns(), os.geteuid(), 0
    try:
        names = os.listdir(where)
    except OSError:
        return 0
    for name in names:
        match = _DIR.match(name)
        if match is None or match[2] != ns or _alive(int(match[3])):
            continue
        path = os.path.join(where, name)
        try:
            st = os.lstat(path)
        except OSError:
            continue
        if not stat.S_ISDIR(st.st_mode) or st.st_uid != uid:
            continue
        shutil.rmtree(path, ignore_errors=True)  # fd-based on Linux: follows no symlink
        removed += 1
        log.info("removed %s of dead process %s", path, match[3])
    return removed


def make_dir(where: str, kind: str) -> tuple[str, int]:
    """A new private directory ``memstore-<kind>-...`` in ``where``: (path, its fd)."""
    for _ in range(8):  # a name taken already (never by chance: 128 random bits) is skipped
        name = f"memstore-{kind}-{pid_ns()}-{os.getpid()}-{secrets.token_hex(16)}"
        path = os.path.join(where, name)
        try:
            os.mkdir(path, 0o700)
        except FileExistsError:
            continue
        fd = os.open(path, _DIR_FLAGS)
        os.fchmod(fd, 0o700)  # mkdir's mode passed through the umask
        return path, fd
    raise OSError(f"cannot create a directory in {where}")


def write_area_key(dir_fd: int) -> str:
    """Write a new secret into the upload area ``dir_fd`` (:data:`AREA_KEY`): it."""
    key = secrets.token_hex(16)
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
    fd = os.open(AREA_KEY, flags, 0o600, dir_fd=dir_fd)
    try:
        os.write(fd, key.encode())
    finally:
        os.close(fd)
    return key


def _proves_owner(area_fd: int, claimed: Any) -> bool:
    """Whether ``claimed`` is the secret the upload area ``area_fd`` holds."""
    if not isinstance(claimed, str) or not claimed:
        return False
    try:
        fd = os.open(AREA_KEY, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=area_fd)
    except OSError:
        return False
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode) or st.st_uid != os.geteuid() or st.st_mode & 0o077:
            return False
        held = os.read(fd, 64)
    finally:
        os.close(fd)
    return bool(held) and hmac.compare_digest(held, claimed.encode(errors="replace"))


def take_spare(
    spares: str | int, nbytes: int, dir_fd: int, name: Callable[[], str]
) -> tuple[str, int] | None:
    """The smallest spare of the directory ``spares`` (a path or fd) of ``nbytes`` to twice
    that (the rest is truncated away), moved into ``dir_fd`` as ``name()`` and opened for
    writing: (name, fd); None if there is none. A rename is atomic, so a spare has one
    taker (a client, or the shard writing a run's output). ``OSError``: none could be
    taken (a spare moved but not opened is removed)."""
    if nbytes < SHM_SPARE_MIN:
        return None
    fits = []
    for spare in os.listdir(spares):
        match = SPARE_NAME.fullmatch(spare)
        if match is not None and nbytes <= int(match[1], 16) <= 2 * nbytes:
            fits.append((int(match[1], 16), spare))
    by_fd = isinstance(spares, int)
    for _, spare in sorted(fits):
        new = name()
        try:
            os.rename(spare if by_fd else os.path.join(spares, spare), new,
                      src_dir_fd=spares if by_fd else None, dst_dir_fd=dir_fd)  # fmt: skip
        except FileNotFoundError:
            continue  # another taker was first, or the reaper freed it
        try:
            return new, os.open(new, os.O_RDWR | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=dir_fd)
        except OSError:
            discard_file(new, dir_fd)
            raise
    return None


def write_all(fd: int, view: memoryview) -> None:
    """Write the bytes ``view`` (format ``B``) at the start of ``fd``: the one copy of a
    put, into the file's page cache."""
    at, nbytes = 0, view.nbytes
    while at < nbytes:
        written = os.pwrite(fd, view[at : at + WRITE_CHUNK], at)
        if written <= 0:
            raise OSError(f"no room for {nbytes} bytes")
        at += written


def discard_file(name: str, dir_fd: int) -> None:
    """Remove ``name`` from the directory ``dir_fd``, whatever it turned out to be."""
    try:
        os.unlink(name, dir_fd=dir_fd)
    except IsADirectoryError:
        shutil.rmtree(name, dir_fd=dir_fd, ignore_errors=True)
    except FileNotFoundError:
        pass
    except OSError as exc:
        log.warning("cannot remove %s: %s", name, exc)


# -- the shard's side --------------------------------------------------------------------------


class ShmFile:
    """A stored tensor's file in a shard directory; ``unlink`` when the entry goes."""

    __slots__ = ("area", "name")

    def __init__(self, area: ShardArea, name: str):
        self.area, self.name = area, name

    def unlink(self, frames: Any = None) -> None:
        """Unlink the file, off the request path: the pages of a large file are freed when
        the shard's last mapping of it (``frames``, handed over) goes, which takes ~10 ms
        for 64 MiB."""
        self.area.release(self.name, frames)


class ShmFiles:
    """A dataset's files, by the index of the frame each holds (``Entry.shm``)."""

    __slots__ = ("files",)

    def __init__(self, files: list[tuple[int, ShmFile]]):
        self.files = files

    def names(self, count: int) -> list[str | None]:
        """Per frame: its file's name, or None for a frame held in memory."""
        names: list[str | None] = [None] * count
        for i, file in self.files:
            names[i] = file.name
        return names

    def unlink(self, frames: Any = None) -> None:
        for _, file in self.files:
            file.unlink(frames)


class ShardArea:
    """A shard's directory: adopts uploads, names files for gets, keeps spares, removed on
    close. ``room()``: bytes the shard may still hold (its --max-memory less what it holds);
    spares stay within it and within ``MEMSTORE_SHM_SPARE`` bytes."""

    def __init__(self, where: str | None = None, room: Callable[[], float] | None = None):
        self.root = where or root()
        sweep(self.root)
        self.root_fd = os.open(self.root, _DIR_FLAGS)
        self.path, self.dir_fd = make_dir(self.root, "shard")
        self.room = room or (lambda: float("inf"))
        self.spare_budget = shm_spare_bytes()
        self.spare_ttl = shm_spare_ttl()
        os.mkdir(SPARE, 0o700, dir_fd=self.dir_fd)
        os.mkdir(REAPING, 0o700, dir_fd=self.dir_fd)
        self.spare_fd = os.open(SPARE, _DIR_FLAGS, dir_fd=self.dir_fd)
        self.reaping_fd = os.open(REAPING, _DIR_FLAGS, dir_fd=self.dir_fd)
        self.token = secrets.token_hex(16)
        fd = os.open(PROBE, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600,
                     dir_fd=self.dir_fd)  # fmt: skip
        try:
            os.write(fd, self.token.encode())
        finally:
            os.close(fd)
        self._names = itertools.count(1)
        self._released: queue.SimpleQueue = queue.SimpleQueue()
        self._reaper = threading.Thread(target=self._reap, name="memstore-shm-reaper", daemon=True)
        self._reaper.start()
        self._next_sweep = time.monotonic() + SHM_SWEEP_INTERVAL
        self._offer = {"dir": self.path, "boot_id": boot_id(), "pidns": pid_ns(),
                       "uid": os.geteuid(), "probe": self.token, "spare": SPARE}  # fmt: skip

    def offer(self) -> dict:
        """What a client needs to check that it shares this directory (``hello``, gets)."""
        return self._offer

    def adopt(
        self, area: Any, name: Any, nbytes: int, key: str, secret: Any = None
    ) -> tuple[memoryview, ShmFile]:
        """Move upload ``name`` of client area ``area`` into this directory: its bytes
        (mapped read-only) and its file. ``ProtocolError`` unless ``secret`` is the area's
        own (:data:`AREA_KEY`) and the upload is a plain file of this user, with one link
        and ``nbytes`` bytes, directly in the area."""
        where = f"put {key!r}: shared-memory file {area!r}/{name!r}"
        if not (isinstance(area, str) and isinstance(name, str)):
            raise ProtocolError(f"{where}: area and file must be names")
        match = _DIR.fullmatch(area)
        if match is None or match[1] != "client" or not FILE_NAME.fullmatch(name):
            raise ProtocolError(f"{where} is not a file of a client's upload area")
        new = f"{next(self._names):x}"
        try:
            area_fd = os.open(area, _DIR_FLAGS, dir_fd=self.root_fd)
        except OSError as exc:
            raise ProtocolError(f"{where}: no such upload area ({exc.strerror})") from None
        try:
            st = os.fstat(area_fd)
            if st.st_uid != os.geteuid() or st.st_mode & 0o077:
                raise ProtocolError(f"{where}: the upload area is not private to this user")
            if not _proves_owner(area_fd, secret):
                raise ProtocolError(
                    f"{where}: the request's 'area_key' is not the area's secret; only the "
                    "process that made an upload area may have its files adopted"
                )
            st = os.stat(name, dir_fd=area_fd, follow_symlinks=False)
            before = self._check(st, nbytes, where)
            os.rename(name, new, src_dir_fd=area_fd, dst_dir_fd=self.dir_fd)
        except OSError as exc:
            raise ProtocolError(f"{where}: {exc.strerror}") from None
        finally:
            os.close(area_fd)
        try:
            fd = os.open(new, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=self.dir_fd)
            try:
                after = self._check(os.fstat(fd), nbytes, where)
                if (after.st_ino, after.st_dev) != (before.st_ino, before.st_dev):
                    raise ProtocolError(f"{where}: the file was replaced while adopted")
                os.fchmod(fd, 0o400)
                view = memoryview(mmap.mmap(fd, nbytes, access=mmap.ACCESS_READ))
            finally:
                os.close(fd)
        except BaseException as exc:
            discard_file(new, self.dir_fd)
            if isinstance(exc, OSError):
                raise ProtocolError(f"{where}: {exc.strerror}") from None
            raise
        return view, ShmFile(self, new)

    @staticmethod
    def _check(st: os.stat_result, nbytes: int, where: str) -> os.stat_result:
        if not stat.S_ISREG(st.st_mode):
            raise ProtocolError(f"{where}: not a regular file (symlinks are never followed)")
        if st.st_uid != os.geteuid() or st.st_nlink != 1:
            raise ProtocolError(f"{where}: not a file of this user with a single link")
        if st.st_size != nbytes:
            raise ProtocolError(f"{where}: holds {st.st_size} bytes, the meta says {nbytes}")
        return st

    def write(self, buffer: Any, key: str) -> tuple[memoryview, ShmFile]:
        """A new file of this directory holding ``buffer``'s bytes (a run's output ``key``):
        its bytes (mapped read-only, as :meth:`adopt`'s) and its file. Safe from any thread:
        a model worker calls it, off the loop (64 MiB take ~30 ms). ``OSError`` (say, a full
        ``/dev/shm``) leaves no file behind."""
        view = memoryview(buffer)
        if view.ndim != 1 or view.format != "B":
            view = view.cast("B")
        nbytes, dir_fd = view.nbytes, self.dir_fd
        if dir_fd < 0 or not nbytes:  # an empty file cannot be mapped
            raise OSError(f"output {key!r}: no shared-memory file for {nbytes} bytes here")
        name = f"{next(self._names):x}"
        try:
            taken = take_spare(self.spare_fd, nbytes, dir_fd, lambda: name)
            if taken is None:
                flags = os.O_RDWR | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
                fd = os.open(name, flags, 0o600, dir_fd=dir_fd)
            else:
                fd = taken[1]
        except OSError as exc:
            raise OSError(exc.errno, f"output {key!r}: {exc.strerror}") from None
        try:
            os.ftruncate(fd, nbytes)  # a spare may be larger
            write_all(fd, view)
            os.fchmod(fd, 0o400)
            mapped = memoryview(mmap.mmap(fd, nbytes, access=mmap.ACCESS_READ))
        except BaseException as exc:
            discard_file(name, dir_fd)
            if isinstance(exc, OSError) and exc.errno is not None:
                raise OSError(exc.errno, f"output {key!r}: {exc.strerror}") from None
            if isinstance(exc, OSError):
                raise OSError(f"output {key!r}: {exc}") from None
            raise
        finally:
            os.close(fd)
        return mapped, ShmFile(self, name)

    def release(self, name: str, frames: Any = None) -> None:
        """Recycle or unlink ``name`` and drop ``frames`` (its mapping) in the reaper thread."""
        self._released.put((name, frames))

    def _reap(self) -> None:
        try:  # freeing pages yields to serving (Linux: a thread has its own nice value)
            os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), 19)
        except OSError:
            pass
        while (item := self._released.get()) is not None:
            name, frames = item
            del item, frames  # the shard's mapping first: a spare is mapped nowhere
            if self.dir_fd < 0:
                continue
            if name == _TRIM:
                self._trim(0, time.time() - self.spare_ttl)
            else:
                self._recycle(name)

    def _recycle(self, name: str) -> None:
        """Make the freed file ``name`` a spare if it has SHM_SPARE_MIN bytes or more and
        nobody has it open or mapped, else unlink it. Moved out of gets' reach first: a
        reader that opens it after that finds no file (``ENOENT``) or, having resolved the
        name just before, finds the name gone when it checks after mapping
        (``shm_client.Link.map``), so a spare is never a snapshot."""
        try:
            if os.stat(name, dir_fd=self.dir_fd, follow_symlinks=False).st_size < SHM_SPARE_MIN:
                raise OSError("too small to be worth a spare")
            os.rename(name, name, src_dir_fd=self.dir_fd, dst_dir_fd=self.reaping_fd)
            fd = os.open(name, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=self.reaping_fd)
        except OSError:
            discard_file(name, self.dir_fd)
            return
        kept = False
        try:
            size = os.fstat(fd).st_size
            if _open_nowhere_else(fd) and self._trim(size, None):
                os.fchmod(fd, 0o600)  # adopted files are read-only
                spare = f"{size:x}-{next(self._names):x}"
                os.rename(name, spare, src_dir_fd=self.reaping_fd, dst_dir_fd=self.spare_fd)
                kept = True
        except OSError as exc:
            log.debug("freed file %s not kept: %s", name, exc)
        finally:
            os.close(fd)
        if not kept:
            discard_file(name, self.reaping_fd)

    def _trim(self, adding: int, older_than: float | None) -> bool:
        """Free the oldest spares until ``adding`` more bytes fit (and, with ``older_than``,
        those made before it); whether they fit."""
        budget = min(self.spare_budget, self.room())
        if adding > budget:
            return False
        spares = self._spares()
        held = sum(size for size, _, _ in spares)
        for size, made, name in sorted(spares, key=lambda s: s[1]):
            if held + adding <= budget and (older_than is None or made >= older_than):
                break
            discard_file(name, self.spare_fd)
            held -= size
        return True

    def _spares(self) -> list[tuple[int, float, str]]:
        """(size, when it became a spare, name) of each spare."""
        spares = []
        for name in os.listdir(self.spare_fd):
            match = SPARE_NAME.fullmatch(name)
            if match is None:
                continue
            try:
                made = os.stat(name, dir_fd=self.spare_fd, follow_symlinks=False).st_ctime
            except OSError:
                continue  # a client took it
            spares.append((int(match[1], 16), made, name))
        return spares

    def spare_bytes(self) -> int:
        """Bytes in spare files now (``get_db_node_info``)."""
        return sum(size for size, _, _ in self._spares()) if self.dir_fd >= 0 else 0

    def maybe_sweep(self, now: float) -> None:
        """Every SHM_SWEEP_INTERVAL seconds: remove areas of dead clients and shards, and
        (in the reaper) spares no put took for ``spare_ttl`` seconds or beyond the room
        that puts since have left under --max-memory."""
        if now >= self._next_sweep:
            self._next_sweep = now + SHM_SWEEP_INTERVAL
            sweep(self.root)
            self._released.put((_TRIM, None))

    def close(self) -> None:
        if self.dir_fd >= 0:
            self._released.put(None)
            self._reaper.join(10.0)  # the directory goes below in any case
            for fd in (self.spare_fd, self.reaping_fd, self.dir_fd, self.root_fd):
                os.close(fd)
            self.dir_fd = -1
            shutil.rmtree(self.path, ignore_errors=True)


def _open_nowhere_else(fd: int) -> bool:
    """Whether no other open file (descriptor or mapping, of any process) refers to ``fd``'s
    file: the kernel grants a write lease only then. The lease is dropped at once; should
    an open break it meanwhile, the notice is SIGURG, which is ignored unless handled (the
    default, SIGIO, would end the shard)."""
    try:
        fcntl.fcntl(fd, fcntl.F_SETSIG, signal.SIGURG)
        fcntl.fcntl(fd, fcntl.F_SETLEASE, fcntl.F_WRLCK)
    except OSError:  # EAGAIN: open elsewhere; EINVAL/EACCES: no leases here
        return False
    fcntl.fcntl(fd, fcntl.F_SETLEASE, fcntl.F_UNLCK)
    return True
