"""One small interface over Caffe's two record stores, LevelDB (plyvel) and LMDB (lmdb).

Both hold (key, value) byte pairs in bytewise key order. Readers walk that order and
start again at the first key after the last, as Caffe's Data layer does; writers put
records in batches (one WriteBatch / one transaction each).
"""
import math
import os
import shutil
import tempfile
import threading
import time
from pathlib import Path

from ..errors import SiameseError

LEVELDB = "leveldb"
LMDB = "lmdb"
_NAMES = {LEVELDB: "LevelDB", LMDB: "LMDB"}


def backend_name(backend):
    """"leveldb" or "lmdb" from either spelling, or from Caffe's enum DataParameter.LEVELDB (0) / LMDB (1)."""
    if isinstance(backend, str):
        name = backend.strip().lower()
        if name in _NAMES:
            return name
    elif isinstance(backend, int) and not isinstance(backend, bool) and backend in (0, 1):
        return (LEVELDB, LMDB)[backend]
    raise SiameseError(f"unknown database backend {backend!r}; use leveldb or lmdb")


def detect_backend(path):
    """The backend whose files are in folder `path`, or None when it holds neither."""
    path = Path(path)
    if (path / "CURRENT").is_file():
        return LEVELDB
    if (path / "data.mdb").is_file():
        return LMDB
    return None


def _check_source(path, backend):
    path = Path(path)
    if not path.exists():
        raise SiameseError(f"{path}: no such database{_build_hint(path)} (relative paths start at the working directory)")
    if not path.is_dir():
        raise SiameseError(f"{path}: is a file, not a {_NAMES[backend]} database folder")
    found = detect_backend(path)
    if found is None:
        raise SiameseError(f"{path}: not a LevelDB or LMDB database (no CURRENT or data.mdb file in it)")
    if found != backend:
        raise SiameseError(
            f"{path}: is an {_NAMES[found]} database, but {_NAMES[backend]} was asked for; "
            f"set backend: {found.upper()} in data_param"
        )


def _build_hint(path, verb="build"):
    """How to make `path` when it is one of the examples' own databases; empty for any other path."""
    name = os.path.normpath(str(path))
    for backend in _NAMES:
        if name in (os.path.join("examples", "siamese", f"mnist_siamese_{split}_{backend}") for split in ("train", "test")):
            flag = "" if backend == LEVELDB else f" --backend {backend}"
            return f"; run `siamese create-db{flag}` to {verb} the example pair DBs"
        if name in (os.path.join("examples", "mnist", f"mnist_{split}_{backend}") for split in ("train", "test")):
            return f"; run `siamese create-db --single --backend {backend}` to {verb} the LeNet example DBs"
    return ""


def decode_datum(value, key, source, color=None):
    """(pixels C x H x W, label) of one serialized Datum record, every fault named by database and key.

    Raw records give uint8 pixels (float32 for float_data records); encoded (JPEG/PNG) ones are
    decoded, as stored (`color` None), or forced to "color" (3 channels) or "gray" (1).
    """
    import numpy as np
    from google.protobuf.message import DecodeError

    from ..proto import caffe_pb2

    name = key.decode(errors="replace") if isinstance(key, bytes) else str(key)
    try:
        datum = caffe_pb2.Datum.FromString(value)
    except DecodeError as exc:
        raise SiameseError(f"{source}: record {name}: not a Datum ({exc}); rebuild the database") from None
    if datum.encoded:
        from .images import NATIVE, ImageError, decode_image

        try:
            return decode_image(datum.data, color or NATIVE), datum.label
        except ImageError as exc:
            raise SiameseError(f"{source}: record {name}: {exc}") from None
    shape = (datum.channels, datum.height, datum.width)
    size = shape[0] * shape[1] * shape[2]
    if size < 1:
        raise SiameseError(f"{source}: record {name} has shape {'x'.join(map(str, shape))} and is not encoded; "
                           "not an image Datum")
    if len(datum.data) == size:
        return np.frombuffer(datum.data, np.uint8).reshape(shape), datum.label
    if len(datum.float_data) == size:
        return np.asarray(datum.float_data, np.float32).reshape(shape), datum.label
    raise SiameseError(f"{source}: record {name} holds {len(datum.data)} data bytes and {len(datum.float_data)} "
                       f"float_data values, not the {size} its {'x'.join(map(str, shape))} shape needs; "
                       "the database is corrupt or cut short")


