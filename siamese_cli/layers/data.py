"""Caffe's Data layer: batches of Datum records from a LevelDB or LMDB, prefetched in a thread.

Records are read in key order and the cursor starts again at the first key after the
last, so a TEST net's passes continue where the previous one stopped, as in Caffe.
"""
import queue
import threading
import weakref

import numpy as np

from ..errors import SiameseError
from ..io.db import backend_name, open_reader
from ..io.transform import Transformer
from ..proto import caffe_pb2
from .base import Layer

_LEGACY_TRANSFORM_FIELDS = ("scale", "mean_file", "crop_size", "mirror")


def _transform_param(layer_param):
    """transform_param, with the old data_param copies of its fields filled in where it lacks them."""
    merged = caffe_pb2.TransformationParameter()
    merged.CopyFrom(layer_param.transform_param)
    data_param = layer_param.data_param
    for field in _LEGACY_TRANSFORM_FIELDS:
        if data_param.HasField(field) and not merged.HasField(field):
            setattr(merged, field, getattr(data_param, field))
    return merged


def _shape_text(shape):
    return "x".join(map(str, shape))


def decode_batch(records, shape, source):
    """(data (N, C, H, W) uint8 or float32, labels (N,) float32) from (key, serialized Datum) pairs.

    Pixels of all records are joined and read with one np.frombuffer; records holding
    float_data instead of data are read as float32.
    """
    datums = [caffe_pb2.Datum.FromString(value) for _, value in records]
    for (key, _), datum in zip(records, datums):
        found = (datum.channels, datum.height, datum.width)
        if found != shape:
            raise SiameseError(
                f"{source}: record {key.decode(errors='replace')} is {_shape_text(found)}, the first record is "
                f"{_shape_text(shape)}; a Data layer needs one shape for all records"
            )
        if datum.encoded:
            raise SiameseError(
                f"{source}: record {key.decode(errors='replace')} holds encoded (JPEG/PNG) image bytes; "
                "only raw Datum pixels are supported"
            )
    labels = np.array([datum.label for datum in datums], np.float32)
    size = int(np.prod(shape))
    pixels = b"".join(datum.data for datum in datums)
    if len(pixels) == size * len(datums):
        return np.frombuffer(pixels, np.uint8).reshape((len(datums),) + shape), labels
    data = np.empty((len(datums),) + shape, np.float32)
    for k, ((key, _), datum) in enumerate(zip(records, datums)):
        if len(datum.data) == size:
            data[k] = np.frombuffer(datum.data, np.uint8).reshape(shape)
        elif len(datum.float_data) == size:
            data[k] = np.asarray(datum.float_data, np.float32).reshape(shape)
        else:
            raise SiameseError(
                f"{source}: record {key.decode(errors='replace')} holds {len(datum.data)} data bytes and "
                f"{len(datum.float_data)} float_data values, not the {size} its {_shape_text(shape)} shape needs"
            )
    return data, labels


class _Feed:
    """The reader and the thread that keeps up to `depth` transformed batches ready.

    Batch b is always the same records and the same random transform (its generator is
    seeded with (seed, b)), whatever the timing, so restarting at batch b repeats a run.
    """

    def __init__(self, reader, transformer, batch_size, depth, seed, first_record):
        self.reader = reader
        self.transformer = transformer
        self.batch_size = batch_size
        self.depth = depth
        self.seed = seed
        self.first_record = first_record
        self.shard = (0, 1)  # (rank, count): keep the records whose position % count == rank
        self.shape = transformer.shape
        self._thread = None
        self._error = None

    def start(self, batch):
        self.reader.rewind()
        self.reader.skip(self.first_record + batch * self.batch_size * self.shard[1])
        self._queue = queue.Queue(self.depth)
        self._stop = threading.Event()
        self._error = None
        self._thread = threading.Thread(target=self._run, args=(batch, self._queue, self._stop),
                                        name=f"Data prefetch {self.reader.path}", daemon=True)
        self._thread.start()

    def _make(self, batch):
        rank, count = self.shard
        records = self.reader.take(self.batch_size * count)[rank::count]
        data, labels = decode_batch(records, self.shape, self.reader.path)
        rng = np.random.default_rng([self.seed, batch]) if self.transformer.needs_rng else None
        return self.transformer(data, rng), labels

    def _run(self, batch, out, stop):
        while not stop.is_set():
            try:
                item = self._make(batch)
            except BaseException as exc:  # handed to the consumer, who raises it
                item = exc
            while not stop.is_set():
                try:
                    out.put(item, timeout=0.05)
                    break
                except queue.Full:
                    continue
            if isinstance(item, BaseException):
                return
            batch += 1

    def get(self):
        if self._error is not None:
            raise self._error
        while True:
            try:
                item = self._queue.get(timeout=0.5)
                break
            except queue.Empty:
                if not self._thread.is_alive():
                    raise RuntimeError(f"the Data prefetch thread for {self.reader.path} stopped") from None
        if isinstance(item, BaseException):
            self._error = item
            raise item
        return item

    def stop(self):
        """Stop the thread; True when it has finished (so the reader is free)."""
        if self._thread is None:
            return True
        self._stop.set()
        self._thread.join(timeout=10)
        finished = not self._thread.is_alive()
        if finished:
            self._thread = None
        return finished

    def close(self):
        if self.stop() and self.reader is not None:
            self.reader.close()
            self.reader = None


