"""Numerical gradient checking for layers, by central differences (Caffe's GradientChecker idea).

The objective is L = sum(w_k * top_k) with fixed random w, so every top element's
gradient is exercised with a distinct weight. Loss layers are checked on their own
top (w = loss_weight = 1).
"""
import numpy as np

from siamese_cli.blob import Blob


def make_blobs(*arrays):
    blobs = []
    for array in arrays:
        blob = Blob(np.shape(array))
        blob.data[...] = array
        blobs.append(blob)
    return blobs


def _objective(layer, bottom, top, weights):
    layer.reshape(bottom, top)
    layer.forward(bottom, top)
    return sum(float(np.dot(w.ravel().astype(np.float64), t.data.ravel())) for w, t in zip(weights, top))


def check_gradients(layer, bottom, top=None, check_bottom=None, step=1e-2, rtol=2e-2, atol=1e-3, seed=0,
                    setup=True):
    """Assert analytic gradients of `layer` match central differences.

    Checks every learnable blob of the layer and the bottoms listed in `check_bottom`
    (default: all). Returns the largest absolute error seen.
    """
    rng = np.random.default_rng(seed)
    if top is None:
        top = [Blob() for _ in range(layer.num_top or 1)]
    if setup:
        layer.check_counts(bottom, top)
        layer.setup(bottom, top)
    layer.reshape(bottom, top)
    layer.forward(bottom, top)
    if layer.is_loss:
        weights = [np.ones(t.shape, np.float32) for t in top]
    else:
        weights = [rng.standard_normal(t.shape).astype(np.float32) for t in top]
    if check_bottom is None:
        check_bottom = list(range(len(bottom)))

    for blob in layer.blobs:
        blob.diff[...] = 0
    for blob in bottom:
        blob.diff[...] = 0
    for w, t in zip(weights, top):
        t.diff[...] = w
    propagate = [i in check_bottom for i in range(len(bottom))]
    layer.backward(top, propagate, bottom)
    analytic = [b.diff.copy() for b in layer.blobs] + [bottom[i].diff.copy() for i in check_bottom]
    targets = list(layer.blobs) + [bottom[i] for i in check_bottom]

    worst = 0.0
    for blob, grad in zip(targets, analytic):
        flat = blob.data.reshape(-1)
        for index in range(flat.size):
            original = flat[index]
            flat[index] = original + step
            plus = _objective(layer, bottom, top, weights)
            flat[index] = original - step
            minus = _objective(layer, bottom, top, weights)
            flat[index] = original
            numeric = (plus - minus) / (2 * step)
            got = float(grad.reshape(-1)[index])
            error = abs(got - numeric)
            scale = max(abs(got), abs(numeric), 1.0)
            assert error <= atol + rtol * scale, (
                f"{layer.type} gradient mismatch at {blob.shape}[{index}]: analytic {got}, numeric {numeric}"
            )
            worst = max(worst, error)
    return worst