def _open_leveldb(path):
    import plyvel

    try:
        return plyvel.DB(str(path), create_if_missing=False)
    except plyvel.IOError as exc:
        detail = exc.args[0].decode(errors="replace") if exc.args and isinstance(exc.args[0], bytes) else str(exc)
        if "lock" in detail.lower():
            return _LevelDBView(path)
        raise SiameseError(f"{path}: cannot open LevelDB: {detail}") from None
    except plyvel.Error as exc:
        raise SiameseError(f"{path}: cannot open LevelDB: {exc}") from None


class _LevelDBView:
    """A LevelDB that another process holds open (its LOCK), read through a private copy of its folder.

    LevelDB allows one process per folder, yet several processes may read one DB (MPI ranks on
    one host, or `siamese test` during training). Table files never change once written, so the
    copy hard-links them (a real copy where links fail) and copies the small rest; the folder
    goes when the view is closed. The holder may be rewriting its folder (recovery at open, a
    compaction), so a copy that LevelDB finds incomplete is made again. Meant for reading only.
    """

    attempts = 8

    def __init__(self, path):
        import plyvel

        for attempt in range(self.attempts):
            self.folder = tempfile.mkdtemp(prefix=f"siamese-view-{Path(path).name}-")
            try:
                self._copy(path)
                self.db = plyvel.DB(self.folder, create_if_missing=False)
                return
            except (OSError, plyvel.Error) as exc:
                shutil.rmtree(self.folder, ignore_errors=True)
                error = exc
                time.sleep(0.05 * (attempt + 1))
        raise SiameseError(f"{path}: LevelDB is in use by another process and a private copy to read failed "
                           f"({error}); stop the other process or build an LMDB copy")

    def _copy(self, path):
        """CURRENT and the manifest it names first, then the tables: a table deleted after the manifest
        was read makes the open fail (and the copy is made again); newer tables are ignored."""
        current = Path(path, "CURRENT").read_text().strip()
        shutil.copy2(Path(path, current), Path(self.folder, current))
        Path(self.folder, "CURRENT").write_text(current + "\n")
        for entry in os.scandir(path):
            if entry.name in ("LOCK", "CURRENT", current) or not entry.is_file():
                continue
            target = os.path.join(self.folder, entry.name)
            if entry.name.endswith((".ldb", ".sst")):
                try:
                    os.link(entry.path, target)
                    continue
                except FileExistsError:
                    continue
                except OSError as exc:
                    if not Path(entry.path).exists():
                        raise exc
            shutil.copy2(entry.path, target)

    def iterator(self, **kwargs):
        return self.db.iterator(**kwargs)

    def close(self):
        self.db.close()
        shutil.rmtree(self.folder, ignore_errors=True)


def _open_lmdb(path):
    import lmdb

    try:
        return lmdb.open(str(path), readonly=True, lock=False, readahead=False, subdir=True)
    except lmdb.Error as exc:
        raise SiameseError(f"{path}: cannot open LMDB: {exc}") from None


class _SharedHandles:
    """Open databases by real path, shared by all readers of this process.

    A process may open an LMDB environment only once, and a LevelDB only once (its
    LOCK), yet a TRAIN and a TEST net may read the same source; so readers share one
    handle, each with its own cursor, and the last one to close releases it.
    """

    def __init__(self):
        self._lock = threading.Lock()
        self._open = {}

    def acquire(self, backend, path):
        """(handle, key): give the key back to `release` (the path may resolve elsewhere by then)."""
        key = (backend, os.path.realpath(path))
        with self._lock:
            entry = self._open.get(key)
            if entry is None:
                entry = self._open[key] = [(_open_leveldb if backend == LEVELDB else _open_lmdb)(path), 0]
            entry[1] += 1
            return entry[0], key

    def release(self, key):
        with self._lock:
            entry = self._open[key]
            entry[1] -= 1
            if entry[1] == 0:
                del self._open[key]
                entry[0].close()


_HANDLES = _SharedHandles()


