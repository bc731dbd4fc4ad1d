"""Snapshot files: one per shard, plus a manifest, written atomically and checked on read.

A snapshot directory holds a ``shard-<i>-<random>.msnap`` for each shard ``i`` of the
cluster that saved it and ``manifest.json``: the cluster's shard list and, per shard, its
file's name, SHA-256, size and key count (:mod:`memstore.server.snapdir` writes them and
says how a save moves the manifest from one whole generation to the next). A shard file is::

    b"MEMSNAP1"                                         8 bytes of magic
    record*                                             4-byte big-endian length + msgpack map,
                                                        then the raw frames it sizes
    SHA-256 of everything before it                     32 bytes

The first record is ``{"format": 1, "index", "shards", "created", "entries"}``, then one
``{"k": key, "t": kind, "m": meta, "s": [frame sizes]}`` per entry with its payload frames
as they were stored (the wire format's header + frames, never pickle), then
``{"end": True, "entries": n}``. A reader opens only regular files (no symlink followed, no
FIFO waited on), checks every declared size against the bytes the file still holds before
allocating it, and refuses a torn or altered file (checksum, early end) with
:class:`SnapshotError` naming it.
"""

from __future__ import annotations

import errno
import hashlib
import json
import logging
import os
import stat
import struct
import time
from collections.abc import Iterator
from typing import Any, BinaryIO, NamedTuple

import msgpack

from memstore import wire
from memstore.errors import SnapshotError

log = logging.getLogger(__name__)

MAGIC = b"MEMSNAP1"
FORMAT = 1
MANIFEST = "manifest.json"
_LENGTH = struct.Struct(">I")
_DIGEST = 32
#: Small records are gathered into writes of about this size (fewer system calls).
_WRITE_CHUNK = 1 << 20
#: Largest record header a reader accepts: metadata, never payload, lives there.
_MAX_RECORD = 256 << 20
#: Largest manifest a reader accepts (a line per shard: far below this).
_MAX_MANIFEST = 64 << 20


class Saved(NamedTuple):
    """What one shard wrote: reported to the client and recorded in the manifest."""

    path: str
    sha256: str
    nbytes: int
    keys: int
    seconds: float


class Loaded(NamedTuple):
    """One entry read back from a snapshot."""

    key: str
    kind: str
    meta: Any
    frames: list


# -- writing -------------------------------------------------------------------------------


class _Writer:
    """Bytes to a file and its running SHA-256; small pieces gathered, large ones direct."""

    def __init__(self, file: BinaryIO):
        self.file = file
        self.hash = hashlib.sha256()
        self.nbytes = 0
        self._pending = bytearray()

    def write(self, data: Any) -> None:
        view = memoryview(data).cast("B")
        self.hash.update(view)  # releases the GIL for large buffers, as does the write
        self.nbytes += view.nbytes
        if view.nbytes >= _WRITE_CHUNK:
            self.flush()
            self.file.write(view)
        else:
            self._pending += view
            if len(self._pending) >= _WRITE_CHUNK:
                self.flush()

    def record(self, header: dict, frames: list = ()) -> None:
        packed = wire.pack(header)
        self.write(_LENGTH.pack(len(packed)) + packed)
        for frame in frames:
            self.write(frame)

    def flush(self) -> None:
        if self._pending:
            self.file.write(self._pending)
            self._pending = bytearray()


def write_entries(
    file: BinaryIO, index: int, shards: list[str], entries: list[tuple[str, Any]]
) -> tuple[str, int, int]:
    """Write ``entries`` (``(key, Entry)`` pairs, consumed) to ``file`` as shard ``index``'s
    snapshot and fsync it; its SHA-256 (hex), size and key count.

    Runs on a saver thread: it only reads the entries, which are immutable once stored,
    and drops each reference once written so replaced values are freed as it goes.
    """
    out = _Writer(file)
    out.write(MAGIC)
    first = {"format": FORMAT, "index": index, "shards": shards, "created": time.time()}
    out.record({**first, "entries": len(entries)})
    for i, (key, entry) in enumerate(entries):
        sizes = [memoryview(f).nbytes for f in entry.frames]
        out.record({"k": key, "t": entry.kind, "m": entry.meta, "s": sizes}, entry.frames)
        entries[i] = None  # type: ignore[call-overload]  # let it go once written
    out.record({"end": True, "entries": len(entries)})
    out.flush()
    digest = out.hash.digest()
    file.write(digest)
    os.fsync(file.fileno())
    return digest.hex(), out.nbytes + _DIGEST, len(entries)


