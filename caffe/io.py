"""caffe.io: pycaffe's array/proto conversions, image loading and the input Transformer.

Images are H x W x K float arrays (K = 3 RGB or 1), in [0, 1] as load_image returns them;
the Transformer turns them into the K x H x W blobs a net takes, and back.
"""
import numpy as np

from siamese_cli.blob import blob_proto_shape, proto_array
from siamese_cli.errors import SiameseError
from siamese_cli.proto import caffe_pb2


# ---- proto / datum / array -------------------------------------------------------------
def blobproto_to_array(blob, return_diff=False):
    """The data (or diff) of a BlobProto as an array of its shape (legacy 4-D shapes read too)."""
    return proto_array(blob, "diff" if return_diff else "data").astype(np.float64).reshape(blob_proto_shape(blob))


def array_to_blobproto(arr, diff=None):
    blob = caffe_pb2.BlobProto()
    blob.shape.dim.extend(np.shape(arr))
    blob.data.extend(np.asarray(arr, np.float64).ravel().tolist())
    if diff is not None:
        blob.diff.extend(np.asarray(diff, np.float64).ravel().tolist())
    return blob


def arraylist_to_blobprotovector_str(arraylist):
    return caffe_pb2.BlobProtoVector(blobs=[array_to_blobproto(a) for a in arraylist]).SerializeToString()


def blobprotovector_str_to_arraylist(payload):
    return [blobproto_to_array(b) for b in caffe_pb2.BlobProtoVector.FromString(payload).blobs]


def array_to_datum(arr, label=None):
    """A Datum from a C x H x W array: uint8 arrays as bytes in `data`, any other type as float_data."""
    arr = np.asarray(arr)
    if arr.ndim != 3:
        raise ValueError(f"array_to_datum needs a 3-D (channels, height, width) array, got shape {arr.shape}")
    datum = caffe_pb2.Datum(channels=arr.shape[0], height=arr.shape[1], width=arr.shape[2])
    if arr.dtype == np.uint8:
        datum.data = arr.tobytes()
    else:
        datum.float_data.extend(arr.astype(np.float64).ravel().tolist())
    if label is not None:
        datum.label = int(label)
    return datum


def datum_to_array(datum):
    """The C x H x W array of a Datum (uint8 from `data`, float from float_data); the label stays in datum.label."""
    shape = (datum.channels, datum.height, datum.width)
    if datum.data:
        return np.frombuffer(datum.data, np.uint8).reshape(shape).copy()
    return np.array(datum.float_data, np.float64).reshape(shape)


# ---- images ------------------------------------------------------------------------------
def load_image(filename, color=True):
    """An image file as float32 H x W x 3 (RGB) or H x W x 1 (color=False), values in [0, 1]."""
    try:
        from PIL import Image
    except ImportError:
        raise SiameseError("caffe.io.load_image needs Pillow: pip install pillow") from None
    try:
        with Image.open(filename) as image:
            image = image.convert("RGB" if color else "L")
            pixels = np.asarray(image, np.float32) / np.float32(255)
    except OSError as exc:
        raise SiameseError(f"{filename}: cannot read the image: {exc}") from None
    return pixels if color else pixels[:, :, None]


def _interpolate_axis(im, axis, size, order):
    """Resample one axis to `size` samples with pixel centres aligned (half-pixel rule), edges clamped."""
    old = im.shape[axis]
    centres = (np.arange(size) + 0.5) * (old / size) - 0.5
    if order == 0:
        index = np.clip(np.floor(centres + 0.5).astype(int), 0, old - 1)
        return np.take(im, index, axis=axis)
    centres = np.clip(centres, 0, old - 1)
    low = np.floor(centres).astype(int)
    high = np.minimum(low + 1, old - 1)
    frac = (centres - low).reshape([-1 if a == axis else 1 for a in range(im.ndim)])
    return np.take(im, low, axis=axis) * (1 - frac) + np.take(im, high, axis=axis) * frac


def resize_image(im, new_dims, interp_order=1):
    """H x W x K image resized to new_dims (height, width): bilinear (order 1) or nearest (order 0)."""
    if interp_order not in (0, 1):
        raise ValueError("resize_image supports interp_order 0 (nearest) and 1 (bilinear)")
    im = np.asarray(im, np.float32)
    height, width = (int(d) for d in new_dims)
    out = _interpolate_axis(_interpolate_axis(im, 0, height, interp_order), 1, width, interp_order)
    return out.astype(np.float32)