class Reader:
    """Key-ordered, endless (key, value) reading of one database.

    `next()` returns the next record and wraps to the first after the last;
    `take(n)` returns the next n records. Not thread-safe: use it from one thread
    at a time. Close it (or use `with`) to release the database.
    """

    def __init__(self, path, backend=LEVELDB):
        self.path = Path(path)
        self.backend = backend_name(backend)
        _check_source(self.path, self.backend)
        self._length = None
        self._handle, self._key = _HANDLES.acquire(self.backend, self.path)
        if self.backend == LEVELDB:
            self._iter = self._handle.iterator()
            self._item = None
        else:
            self._txn = self._handle.begin(buffers=False)
            self._cursor = self._txn.cursor()
        if not self._first():
            self.close()
            raise SiameseError(f"{self.path}: database has no records{_build_hint(self.path, 'rebuild')}")

    def _first(self):
        """Position on the first record; False when there is none."""
        if self.backend == LEVELDB:
            self._iter.seek_to_start()
            self._item = next(self._iter, None)
            return self._item is not None
        return self._cursor.first()

    def next(self):
        """The current (key, value); the cursor moves on, wrapping after the last key."""
        if self.backend == LEVELDB:
            item = self._item
            self._item = next(self._iter, None)
            if self._item is None:
                self._first()
            return item
        item = self._cursor.item()
        if not self._cursor.next():
            self._cursor.first()
        return item

    def take(self, n):
        """The next `n` (key, value) records, in key order, wrapping as needed."""
        return [self.next() for _ in range(n)]

    def rewind(self):
        """Back to the first key."""
        self._first()

    def __len__(self):
        """Number of records (LMDB from its stats; LevelDB by one scan of the keys, then cached)."""
        if self._length is None:
            if self.backend == LMDB:
                self._length = self._handle.stat()["entries"]
            else:
                with self._handle.iterator(include_value=False) as keys:
                    self._length = sum(1 for _ in keys)
        return self._length

    def skip(self, n):
        """Move the cursor `n` records on (wrapping)."""
        if n <= 0:
            return
        for _ in range(n % len(self)):
            self.next()

    def close(self):
        if self._handle is None:
            return
        if self.backend == LEVELDB:
            self._iter.close()
            self._iter = None
        else:
            self._txn.abort()
            self._txn = self._cursor = None
        self._handle = None
        _HANDLES.release(self._key)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


def open_reader(path, backend=LEVELDB):
    """A `Reader` over the database folder `path`; SiameseError when it is missing or of the other kind."""
    return Reader(path, backend)


class Writer:
    """Batched writing of a new database into folder `path` (absent or empty).

    `put_batch(records)` writes an iterable of (key, value) pairs in one WriteBatch
    (LevelDB) or one transaction (LMDB); `close()` flushes and releases it.
    `size_hint` (bytes of keys and values expected) sizes LMDB's map; it grows on demand anyway.
    LevelDB blocks are stored uncompressed: snappy halves the build speed and saves about
    3% on MNIST pairs; every LevelDB reader, Caffe's included, reads either. LMDB batches
    whose keys come in ascending order are appended, which packs pages full. Closing a
    LevelDB writer flushes its log into tables, so readers open it at once instead of
    replaying the log.
    """

    def __init__(self, path, backend=LEVELDB, size_hint=0):
        self.path = Path(path)
        self.backend = backend_name(backend)
        if self.path.exists() and (not self.path.is_dir() or any(self.path.iterdir())):
            raise SiameseError(f"{self.path}: already exists; a new database needs an absent or empty folder")
        self.path.mkdir(parents=True, exist_ok=True)
        if self.backend == LEVELDB:
            import plyvel

            self._db = plyvel.DB(
                str(self.path), create_if_missing=True, error_if_exists=True, compression=None, block_size=64 << 10,
            )
        else:
            import lmdb

            self._last_key = b""
            self._map_size = max(64 << 20, 1 << math.ceil(math.log2(max(3 * size_hint, 1))))
            self._env = lmdb.open(str(self.path), map_size=self._map_size, subdir=True, sync=False,
                                  metasync=False, readahead=False, meminit=False)

    def put_batch(self, records):
        if self.backend == LEVELDB:
            with self._db.write_batch() as batch:
                for key, value in records:
                    batch.put(key, value)
            return
        import lmdb

        records = records if isinstance(records, list) else list(records)
        if not records:
            return
        keys = [key for key, _ in records]
        append = keys[0] > self._last_key and all(a < b for a, b in zip(keys, keys[1:]))
        while True:
            try:
                with self._env.begin(write=True) as txn:
                    txn.cursor().putmulti(records, append=append)
                break
            except lmdb.MapFullError:
                self._map_size *= 2
                self._env.set_mapsize(self._map_size)
        self._last_key = max(self._last_key, max(keys))

    def close(self):
        if self.backend == LEVELDB:
            if self._db is not None:
                self._db.compact_range()
                self._db.close()
                self._db = None
        elif self._env is not None:
            self._env.sync(True)
            self._env.close()
            self._env = None

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


def open_writer(path, backend=LEVELDB, size_hint=0):
    return Writer(path, backend, size_hint)
