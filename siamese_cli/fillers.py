"""Weight initialisation with Caffe's filler definitions.

The distributions are Caffe's; the random streams are numpy's (an explicit
`np.random.Generator`), so draws differ from Caffe's while their statistics agree.
"""
import numpy as np

from .errors import SiameseError


KINDS = ("constant", "uniform", "gaussian", "xavier", "msra", "positive_unitball", "bilinear")


def _fans(shape):
    count = int(np.prod(shape))
    fan_in = count // shape[0] if len(shape) > 0 and shape[0] else count
    fan_out = count // shape[1] if len(shape) > 1 and shape[1] else count
    return fan_in, fan_out


def _norm(filler, shape):
    fan_in, fan_out = _fans(shape)
    norm = filler.variance_norm
    if norm == filler.FAN_OUT:
        return fan_out
    if norm == filler.AVERAGE:
        return (fan_in + fan_out) / 2.0
    return fan_in


def bilinear(shape):
    """Caffe's bilinear kernel: weights that make a stride-f Deconvolution upsample by interpolation.

    With f = ceil(k / 2) and c = (k - 1) / (2 f), tap x of a k-wide kernel weighs 1 - |x / f - c|;
    every (output, input) pair gets the same 2-D product of the two axes' weights.
    """
    if len(shape) != 4 or shape[2] != shape[3]:
        raise SiameseError(f"the bilinear filler needs a 4-D blob with square kernels, got shape {list(shape)}")
    size = shape[3]
    f = np.ceil(size / 2.0)
    c = (size - 1) / (2.0 * f)
    taps = 1 - np.abs(np.arange(size) / f - c)
    return np.broadcast_to(np.outer(taps, taps), shape).astype(np.float32)


def fill(filler, shape, rng):
    """A float32 array of `shape` drawn as FillerParameter `filler` says."""
    kind = filler.type
    if filler.sparse < -1:
        raise SiameseError(f"filler sparse must be -1 (off) or at least 0, got {filler.sparse}")
    if filler.sparse != -1 and kind != "gaussian" and kind in KINDS:
        raise SiameseError(f'filler "{kind}" does not support sparse (Caffe allows it only for gaussian); '
                           f"remove sparse: {filler.sparse} or use type: \"gaussian\"")
    if kind == "constant":
        return np.full(shape, filler.value, np.float32)
    if kind == "uniform":
        return rng.uniform(filler.min, filler.max, shape).astype(np.float32)
    if kind == "gaussian":
        values = rng.normal(filler.mean, filler.std, shape).astype(np.float32)
        if filler.sparse >= 0:
            # Caffe keeps each weight with probability sparse / num_outputs.
            keep = rng.random(shape) < filler.sparse / shape[0]
            values *= keep
        return values
    if kind == "xavier":
        scale = np.sqrt(3.0 / _norm(filler, shape))
        return rng.uniform(-scale, scale, shape).astype(np.float32)
    if kind == "msra":
        std = np.sqrt(2.0 / _norm(filler, shape))
        return rng.normal(0.0, std, shape).astype(np.float32)
    if kind == "positive_unitball":
        values = rng.uniform(0.0, 1.0, shape).astype(np.float32)
        rows = values.reshape(shape[0], -1)
        rows /= rows.sum(axis=1, keepdims=True)
        return values
    if kind == "bilinear":
        return bilinear(shape)
    raise SiameseError(
        f'unknown filler type "{kind}"; use one of {", ".join(KINDS)}')
