"""The client's side of the shared-memory path (:mod:`memstore.shm`).

:class:`SharedMemoryPath` is a client's path: which shards share memory with this process,
puts that send large buffers as files, gets that map the files a shard names, and the
arrays of ``Client.empty``. Below it: this process's upload area, a pool of upload files
allocated ahead, allocations for ``Client.empty``, and the :class:`Link` to one shard (which
also hands over the shard's spare files for puts to write into).
"""

from __future__ import annotations

import atexit
import ctypes
import itertools
import logging
import mmap
import os
import re
import shutil
import stat
import threading
import weakref
from collections.abc import Callable
from typing import Any

from memstore.client.requests import Requests, hello_reply
from memstore.client.transport import ignore_reply
from memstore.config import shm_pool_bytes, shm_threshold
from memstore.errors import ProtocolError
from memstore.futures import Future, InlineResult, chain
from memstore.shm import (
    FILE_NAME,
    PROBE,
    SPARE,
    boot_id,
    discard_file,
    enabled,
    make_dir,
    pid_ns,
    root,
    take_spare,
    write_all,
    write_area_key,
)

log = logging.getLogger(__name__)

#: A client's markers: a shard not yet asked whether it shares memory with this process, and
#: a shared-memory file gone between the shard's answer and its mapping.
UNASKED = object()
STALE = object()
#: From this size a put writes into a spare's or pool file's allocated pages through a
#: populated mapping: 64 MiB back to back, 0.44-0.47x numpy.copyto by pwrite, 0.49-0.58x so.
_MAPPED_WRITE = 8 << 20
#: A shard directory's name (:func:`memstore.shm.make_dir`): the only kind of directory an
#: offer may name, directly in this process's shared-memory root.
_SHARD_DIR = re.compile(r"memstore-shard-\d+-\d+-[0-9a-f]{32}\Z")


class _Uploads:
    """This process's upload area (one per root), made on first use, removed at exit."""

    def __init__(self, where: str):
        self.path, self.fd = make_dir(where, "client")
        self.key = write_area_key(self.fd)  # puts send it: proof that they own this area
        self.name = os.path.basename(self.path)
        self.pid = os.getpid()
        self._names = itertools.count(1)
        limit = shm_pool_bytes()
        self.pool = _Pool(self, limit) if limit > 0 else None
        atexit.register(self.close)

    def next_name(self) -> str:
        return f"{next(self._names):x}"

    def create(self, name: str | None = None) -> tuple[str, int]:
        """A new empty file of this area: (name, fd open for reading and writing)."""
        name = name or self.next_name()
        fd = os.open(name, os.O_RDWR | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC,
                     0o600, dir_fd=self.fd)  # fmt: skip
        return name, fd

    def take_spare(self, spares: str | None, nbytes: int) -> tuple[str, int] | None:
        """A spare of the shard directory ``spares`` (:func:`memstore.shm.take_spare`) moved
        into this area and opened, or None (none there, or it could not be taken)."""
        if spares is None:
            return None
        try:
            return take_spare(spares, nbytes, self.fd, self.next_name)
        except OSError:
            return None

    def write(self, buffer: memoryview, spares: str | None = None) -> str:
        """A file holding ``buffer``'s bytes: its name. A file whose pages are allocated
        already if there is one (a spare of the shard directory ``spares``, else one of the
        pool): faster to write than fresh tmpfs pages (docs/design.md, "Spares")."""
        view = buffer.cast("B") if buffer.ndim != 1 or buffer.format != "B" else buffer
        n = view.nbytes
        taken = self.take_spare(spares, n)
        if taken is None and self.pool is not None:
            taken = self.pool.take(n)
        name, fd = taken or self.create()
        try:
            if taken is not None:
                os.ftruncate(fd, n)  # a spare or pool file may be larger: the rest goes
            if taken is not None and n >= _MAPPED_WRITE:
                # Into pages that exist, a populated mapping copies faster than write()
                with mmap.mmap(fd, n, flags=mmap.MAP_SHARED | mmap.MAP_POPULATE) as mapped:
                    mapped[:] = view  # the one copy of a put
            else:
                write_all(fd, view)
        except BaseException:
            self.discard(name)
            raise
        finally:
            os.close(fd)
        return name

    def allocate(self, nbytes: int, spares: str | None = None) -> mmap.mmap:
        """A file of ``nbytes`` bytes (a spare's old bytes, its pages mapped ahead, else new
        zeros), mapped shared and writable, registered as an :class:`Allocation`:
        ``client.empty``."""
        taken = self.take_spare(spares, nbytes)
        name, fd = taken or self.create()
        try:
            os.ftruncate(fd, nbytes)
            flags = mmap.MAP_SHARED | (mmap.MAP_POPULATE if taken else 0)
            mapping = mmap.mmap(fd, nbytes, flags=flags, prot=mmap.PROT_READ | mmap.PROT_WRITE)
        except BaseException:
            os.close(fd)
            self.discard(name)
            raise
        Allocation(self, name, fd, mapping)  # kept by the registry, forgotten with the mapping
        return mapping

    def discard(self, name: str) -> None:
        if self.fd >= 0 and os.getpid() == self.pid:  # never a parent's file from a child
            discard_file(name, self.fd)

    def close(self) -> None:
        if self.fd >= 0 and os.getpid() == self.pid:
            if self.pool is not None:
                self.pool.close()
            os.close(self.fd)
            self.fd = -1
            shutil.rmtree(self.path, ignore_errors=True)