def oversample(images, crop_dims):
    """Ten crops per H x W x K image: the four corners and the centre, then the same five mirrored.

    Returns (10 * N) x crop_h x crop_w x K, float32.
    """
    crop_h, crop_w = (int(d) for d in crop_dims)
    height, width = np.shape(images[0])[:2]
    top_c, left_c = int(height / 2.0 - crop_h / 2.0), int(width / 2.0 - crop_w / 2.0)
    corners = [(0, 0), (0, width - crop_w), (height - crop_h, 0), (height - crop_h, width - crop_w), (top_c, left_c)]
    crops = []
    for im in images:
        five = [np.asarray(im, np.float32)[t:t + crop_h, l:l + crop_w, :] for t, l in corners]
        crops.extend(five)
        crops.extend(c[:, ::-1, :] for c in five)
    return np.stack(crops).astype(np.float32)


# ---- preprocessing -----------------------------------------------------------------------
class Transformer:
    """Preprocessing per net input: Transformer({'data': net.blobs['data'].data.shape}).

    preprocess, in order: float32, resize to the input's H x W, transpose, channel swap,
    * raw_scale, - mean, * input_scale. deprocess undoes it in reverse.
    """

    def __init__(self, inputs):
        self.inputs = {name: tuple(shape) for name, shape in inputs.items()}
        self.transpose, self.channel_swap, self.raw_scale, self.mean, self.input_scale = {}, {}, {}, {}, {}

    def _check(self, name):
        if name not in self.inputs:
            raise SiameseError(f"{name!r} is not one of the Transformer's inputs {list(self.inputs)}")

    def preprocess(self, in_, data):
        """H' x W' x K image -> K x H x W float32 blob data for input `in_`."""
        self._check(in_)
        out = np.asarray(data).astype(np.float32, copy=True)
        size = self.inputs[in_][2:]
        if out.shape[:2] != size:
            out = resize_image(out, size)
        if in_ in self.transpose:
            out = out.transpose(self.transpose[in_])
        if in_ in self.channel_swap:
            out = out[list(self.channel_swap[in_]), :, :]
        if in_ in self.raw_scale:
            out *= np.float32(self.raw_scale[in_])
        if in_ in self.mean:
            out -= self.mean[in_]
        if in_ in self.input_scale:
            out *= np.float32(self.input_scale[in_])
        return out

    def deprocess(self, in_, data):
        """Blob data -> image: the steps of preprocess undone in reverse (no resize back)."""
        self._check(in_)
        out = np.array(data, np.float32).squeeze()
        if in_ in self.input_scale:
            out /= np.float32(self.input_scale[in_])
        if in_ in self.mean:
            out += self.mean[in_]
        if in_ in self.raw_scale:
            out /= np.float32(self.raw_scale[in_])
        if in_ in self.channel_swap:
            out = out[np.argsort(self.channel_swap[in_]), :, :]
        if in_ in self.transpose:
            out = out.transpose(np.argsort(self.transpose[in_]))
        return out

    def set_transpose(self, in_, order):
        """Axis order taking the image to the blob, e.g. (2, 0, 1) for H x W x K -> K x H x W."""
        self._check(in_)
        if len(order) != len(self.inputs[in_]) - 1:
            raise SiameseError(f"transpose order {tuple(order)} needs {len(self.inputs[in_]) - 1} axes for {in_!r}")
        self.transpose[in_] = tuple(order)

    def set_channel_swap(self, in_, order):
        """Channel order after transposing, e.g. (2, 1, 0) for RGB -> BGR."""
        self._check(in_)
        if len(order) != self.inputs[in_][1]:
            raise SiameseError(f"channel swap {tuple(order)} needs {self.inputs[in_][1]} channels for {in_!r}")
        self.channel_swap[in_] = tuple(order)

    def set_raw_scale(self, in_, scale):
        """Multiply the raw image (e.g. 255 to take [0, 1] images to [0, 255]) before the mean."""
        self._check(in_)
        self.raw_scale[in_] = scale

    def set_mean(self, in_, mean):
        """Per-channel mean (K,) or a mean image (K x H x W, resized to the input when it differs)."""
        self._check(in_)
        mean = np.asarray(mean, np.float32)
        channels, size = self.inputs[in_][1], self.inputs[in_][2:]
        if mean.ndim == 1:
            if mean.shape[0] != channels:
                raise SiameseError(f"mean has {mean.shape[0]} channels, input {in_!r} has {channels}")
            mean = mean[:, None, None]
        else:
            if mean.ndim == 2:
                mean = mean[None]
            if mean.ndim != 3:
                raise SiameseError(f"mean must be (K,), (H, W) or (K, H, W); got shape {mean.shape}")
            if mean.shape[1:] != size:
                mean = resize_image(mean.transpose(1, 2, 0), size).transpose(2, 0, 1)
        self.mean[in_] = mean

    def set_input_scale(self, in_, scale):
        """Multiply after the mean is subtracted (raw_scale acts before)."""
        self._check(in_)
        self.input_scale[in_] = scale
