"""Caffe's Data layer: batches of Datum records from a LevelDB or LMDB, prefetched in a thread.

Records are read in key order and the cursor starts again at the first key after the
last, so a TEST net's passes continue where the previous one stopped, as in Caffe.
"""
import numpy as np

from ..errors import SiameseError
from ..io.datum_layout import LABEL_TAG, datum_header
from ..io.db import backend_name, decode_datum, open_reader
from ..io.transform import Transformer
from ..proto import caffe_pb2
from ._prefetch import PrefetchLayer, color_mode

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


def _uniform_raw_batch(records, shape):
    """decode_batch's fast path, or None: raw uint8 Datums that are byte for byte laid out as
    `channels, height, width, data, label < 128` (what create-db and convert-imageset write).

    Such bytes parse to exactly one Datum, of that shape, so checking the layout of all records at
    once (one numpy comparison) is the per-record check; any other record sends the whole batch
    down the record-by-record path, which names the faulty one.
    """
    channels, height, width = shape
    size = channels * height * width
    head = datum_header(channels, height, width)
    length = len(head) + size + 2  # + the label field: its tag and a one-byte value
    values = [value for _, value in records]
    if not values or any(len(value) != length for value in values):
        return None
    rows = np.frombuffer(b"".join(values), np.uint8).reshape(len(values), length)
    label = rows[:, length - 2:]
    if not ((rows[:, :len(head)] == np.frombuffer(head, np.uint8)).all() and (label[:, 0] == LABEL_TAG).all()
            and (label[:, 1] < 0x80).all()):
        return None
    pixels = rows[:, len(head):len(head) + size].reshape((len(values),) + tuple(shape))
    return np.array(pixels), label[:, 1].astype(np.float32)


def decode_batch(records, shape, source, color=None):
    """(data (N, C, H, W) uint8 or float32, labels (N,) float32) from (key, serialized Datum) pairs.

    Every record is checked on its own (a Datum, pixels matching its shape, the shape of the
    first record); encoded records are decoded (`color`: "color", "gray" or None, as stored).
    """
    if len(shape) == 3:
        fast = _uniform_raw_batch(records, shape)
        if fast is not None:
            return fast
    arrays, labels = [], np.empty(len(records), np.float32)
    for k, (key, value) in enumerate(records):
        pixels, labels[k] = decode_datum(value, key, source, color)
        if pixels.shape != tuple(shape):
            raise SiameseError(
                f"{source}: record {key.decode(errors='replace')} is {_shape_text(pixels.shape)}, the first record is "
                f"{_shape_text(shape)}; a Data layer needs one shape for all records"
            )
        arrays.append(pixels)
    return np.stack(arrays), labels


class _DBSource:
    """Batches of records in key order, starting `first_record` records after the first key."""

    def __init__(self, reader, batch_size, first_record, shape, color):
        self.reader = reader
        self.batch_size = batch_size
        self.first_record = first_record
        self.shard = (0, 1)  # (rank, count): keep the records whose position % count == rank
        self.shape = shape
        self.color = color
        self.name = str(reader.path)

    def seek(self, batch):
        self.reader.rewind()
        self.reader.skip(self.first_record + batch * self.batch_size * self.shard[1])

    def load(self):
        rank, count = self.shard
        records = self.reader.take(self.batch_size * count)[rank::count]
        return decode_batch(records, self.shape, self.reader.path, self.color)

    def close(self):
        self.reader.close()


class Data(PrefetchLayer):
    """Type "Data": tops data (N, C, H, W) float32 and, optionally, label (N,) float32.

    data_param: source, batch_size, backend (LEVELDB/LMDB), rand_skip (skip
    rng-chosen [0, rand_skip) records at the start, as Caffe's `rand % rand_skip`),
    prefetch (queue depth; 0 means 2), force_encoded_color. transform_param: crop_size,
    mirror, mean_file or mean_value, scale, force_color/force_gray for encoded (JPEG/PNG)
    records (see io/transform.py). Call close() to stop the prefetch thread and release the
    database; it also happens when the layer is collected and at interpreter exit.
    """

    type = "Data"

    def setup(self, bottom, top):
        data_param = self.param.data_param
        if not data_param.source:
            raise self.error("data_param.source is not set; give the database folder")
        if data_param.batch_size < 1:
            raise self.error("data_param.batch_size must be at least 1")
        self.source = data_param.source
        transform_param = _transform_param(self.param)
        color = color_mode(self, transform_param, data_param.force_encoded_color)
        reader = open_reader(self.source, backend_name(int(data_param.backend)))
        try:
            key, value = reader.next()
            shape = decode_datum(value, key, self.source, color)[0].shape
            transformer = Transformer(transform_param, self.phase, shape)
            rng = self.rng if self.rng is not None else np.random.default_rng(0)
            skip = int(rng.integers(data_param.rand_skip)) if data_param.rand_skip else 0
            seed = int(rng.integers(2**63))
        except BaseException:
            reader.close()
            raise
        batch_size = int(data_param.batch_size)
        self.start_prefetch(_DBSource(reader, batch_size, skip, shape, color), transformer, batch_size,
                            int(data_param.prefetch) or 2, seed)

    @property
    def first_record(self):
        """Where the layer's record stream starts (the rand_skip draw)."""
        return self._feed.source.first_record

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
        self._feed.source.shard = (int(rank), int(count))
        if first_record is not None:
            self._feed.source.first_record = int(first_record)
        self.seek(self.batches_served)