# -- reading -------------------------------------------------------------------------------


def open_regular(path: str, name: str | None = None, dir_fd: int | None = None) -> BinaryIO:
    """``path`` (or ``name`` in the directory ``dir_fd``) opened for reading, refused with
    :class:`SnapshotError` naming it unless it is a regular file: a symlink is not followed
    and a FIFO or device never blocks the open or the reads."""
    flags = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC
    try:
        fd = os.open(path if name is None else name, flags, dir_fd=dir_fd)
    except FileNotFoundError:
        raise
    except OSError as exc:
        why = "it is a symbolic link" if exc.errno == errno.ELOOP else exc.strerror
        raise SnapshotError(f"snapshot file {path} cannot be opened: {why}") from None
    if not stat.S_ISREG(os.fstat(fd).st_mode):
        os.close(fd)
        raise SnapshotError(
            f"snapshot file {path} is not a regular file (a FIFO, device or directory): "
            "refused; restore an intact copy"
        )
    return os.fdopen(fd, "rb")


def read_manifest(directory: str, dir_fd: int | None = None) -> dict | None:
    """The manifest of ``directory`` (opened through ``dir_fd`` when given); None if
    there is none."""
    path = os.path.join(directory, MANIFEST)
    try:
        with open_regular(path, MANIFEST if dir_fd is not None else None, dir_fd) as file:
            manifest = json.loads(file.read(_MAX_MANIFEST + 1)[:_MAX_MANIFEST])
    except FileNotFoundError:
        return None
    except (OSError, ValueError) as exc:
        raise SnapshotError(f"snapshot manifest {path} cannot be read: {exc}") from None
    if (
        not isinstance(manifest, dict)
        or manifest.get("format") != FORMAT
        or not isinstance(manifest.get("shards"), list)
        or not isinstance(manifest.get("files"), dict)
    ):
        raise SnapshotError(f"snapshot manifest {path} is not a memstore manifest (format 1)")
    return manifest


def plan_restore(directory: str) -> tuple[list[str], list[tuple[str, str]]]:
    """The saved cluster's shard list and ``(path, sha256)`` of each of its files, in
    shard order, from the manifest's last complete generation; :class:`SnapshotError`
    unless every shard's file is listed."""
    manifest = read_manifest(directory)
    if manifest is None:
        raise SnapshotError(
            f"{os.path.join(directory, MANIFEST)} not found: {directory} holds no memstore "
            "snapshot (make one with `memstore save DIR` or client.save(DIR))"
        )
    shards, files = manifest["shards"], manifest["files"]
    if not shards:
        pending = sorted((manifest.get("pending") or {}).get("files", {}))
        raise SnapshotError(
            f"snapshot {directory} holds no complete generation yet: only shard(s) "
            f"{', '.join(pending) or 'none'} saved since it was started (a save failed or "
            "named only some shards); save every shard again"
        )
    plan = []
    for index in range(len(shards)):
        item = files.get(str(index))
        if not isinstance(item, dict) or not isinstance(item.get("file"), str):
            raise SnapshotError(
                f"snapshot {directory} is incomplete: its manifest has no file for shard "
                f"{index} of {len(shards)} (that shard's save failed or never ran)"
            )
        plan.append((os.path.join(directory, os.path.basename(item["file"])), item["sha256"]))
    return shards, plan