class _Pool:
    """Upload files whose pages a background thread allocated ahead of the puts.

    tmpfs hands out fresh pages at ~1.2 GB/s here and writes into allocated ones at ~4 GB/s,
    so a put takes a ready file of its size class (the next power of two) when there is
    one, and the thread makes another while the program computes. Pool files were never
    adopted: a stored file is written again only as the shard's spare, once the kernel says
    no reader maps it (readers map it ``MAP_PRIVATE`` and would see the writes).
    At most ``limit`` bytes (``MEMSTORE_SHM_POOL``) wait, two files per class."""

    PER_CLASS = 2

    def __init__(self, uploads: _Uploads, limit: int):
        self.uploads = uploads
        self.limit = limit
        self.ready: dict[int, list[tuple[str, int]]] = {}
        self.wanted: set[int] = set()
        self.held = 0
        self.making = ""  # the file being allocated now (not ready yet)
        self.closed = False
        self.cond = threading.Condition()
        self.thread: threading.Thread | None = None

    def take(self, nbytes: int) -> tuple[str, int] | None:
        """A ready file of at least ``nbytes`` bytes, or None; either way the class is
        refilled in the background."""
        size = 1 << max(0, nbytes - 1).bit_length()
        if size > self.limit // self.PER_CLASS:
            return None
        with self.cond:
            files = self.ready.get(size)
            taken = files.pop() if files else None
            if taken is not None:
                self.held -= size
            self.wanted.add(size)
            if self.thread is None:
                self.thread = threading.Thread(target=self._fill, name="memstore-shm-pool",
                                               daemon=True)  # fmt: skip
                self.thread.start()
            self.cond.notify()
        return taken

    def _fill(self) -> None:
        try:  # allocating pages ahead must not slow the program down
            os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), 19)
        except OSError:
            pass
        while True:
            with self.cond:
                while not self.closed and not (size := self._next()):
                    self.cond.wait()
                if self.closed:
                    return
                name = self.making = self.uploads.next_name()
            try:
                name, fd = self.uploads.create(name)
                os.posix_fallocate(fd, 0, size)
            except OSError as exc:  # /dev/shm full: puts write fresh files as before
                log.debug("shared-memory pool: %s", exc)
                self.uploads.discard(name)
                with self.cond:
                    self.wanted.clear()
                    self.making = ""
                continue
            with self.cond:
                self.making = ""
                if self.closed:
                    os.close(fd)
                    return
                self.ready.setdefault(size, []).append((name, fd))
                self.held += size

    def _next(self) -> int:
        """A wanted class short of files that fits under the cap; 0 if none."""
        for size in sorted(self.wanted):
            short = len(self.ready.get(size, ())) < self.PER_CLASS
            if short and self.held + size <= self.limit:
                return size
        return 0

    def close(self) -> None:
        with self.cond:
            self.closed = True
            self.cond.notify()
            for files in self.ready.values():
                for _, fd in files:
                    os.close(fd)
            self.ready.clear()


