"""Blob: the unit of storage that flows through a net (Caffe's Blob, without the GPU half)."""
import numpy as np

from .errors import SiameseError
from .proto import caffe_pb2


class Blob:
    """A float32 `data` array and a `diff` array (its gradient) of the same shape.

    Learnable parameters shared by name are one Blob object used by several layers,
    so their gradients add up in one `diff`.

    Between two layers that both work batch-last (the compiled convolution and 2x2 MAX pooling),
    the values may be handed over in the (C, H, W, N) layout instead (`defer_data`/`defer_diff`,
    allowed where the net sets `may_defer`): as Caffe's SyncedMemory keeps whichever copy is
    current, `data` and `diff` then write the (N, C, H, W) arrays from it on first access, so
    anyone else reading the blob sees the same values as always.
    """

    __slots__ = ("_data", "_diff", "_data_batch_last", "_diff_batch_last", "may_defer")

    def __init__(self, shape=(0,)):
        self._data = np.zeros(shape, np.float32)
        self._diff = np.zeros(shape, np.float32)
        self._data_batch_last = self._diff_batch_last = None
        self.may_defer = False

    @property
    def data(self):
        if self._data_batch_last is not None:
            np.copyto(self._data, self._data_batch_last.transpose(3, 0, 1, 2))
            self._data_batch_last = None
        return self._data

    @data.setter
    def data(self, value):
        self._data, self._data_batch_last = value, None

    @property
    def diff(self):
        if self._diff_batch_last is not None:
            np.copyto(self._diff, self._diff_batch_last.transpose(3, 0, 1, 2))
            self._diff_batch_last = None
        return self._diff

    @diff.setter
    def diff(self, value):
        self._diff, self._diff_batch_last = value, None

    def defer_data(self, batch_last):
        """The data is now `batch_last`, a (C, H, W, N) array the caller leaves untouched until the next pass."""
        self._data_batch_last = batch_last

    def defer_diff(self, batch_last):
        self._diff_batch_last = batch_last

    def settle(self):
        """Write any pending batch-last copy out in (N, C, H, W) now (as reading `data` and `diff` does)."""
        return self.data, self.diff

    def batch_last_data(self):
        """The (C, H, W, N) array holding the data, if it was handed over that way; None otherwise."""
        return self._data_batch_last

    def batch_last_diff(self):
        return self._diff_batch_last

    @property
    def shape(self):
        return self._data.shape

    @property
    def count(self):
        return self._data.size

    def reshape(self, shape):
        """Resize to `shape`; memory is kept when the shape is unchanged."""
        shape = tuple(int(d) for d in shape)
        if shape != self._data.shape:
            self.data = np.zeros(shape, np.float32)
            self.diff = np.zeros(shape, np.float32)

    def __repr__(self):
        return f"Blob{self.shape}"

    def to_proto(self, write_diff=False):
        return array_to_proto(self.data, self.diff if write_diff else None)

    def from_proto(self, proto, reshape=True, where="blob"):
        """Load data (and diff, if present) from a BlobProto; legacy 4-D shapes are accepted.

        Without `reshape` the proto must hold exactly this blob's count of values.
        `where` names the proto in errors (a file and a layer).
        """
        shape, data, diff = proto_values(proto, where)
        if reshape:
            self.reshape(shape)
        elif data.size != self.count:
            raise SiameseError(f"{where} has shape {list(shape)} but the blob is {list(self.shape)}")
        self.data[...] = data.reshape(self.shape)
        if diff.size:
            self.diff[...] = diff.reshape(self.shape)


def array_to_proto(data, diff=None):
    """A BlobProto with BlobShape filled, as Caffe 1.0 writes it."""
    proto = caffe_pb2.BlobProto()
    proto.shape.dim.extend(data.shape)
    proto.data.extend(data.ravel().tolist())
    if diff is not None:
        proto.diff.extend(diff.ravel().tolist())
    return proto


def blob_proto_shape(proto):
    if proto.HasField("shape"):
        return tuple(int(d) for d in proto.shape.dim)
    if proto.num or proto.channels or proto.height or proto.width:
        return (proto.num, proto.channels, proto.height, proto.width)
    return (len(proto.data) or len(proto.double_data),)


def proto_values(proto, where="blob"):
    """(shape, data, diff) of a BlobProto, checked: data fills the shape exactly, diff is empty or does too."""
    shape = blob_proto_shape(proto)
    if any(d < 0 for d in shape):
        raise SiameseError(f"{where} has a negative dimension in its shape {list(shape)}; the file is corrupt")
    need = 1
    for d in shape:
        need *= d
    data = proto_array(proto, "data")
    if data.size != need:
        raise SiameseError(f"{where} holds {data.size} values but its shape {list(shape)} needs {need}; "
                           "the file is cut short or corrupt")
    diff = proto_array(proto, "diff")
    if diff.size and diff.size != need:
        raise SiameseError(f"{where} holds {diff.size} diff values but its shape {list(shape)} needs {need}; "
                           "the file is corrupt")
    return shape, data, diff


def proto_array(proto, field):
    """The float32 values of `data` or `diff`, taken from the double_ field when that is the one set."""
    values = getattr(proto, field)
    if not len(values):
        values = getattr(proto, "double_" + field)
    return np.array(values, dtype=np.float32)
