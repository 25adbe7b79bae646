"""Small helpers the layers share: Caffe's axis and legacy-shape conventions, loss normalisation, work arrays."""
import numpy as np

from ..proto import caffe_pb2

_LOSS = caffe_pb2.LossParameter


def canonical_axis(layer, axis, num_axes):
    """Caffe's CanonicalAxisIndex: negative axes count from the end; out of range is an error."""
    if not -num_axes <= axis < num_axes:
        raise layer.error(f"axis {axis} out of range for a {num_axes}-axis blob; use -{num_axes}..{num_axes - 1}")
    return axis + num_axes if axis < 0 else axis


def count(shape, start=0, end=None):
    """The product of shape[start:end] (1 for an empty range), like Blob::count(start, end)."""
    return int(np.prod(shape[start:end], dtype=np.int64))


def legacy_dim(layer, shape, index):
    """Caffe's LegacyShape(index): num/channels/height/width of a blob of at most 4 axes."""
    if len(shape) > 4:
        raise layer.error(f"needs a blob of at most 4 axes, got shape {list(shape)}")
    return shape[index] if index < len(shape) else 1


def sequential_sum(values):
    """Sum in float32, one term after another, as Caffe's scalar loops accumulate."""
    values = np.asarray(values, np.float32).ravel()
    if values.size == 0:
        return np.float32(0)
    return np.cumsum(values, dtype=np.float32)[-1]


def prediction_layout(layer, shape, axis, label_count, axis_name):
    """(outer, inner) counts around the class axis; one label per prediction is required."""
    outer, inner = count(shape, 0, axis), count(shape, axis + 1)
    if outer * inner != label_count:
        raise layer.error(
            f"label count {label_count} must equal the number of predictions {outer * inner} "
            f"(prediction shape {list(shape)}, {axis_name} axis {axis})"
        )
    return outer, inner


def kept_input(bottom, top):
    """The bottom data a neuron's backward pass reads: a copy when it runs in place, since the top overwrites it."""
    return bottom[0].data.copy() if top[0] is bottom[0] else bottom[0].data


def loss_normalization(layer, default=_LOSS.VALID):
    """loss_param's normalization mode; the deprecated `normalize` maps to VALID or BATCH_SIZE.

    `default` applies when neither is set (SigmoidCrossEntropyLoss passes BATCH_SIZE).
    """
    p = layer.param.loss_param
    if p.HasField("normalization"):
        return p.normalization
    if p.HasField("normalize"):
        return _LOSS.VALID if p.normalize else _LOSS.BATCH_SIZE
    return default


def loss_normalizer(mode, outer, inner, valid_count):
    """The loss divisor for a normalization mode, at least 1 so an all-ignored batch gives 0, not NaN."""
    if mode == _LOSS.FULL:
        value = outer * inner
    elif mode == _LOSS.VALID:
        value = valid_count
    elif mode == _LOSS.BATCH_SIZE:
        value = outer
    else:
        value = 1
    return np.float32(max(1.0, float(value)))


def check_loss_bottoms(layer, bottom):
    """Caffe's LossLayer rule: prediction and target have the same first dimension."""
    a, b = bottom[0].shape, bottom[1].shape
    if len(a) == 0 or len(b) == 0 or a[0] != b[0]:
        raise layer.error(f"bottoms {list(a)} and {list(b)} must have the same first dimension (the batch)")


def channel_affine(kernels, x, scale, shift, out):
    """out = x * scale[c] + shift[c] (shift may be None) over (outer, channels, inner) arrays.

    One compiled pass when `kernels` is loaded and the arrays are dense, else numpy's multiply then
    add: the same two roundings, so the same bits. BatchNorm's normalisation and Scale share it.
    """
    if kernels is not None and x.flags.c_contiguous and out.flags.c_contiguous:
        kernels.channel_affine(kernels.ptr(x), kernels.ptr(np.ascontiguousarray(scale)),
                               None if shift is None else kernels.ptr(np.ascontiguousarray(shift)),
                               kernels.ptr(out), *x.shape)
        return
    np.multiply(x, scale.reshape(1, -1, 1), out=out)
    if shift is not None:
        out += shift.reshape(1, -1, 1)


class WorkBuffers:
    """Work arrays kept between calls, by name: fresh arrays would cost page faults on every pass."""

    def __init__(self):
        self._arrays = {}

    def get(self, name, shape, dtype=np.float32):
        """The array `name` of this shape and dtype: the kept one, or a new zeroed one when either changed."""
        array = self._arrays.get(name)
        if array is None or array.shape != shape or array.dtype != dtype:
            array = self._arrays[name] = np.zeros(shape, dtype)
        return array