_libc = ctypes.CDLL(None, use_errno=True)
_libc.mmap.restype = ctypes.c_void_p
_libc.mmap.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int, ctypes.c_int,
                       ctypes.c_int, ctypes.c_long]  # fmt: skip
_MAP_FIXED = 0x10

#: Allocations not yet put, by the address of their mapping (what an array's data points at).
_allocations: dict[int, Allocation] = {}
_allocations_lock = threading.Lock()


class Allocation:
    """An upload file mapped shared and writable, handed out as ``client.empty``'s array.

    Its put *seals* it: the mapping is replaced in place (``MAP_FIXED``) by a private
    copy-on-write mapping of the same file, so the caller's array keeps its address and
    contents but its later writes stay private, never reaching the stored file. An
    allocation dropped before its put removes its file."""

    __slots__ = ("__weakref__", "address", "fd", "name", "nbytes", "pid", "uploads")

    def __init__(self, uploads: _Uploads, name: str, fd: int, mapping: mmap.mmap):
        self.uploads, self.name, self.fd, self.nbytes = uploads, name, fd, len(mapping)
        self.pid = os.getpid()
        pointer = (ctypes.c_char * 1).from_buffer(mapping)
        self.address = ctypes.addressof(pointer)
        del pointer  # a held export would keep the mapping from ever closing
        with _allocations_lock:
            _allocations[self.address] = self
        weakref.finalize(mapping, _forget, self)

    def seal(self) -> None:
        """Make the caller's mapping private (see the class); the file is the put's."""
        address = _libc.mmap(self.address, self.nbytes, mmap.PROT_READ | mmap.PROT_WRITE,
                             mmap.MAP_PRIVATE | _MAP_FIXED, self.fd, 0)  # fmt: skip
        os.close(self.fd)
        self.fd = -1
        if address != self.address:  # cannot happen for a range we own; never hand it on
            raise OSError(ctypes.get_errno(), "cannot remap an empty() array privately")


def _forget(allocation: Allocation) -> None:
    """The array of ``allocation`` is gone: its file too, unless a put took it."""
    with _allocations_lock:
        if _allocations.get(allocation.address) is allocation:
            del _allocations[allocation.address]
    if allocation.fd >= 0:
        os.close(allocation.fd)
        allocation.fd = -1
        allocation.uploads.discard(allocation.name)


def claim(data: Any, root: str) -> Allocation | None:
    """The allocation ``data`` (a numpy array) fills whole, if any, now taken by a put;
    None for any other array (it is copied as usual)."""
    interface = getattr(data, "__array_interface__", None)
    if interface is None or not (data.flags.c_contiguous or data.flags.f_contiguous):
        return None
    address = interface["data"][0]
    with _allocations_lock:
        allocation = _allocations.get(address)
        if (
            allocation is None
            or allocation.nbytes != data.nbytes
            or allocation.pid != os.getpid()
            or os.path.dirname(allocation.uploads.path) != root
        ):
            return None
        del _allocations[address]
    return allocation


_uploads: dict[str, _Uploads] = {}
_uploads_lock = threading.Lock()


def _uploads_in(where: str) -> _Uploads:
    with _uploads_lock:
        area = _uploads.get(where)
        if area is None or area.pid != os.getpid():  # a forked child makes its own
            area = _uploads[where] = _Uploads(where)
        return area


