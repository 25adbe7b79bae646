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
                    setup=True, norm_rtol=3e-3):
    """Assert analytic gradients of `layer` match central differences.

    Checks every learnable blob of the layer and the bottoms listed in `check_bottom`
    (default: all). Two criteria, both needed: per element, |analytic - numeric| <=
    atol + rtol * max(|analytic|, |numeric|) catches a single wrong entry; per blob,
    ||analytic - numeric|| <= norm_rtol * ||numeric|| (plus float32 noise) catches a gradient
    that is wrong everywhere by as little as 1%, at any magnitude. Returns the largest
    absolute error seen.
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
    magnitude = sum(float(np.abs(w).ravel() @ np.abs(t.data).ravel()) for w, t in zip(weights, top))
    propagate = [i in check_bottom for i in range(len(bottom))]
    layer.backward(top, propagate, bottom)
    analytic = [b.diff.copy() for b in layer.blobs] + [bottom[i].diff.copy() for i in check_bottom]
    targets = list(layer.blobs) + [bottom[i] for i in check_bottom]

    worst = 0.0
    for blob, grad in zip(targets, analytic):
        flat = blob.data.reshape(-1)
        numerics = np.zeros(flat.size)
        for index in range(flat.size):
            original = flat[index]
            flat[index] = original + step
            plus = _objective(layer, bottom, top, weights)
            flat[index] = original - step
            minus = _objective(layer, bottom, top, weights)
            flat[index] = original
            numeric = (plus - minus) / (2 * step)
            numerics[index] = numeric
            got = float(grad.reshape(-1)[index])
            error = abs(got - numeric)
            scale = max(abs(got), abs(numeric))
            assert error <= atol + rtol * scale, (
                f"{layer.type} gradient mismatch at {blob.shape}[{index}]: analytic {got}, numeric {numeric}"
            )
            worst = max(worst, error)
        difference = np.linalg.norm(grad.reshape(-1).astype(np.float64) - numerics)
        reference = np.linalg.norm(numerics)
        noise = 1e-6 * magnitude / step * np.sqrt(flat.size)  # float32 rounding of the objective, over 2 * step
        assert difference <= norm_rtol * reference + noise, (
            f"{layer.type} gradient of {blob.shape} off by {difference / max(reference, 1e-30):.2%} "
            f"of its norm (allowed {norm_rtol:.1%})"
        )
    return worst