class _Reader:
    """Exact reads from a file with a running SHA-256; EOF too early is a torn file, and a
    size declared beyond the file's end is refused before anything is allocated."""

    def __init__(self, file: BinaryIO, path: str):
        self.file, self.path = file, path
        self.hash = hashlib.sha256()
        self.offset = 0
        self.end = os.fstat(file.fileno()).st_size - _DIGEST  # where the records stop

    def read(self, n: int) -> bytearray:
        self.check(n)
        buffer = bytearray(n)
        got = self.file.readinto(buffer) if n else 0
        if got != n:
            raise SnapshotError(
                f"snapshot file {self.path} ends at byte {self.offset + (got or 0)}, inside "
                "a record: it is torn (a save that did not finish?); restore an intact copy"
            )
        self.hash.update(buffer)
        self.offset += n
        return buffer

    def check(self, n: int) -> None:
        """Refuse ``n`` more bytes unless the file still holds them (checked, never
        allocated: a file declaring a huge or negative size costs no memory)."""
        if n < 0 or self.offset + n > self.end:
            raise SnapshotError(
                f"snapshot file {self.path} declares {n} bytes at byte {self.offset} where "
                f"{max(self.end - self.offset, 0)} remain before its checksum: it is torn or "
                "was altered; restore an intact copy"
            )

    def frames(self, sizes: list) -> list[bytearray]:
        if not all(type(n) is int for n in sizes):
            raise self.corrupt("an entry record with frame sizes that are not integers")
        self.check(sum(sizes) if all(n >= 0 for n in sizes) else -1)
        return [self.read(n) for n in sizes]

    def record(self) -> dict:
        (length,) = _LENGTH.unpack(self.read(_LENGTH.size))
        if length > _MAX_RECORD:
            raise self.corrupt(f"a record header of {length} bytes")
        try:
            header = msgpack.unpackb(self.read(length), raw=False, strict_map_key=False)
        except SnapshotError:
            raise
        except Exception as exc:
            raise self.corrupt(f"an unreadable record ({exc})") from None
        if not isinstance(header, dict):
            raise self.corrupt("a record that is not a map")
        return header

    def corrupt(self, what: str) -> SnapshotError:
        return SnapshotError(
            f"snapshot file {self.path} has {what} at byte {self.offset}: it is damaged or "
            "was altered; restore an intact copy"
        )


def read_shard(path: str, sha256: str | None = None) -> Iterator[Loaded | dict]:
    """The file's first record (a dict), then its entries; the checksum is checked when
    the last one has been read, so callers keep what they read until the iterator ends.

    Raises:
        SnapshotError: naming ``path``, when it is missing, not a regular file, torn or
            altered.
    """
    try:
        file = open_regular(path)
    except FileNotFoundError:
        raise SnapshotError(f"snapshot file {path} cannot be opened: it is missing") from None
    with file:
        reader = _Reader(file, path)
        if bytes(reader.read(len(MAGIC))) != MAGIC:
            raise reader.corrupt("no memstore snapshot magic")
        first = reader.record()
        if first.get("format") != FORMAT:
            raise reader.corrupt(f"format {first.get('format')!r} (this memstore reads 1)")
        yield first
        count = 0
        while True:
            header = reader.record()
            if header.get("end") is True:
                break
            try:
                key, kind, meta, sizes = header["k"], header["t"], header.get("m"), header["s"]
            except KeyError:
                raise reader.corrupt("an entry record without key, kind or sizes") from None
            if not isinstance(key, str) or not isinstance(sizes, list):
                raise reader.corrupt("an entry record with a bad key or sizes")
            frames = reader.frames(sizes)
            count += 1
            yield Loaded(key, kind, meta, frames)
        _check_digest(file, path, reader.hash.digest(), sha256)
        if count != header.get("entries") or count != first.get("entries"):
            raise reader.corrupt(f"{count} entries where {first.get('entries')} were written")


def _check_digest(file: BinaryIO, path: str, digest: bytes, sha256: str | None) -> None:
    stored = file.read(_DIGEST + 1)
    if len(stored) != _DIGEST:
        raise SnapshotError(
            f"snapshot file {path} has {len(stored)} checksum bytes, not {_DIGEST}: it is "
            "torn or has bytes appended; restore an intact copy"
        )
    if stored != digest or (sha256 is not None and sha256 != digest.hex()):
        raise SnapshotError(
            f"snapshot file {path} fails its SHA-256 check (file says {stored.hex()[:16]}, "
            f"manifest says {(sha256 or '?')[:16]}, contents hash to {digest.hex()[:16]}): "
            "it was altered or damaged; restore an intact copy"
        )