def _area_key(area: str | None) -> str | None:
    """The secret of this process's upload area ``area`` (``memstore.shm.AREA_KEY``)."""
    with _uploads_lock:
        return next((u.key for u in _uploads.values() if u.name == area), None)


class Link:
    """A client's shared-memory path to one shard of its node."""

    def __init__(self, directory: str, spare: str | None = None):
        self.dir = directory
        self.root = os.path.dirname(directory)
        self.spare_dir = os.path.join(directory, spare) if spare else None

    @classmethod
    def negotiate(cls, offer: Any, wanted: bool | None = None) -> Link | None:
        """A link if ``offer`` (a shard's hello) is usable from this process, else None;
        ``wanted`` None: unless ``MEMSTORE_SHM=0``."""
        if not (enabled() if wanted is None else wanted) or not isinstance(offer, dict):
            return None
        directory = offer.get("dir")
        if (
            not _own_shard_dir(directory)
            or offer.get("boot_id") != boot_id()
            or not offer.get("boot_id")
            or offer.get("pidns") != pid_ns()
            or offer.get("uid") != os.geteuid()
        ):
            return None
        try:  # the same path on another /dev/shm would not hold the shard's token
            fd = os.open(os.path.join(directory, PROBE), os.O_RDONLY | os.O_NOFOLLOW)
            try:
                token = os.read(fd, 64).decode(errors="replace")
            finally:
                os.close(fd)
            _uploads_in(os.path.dirname(directory))
        except OSError as exc:
            log.debug("no shared memory with %s: %s", directory, exc)
            return None
        if token != offer.get("probe"):
            return None
        return cls(directory, SPARE if offer.get("spare") == SPARE else None)

    def upload(self, buffer: memoryview) -> tuple[str, str]:
        """Write ``buffer`` into an upload file: (area name, file name)."""
        area = _uploads_in(self.root)
        return area.name, area.write(buffer, self.spare_dir)

    def allocate(self, nbytes: int) -> mmap.mmap:
        """A writable shared mapping of an upload file of ``nbytes`` bytes, which a put
        of an array filling it adopts without a copy (:class:`Allocation`)."""
        return _uploads_in(self.root).allocate(nbytes, self.spare_dir)

    def discard(self, area: str, name: str) -> None:
        """Remove an upload the shard did not adopt (its put failed)."""
        uploads = _uploads.get(self.root)
        if uploads is not None and uploads.name == area:
            uploads.discard(name)

    def discard_all(self, area: str | None, names: list) -> None:
        for name in names:
            if area is not None and name is not None:
                self.discard(area, name)

    def map(self, name: str) -> memoryview | None:
        """The shard's file ``name`` mapped copy-on-write; None if it is gone (overwritten
        or deleted after the shard answered)."""
        if not FILE_NAME.fullmatch(name):
            raise ProtocolError(f"shard directory {self.dir}: bad file name {name!r}")
        path = os.path.join(self.dir, name)
        try:
            fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
        except FileNotFoundError:
            return None
        try:  # the size is checked against the meta when the array is made
            st = os.fstat(fd)
            view = memoryview(mmap.mmap(fd, st.st_size, access=mmap.ACCESS_COPY))
        finally:
            os.close(fd)
        try:  # still the entry's file once mapped? Else the shard may be recycling it
            now = os.stat(path, follow_symlinks=False)
        except FileNotFoundError:
            return None
        return view if (now.st_ino, now.st_dev) == (st.st_ino, st.st_dev) else None


def _own_shard_dir(directory: Any) -> bool:
    """Whether an offer's ``directory`` is a shard directory of this user, right in the
    shared-memory root: a lying shard must not make the client map (or make its upload
    area) anywhere else."""
    if not isinstance(directory, str) or not _SHARD_DIR.fullmatch(os.path.basename(directory)):
        return False
    if directory != os.path.join(os.path.normpath(root()), os.path.basename(directory)):
        return False
    try:
        st = os.lstat(directory)
    except OSError:
        return False
    return stat.S_ISDIR(st.st_mode) and st.st_uid == os.geteuid()