class Data(Layer):
    """Type "Data": tops data (N, C, H, W) float32 and, optionally, label (N,) float32.

    data_param: source, batch_size, backend (LEVELDB/LMDB), rand_skip (skip
    rng-chosen [0, rand_skip) records at the start, as Caffe's `rand % rand_skip`),
    prefetch (queue depth; 0 means 2). transform_param: crop_size, mirror, mean_file
    or mean_value, scale (see io/transform.py). Call close() to stop the prefetch
    thread and release the database; it also happens when the layer is collected
    and at interpreter exit.
    """

    type = "Data"
    num_bottom = 0
    min_top = 1
    max_top = 2

    def setup(self, bottom, top):
        data_param = self.param.data_param
        if not data_param.source:
            raise self.error("data_param.source is not set; give the database folder")
        if data_param.batch_size < 1:
            raise self.error("data_param.batch_size must be at least 1")
        self.batch_size = int(data_param.batch_size)
        self.source = data_param.source
        reader = open_reader(self.source, backend_name(int(data_param.backend)))
        try:
            key, value = reader.next()
            datum = caffe_pb2.Datum.FromString(value)
            shape = (datum.channels, datum.height, datum.width)
            if min(shape) < 1:
                raise self.error(f"{self.source}: first record {key.decode(errors='replace')} has shape "
                                 f"{_shape_text(shape)}; not a Datum database?")
            self.transformer = Transformer(_transform_param(self.param), self.phase, shape)
            rng = self.rng if self.rng is not None else np.random.default_rng(0)
            skip = int(rng.integers(data_param.rand_skip)) if data_param.rand_skip else 0
            seed = int(rng.integers(2**63))
        except BaseException:
            reader.close()
            raise
        self.batches_served = 0
        self._feed = _Feed(reader, self.transformer, self.batch_size, int(data_param.prefetch) or 2, seed, skip)
        self._finalizer = weakref.finalize(self, self._feed.close)
        self._feed.start(0)

    def reshape(self, bottom, top):
        top[0].reshape((self.batch_size,) + self.transformer.out_shape)
        if len(top) > 1:
            top[1].reshape((self.batch_size,))

    def forward(self, bottom, top):
        if self._feed.reader is None:
            raise self.error("the layer was closed")
        data, labels = self._feed.get()
        self.reshape(bottom, top)
        np.copyto(top[0].data, data)
        if len(top) > 1:
            np.copyto(top[1].data, labels)
        self.batches_served += 1

    def backward(self, top, propagate_down, bottom):
        """Data layers have no bottoms and propagate nothing."""

    def seek(self, batch):
        """Make the next forward give batch number `batch` (0 = the first after setup), records and
        random transform both as an uninterrupted run would (for exact resume)."""
        if not self._feed.stop():
            raise self.error("the prefetch thread did not stop")
        self._feed.start(int(batch))
        self.batches_served = int(batch)

    def skip_batches(self, count):
        """Pass over the next `count` batches without computing them (the solver's resume hook)."""
        self.seek(self.batches_served + int(count))

    @property
    def first_record(self):
        """Where the layer's record stream starts (the rand_skip draw)."""
        return self._feed.first_record

    def shard(self, rank, count, first_record=None):
        """Keep only the records whose position in the stream modulo `count` is `rank`.

        For data-parallel training: `count` such layers, one per rank, together read the records
        one layer of count x batch_size reads, batch for batch. first_record: where the stream
        starts (rank 0's rand_skip, so that every rank cuts the same stream). Keeps the batch count.
        """
        if not 0 <= rank < count:
            raise self.error(f"record filter rank {rank} of {count}: the rank must be in [0, {count})")
        if not self._feed.stop():
            raise self.error("the prefetch thread did not stop")
        self._feed.shard = (int(rank), int(count))
        if first_record is not None:
            self._feed.first_record = int(first_record)
        self.seek(self.batches_served)

    def close(self):
        """Stop the prefetch thread and release the database (idempotent)."""
        finalizer = getattr(self, "_finalizer", None)
        if finalizer is not None:
            finalizer()
