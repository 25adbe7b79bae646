"""Caffe's data transformation (transform_param), applied to a whole batch at once.

Per image, in Caffe's order: crop (random offset in TRAIN, centred in TEST), mirror
(a coin flip per image whenever `mirror` is set), subtract the mean, multiply by
`scale`. With a mean_file, Caffe subtracts the mean pixel at each pixel's source
position (same crop offset, not mirrored) and then writes it to its mirrored place;
mirroring after the subtraction does exactly that. Arithmetic is float32, as Caffe's.
"""
import numpy as np

from ..errors import SiameseError
from ..proto import caffe_pb2
from .files import read_binary_proto


def _load_mean_file(path, shape):
    from ..blob import blob_proto_shape, proto_array

    proto = read_binary_proto(path, caffe_pb2.BlobProto())
    dims = tuple(blob_proto_shape(proto))
    values = proto_array(proto, "data")
    while len(dims) > 3 and dims[0] == 1:
        dims = dims[1:]
    if dims != tuple(shape) or values.size != int(np.prod(shape)):
        raise SiameseError(
            f"{path}: mean is {'x'.join(map(str, dims))}, the records are {'x'.join(map(str, shape))}; "
            "the mean_file must match the un-cropped records"
        )
    return values.reshape(shape)


class Transformer:
    """transform_param for records of shape (C, H, W) in one phase.

    `out_shape` is the per-image output shape; calling the transformer on an
    (N, C, H, W) uint8 or float32 batch returns the float32 (N,) + out_shape batch.
    `rng` (a numpy Generator) is needed only when `needs_rng`.
    """

    def __init__(self, param, phase, shape):
        self.shape = tuple(int(d) for d in shape)
        channels, height, width = self.shape
        self.phase = phase
        self.scale = np.float32(param.scale)
        self.mirror = bool(param.mirror)
        self.crop = int(param.crop_size)
        if self.crop and (self.crop > height or self.crop > width):
            raise SiameseError(f"transform_param: crop_size {self.crop} is larger than the {height}x{width} records")
        if param.HasField("mean_file") and len(param.mean_value):
            raise SiameseError("transform_param: give mean_file or mean_value, not both")
        self.mean = None
        if param.HasField("mean_file"):
            self.mean = _load_mean_file(param.mean_file, self.shape)
        elif len(param.mean_value):
            values = np.asarray(param.mean_value, np.float32)
            if values.size == 1:
                values = np.repeat(values, channels)
            elif values.size != channels:
                raise SiameseError(
                    f"transform_param: {values.size} mean_value entries for {channels} channels; give 1 or {channels}"
                )
            self.mean = values.reshape(channels, 1, 1)

    @property
    def out_shape(self):
        channels, height, width = self.shape
        if self.crop:
            return (channels, self.crop, self.crop)
        return self.shape

    @property
    def needs_rng(self):
        return self.mirror or bool(self.crop and self.phase == "TRAIN")

    def _offsets(self, count, rng):
        _, height, width = self.shape
        if self.phase == "TRAIN":
            return rng.integers(0, height - self.crop + 1, count), rng.integers(0, width - self.crop + 1, count)
        return np.full(count, (height - self.crop) // 2), np.full(count, (width - self.crop) // 2)

    def __call__(self, batch, rng=None):
        count = len(batch)
        flips = rng.integers(0, 2, count).astype(bool) if self.mirror else None
        mean = self.mean
        if self.crop:
            tops, lefts = self._offsets(count, rng)
            span = np.arange(self.crop)
            rows = (tops[:, None] + span)[:, None, :, None]
            cols = (lefts[:, None] + span)[:, None, None, :]
            channel = np.arange(self.shape[0])[None, :, None, None]
            batch = batch[np.arange(count)[:, None, None, None], channel, rows, cols]
            if mean is not None and mean.shape[1:] != (1, 1):
                mean = mean[channel[0], rows, cols]
        out = batch.astype(np.float32)
        if mean is not None:
            out -= mean
        if self.scale != 1:
            out *= self.scale
        if flips is not None and flips.any():
            out[flips] = out[flips, :, :, ::-1]
        return out