# -- a client's path -------------------------------------------------------------------------


class SharedMemoryPath:
    """One client's shared-memory path to its shards, and the requests that use it.

    Per shard it keeps the :class:`Link`, None (sockets only: another node, an ``inproc://``
    shard, or shared memory turned off), or ``UNASKED`` until the first call that could use
    one asks (a ``hello``, or the offer a shard sends along with a get).

    Args:
        requests: the client's requests, through which this path sends its own.
        wanted: the client's ``shm`` argument (None: unless ``MEMSTORE_SHM=0``).
    """

    def __init__(self, requests: Requests, wanted: bool | None):
        self._requests = requests
        self._wanted = wanted
        #: Buffers of at least this many bytes go as files (``MEMSTORE_SHM_THRESHOLD``, now).
        self.threshold = shm_threshold()
        off = wanted is False
        #: Per shard: its :class:`Link`, None (sockets only) or ``UNASKED``.
        self.links: list[Any] = [
            None if off or a.startswith("inproc://") else UNASKED
            for a in requests.transport.addresses
        ]

    def offered(self, shard: int, hello: dict) -> None:
        """Take the offer in ``shard``'s ``hello`` unless that shard was asked already."""
        if 0 <= shard < len(self.links) and self.links[shard] is UNASKED:
            self.links[shard] = self._negotiate(hello)

    def _negotiate(self, hello: dict) -> Link | None:
        if "shm" not in (hello.get("features") or []):
            return None
        return Link.negotiate(hello.get("shm"), self._wanted)

    def link(self, shard: int) -> Link | None:
        """The link to ``shard``, asking it the first time (a ``hello``)."""
        link = self.links[shard]
        if link is UNASKED:
            requests = self._requests
            hello = requests.sync(
                requests.to_shard, shard, "hello", {}, decode=hello_reply, what="hello"
            )
            link = self.links[shard] = self._negotiate(hello)
        return link

    def allocate(self, shard: int, nbytes: int, what: Any) -> Any:
        """A writable shared mapping of ``nbytes`` for ``Client.empty``, which a put of an
        array filling it adopts without a copy; None below the threshold, without a link,
        or when ``/dev/shm`` fails (an ordinary array works as well)."""
        self._requests.transport.check_process()
        link = self.link(shard) if nbytes >= self.threshold else None
        if link is None:
            return None
        try:
            return link.allocate(nbytes)
        except OSError as exc:
            log.debug("empty(%r) in shared memory failed (%s): a plain array", what, exc)
            return None

    def put(
        self,
        shard: int,
        op: str,
        fields: dict,
        buffers: list,
        sources: list | None,
        what: Any,
        decode: Callable = ignore_reply,
        wait: float = 0.0,
    ) -> Future | InlineResult:
        """Request ``op`` with ``buffers`` as its payload; those of at least the threshold
        go as files when ``shard`` shares memory with this process (written now: a
        snapshot), and arrays from ``Client.empty`` (``sources``: what each buffer came
        from) as their own files. ``decode`` and ``wait`` as ``Requests.to_shard``'s."""
        views = [memoryview(b) for b in buffers]  # a copied dataset brings received frames
        big = [i for i, v in enumerate(views) if v.nbytes >= self.threshold]
        link = self.link(shard) if big else None
        requests = self._requests
        if link is None:
            return requests.to_shard(shard, op, fields, buffers, decode, wait, what)
        if requests.max_message:  # the same limit whichever way the bytes go
            requests.check_size(buffers, what)
        try:
            area, files, sealing = _upload(link, views, big, sources)
        except OSError as exc:  # /dev/shm full or gone: the sockets still work
            log.debug("shared-memory upload failed (%s): sending %r over the socket", exc, what)
            return requests.to_shard(shard, op, fields, buffers, decode, wait, what)
        if sealing:  # by the pump, not inline: the shard adopts while this thread seals
            requests.inline.take()
        payload = [b"" if name is not None else b for b, name in zip(buffers, files, strict=True)]
        try:
            reply = requests.to_shard(
                shard,
                op,
                {**fields, "area": area, "area_key": _area_key(area), "files": files},
                payload,
                decode,
                wait,
                what,
            )
        except BaseException:
            link.discard_all(area, files)
            raise
        finally:
            # Before the call returns (async too): from here on the caller's writes stay
            # private. Its file is unchanged meanwhile: a caller must not write an array
            # during its own put, as with any buffer.
            for allocation in sealing:
                allocation.seal()
        reply.add_done_callback(lambda f: _failed(f) and link.discard_all(area, files))
        return reply

    def get(
        self, shard: int, op: str, fields: dict, build: Callable, what: Any
    ) -> Future | InlineResult:
        """Request ``op`` of ``shard`` and ``build(header, payload)`` from its reply, the
        files the reply names mapped copy-on-write in the payload; a file overwritten before
        it was mapped makes it ask again over the socket. A shard not asked yet sends its
        offer along with the files (no extra round trip)."""
        return self._get(shard, op, fields, build, what, self.links[shard])

    def _get(
        self, shard: int, op: str, fields: dict, build: Callable, what: Any, link: Any
    ) -> Future | InlineResult:
        def decode(header, payload):
            payload = self._mapped(shard, link, header, payload)
            return STALE if payload is STALE else build(header, payload)

        asked = {**fields, "shm": True} if link is not None else fields
        reply = self._requests.to_shard(shard, op, asked, decode=decode, what=what)
        if link is None:
            return reply
        return chain(
            reply,
            lambda got: self._get(shard, op, fields, build, what, None) if got is STALE else got,
        )

    def maps(self, shard: int) -> bool:
        """Whether a request to ``shard`` may ask for files rather than bytes (a shard not
        asked yet sends its offer along, as with ``get``)."""
        return self.links[shard] is not None

    def mapped(self, shard: int, header: dict, payload: list) -> Any:
        """``payload`` of a reply of ``shard`` that may name files (asked for because
        :meth:`maps`), the files mapped copy-on-write; ``STALE`` if one is gone."""
        return self._mapped(shard, self.links[shard], header, payload)

    def _mapped(self, shard: int, link: Any, header: dict, payload: list) -> Any:
        """``payload`` with the files a reply names mapped copy-on-write in their place;
        ``STALE`` if one is gone (overwritten since) or memory is not shared after all."""
        files = header.get("files") if link is not None else None
        if not files:
            return payload
        if link is UNASKED:  # a shard not asked yet sent its offer along
            link = self.links[shard] = Link.negotiate(header.get("shm"), self._wanted)
            if link is None:
                return STALE
        payload = list(payload)
        for i, name in enumerate(files):
            if name is not None:
                payload[i] = link.map(name)
                if payload[i] is None:
                    return STALE
        return payload


def _upload(
    link: Link, views: list, big: list[int], sources: list | None
) -> tuple[str | None, list, list[Allocation]]:
    """The big buffers as files: (area, file name per buffer or None, allocations to seal).
    An array from ``Client.empty`` is its own file; the others are written now."""
    files: list = [None] * len(views)
    area, sealing = None, []
    try:
        for i in big:
            allocation = claim(sources[i], link.root) if sources else None
            if allocation is not None:
                sealing.append(allocation)
                area, files[i] = allocation.uploads.name, allocation.name
            else:
                area, files[i] = link.upload(views[i])
    except OSError:
        link.discard_all(area, files)
        for allocation in sealing:
            allocation.seal()
        raise
    return area, files, sealing


def _failed(future: Any) -> bool:
    return future.cancelled() or future.exception(0) is not None
