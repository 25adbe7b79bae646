"""The update of one iteration against numbers computed here from Caffe's definitions: the order of its
steps, weight decay and lr_mult on every solver type, clipping, and the solver fields Caffe refuses."""
import numpy as np
import pytest

from siamese_cli.errors import SiameseError
from siamese_cli.solvers import load_solver, make_solver
from test_solver import SHAPES, Lines, _grads, _one_update, solver_param

# (lr_mult, decay_mult) of the four learnable blobs of test_solver's NET: ip weight, ip bias, ip_p weight, ip_p bias
MULTS = [(1, 1), (2, 0), (1, 1), (1, 1)]
RATE, DECAY, DELTA = 0.1, 0.01, 1e-6


def run_updates(kind, extra, grads_seq):
    _, start, end = _one_update(kind, f"weight_decay: {DECAY}\ndelta: {DELTA}\n{extra}", grads_seq)
    return start, end


# Each reference takes (w, regularised gradient g, state dict, local rate = rate * lr_mult, t) and returns the step.
def nesterov(w, g, s, rate, t):
    prev = s.get("h", 0.0)
    s["h"] = 0.9 * prev + rate * g
    return 1.9 * s["h"] - 0.9 * prev


def adagrad(w, g, s, rate, t):
    s["h"] = s.get("h", 0.0) + g * g
    return rate * g / (np.sqrt(s["h"]) + DELTA)


def rmsprop(w, g, s, rate, t):
    s["h"] = 0.8 * s.get("h", 0.0) + 0.2 * g * g
    return rate * g / (np.sqrt(s["h"]) + DELTA)


def adadelta(w, g, s, rate, t):
    s["g2"] = 0.9 * s.get("g2", 0.0) + 0.1 * g * g
    step = g * np.sqrt((s.get("x2", 0.0) + DELTA) / (s["g2"] + DELTA))
    s["x2"] = 0.9 * s.get("x2", 0.0) + 0.1 * step * step
    return rate * step


def adam(w, g, s, rate, t):
    s["m"] = 0.9 * s.get("m", 0.0) + 0.1 * g
    s["v"] = 0.999 * s.get("v", 0.0) + 0.001 * g * g
    return rate * np.sqrt(1 - 0.999**t) / (1 - 0.9**t) * s["m"] / (np.sqrt(s["v"]) + DELTA)


CASES = {
    "Nesterov": ("momentum: 0.9", nesterov),
    "AdaGrad": ("", adagrad),
    "RMSProp": ("rms_decay: 0.8", rmsprop),
    "AdaDelta": ("momentum: 0.9", adadelta),
    "Adam": ("momentum: 0.9\nmomentum2: 0.999", adam),
}


@pytest.mark.parametrize("kind", list(CASES))
def test_weight_decay_and_lr_mult_on_every_solver(kind, kernel_path):
    extra, reference = CASES[kind]
    seq = [_grads(s, SHAPES) for s in range(3)]
    start, end = run_updates(kind, extra, seq)
    for k, (lr_mult, decay_mult) in enumerate(MULTS):
        w, state = start[k].copy(), {}
        for t, grads in enumerate(seq, start=1):
            g = grads[k].astype(np.float64) + DECAY * decay_mult * w
            w = w - reference(w, g, state, RATE * lr_mult, t)
        np.testing.assert_allclose(end[k], w, rtol=2e-4, atol=1e-6, err_msg=f"{kind}, blob {k}")


def test_update_order_clip_then_normalise_then_regularise_then_lr_mult(kernel_path):
    """Caffe's ApplyUpdate: clip on the raw sum of the iter_size passes, divide by iter_size, add the decay, step.

    Clipping after the division would not clip (the norm is 3 before, 1.5 after, the threshold 2);
    regularising before the division would halve the decay; before the clip it would be scaled by it.
    """
    solver = make_solver(solver_param("iter_size: 2\nclip_gradients: 2\nweight_decay: 0.5"), log=Lines())
    params = solver.net.learnable_params
    raw = [np.zeros(p.blob.shape) for p in params]
    raw[0][0, 0], raw[2][1, 1] = 2.4, 1.8  # global L2 norm 3
    start = [p.blob.data.astype(np.float64).copy() for p in params]
    for p, g in zip(params, raw):
        p.blob.diff[...] = g
    solver.apply_update()
    for k, (lr_mult, decay_mult) in enumerate(MULTS):
        g = raw[k] * (2 / 3)          # clipped to norm 2
        g = g / 2                     # iter_size
        g = g + 0.5 * decay_mult * start[k]
        expected = start[k] - 0.1 * lr_mult * g
        np.testing.assert_allclose(params[k].blob.data, expected, rtol=1e-5, atol=1e-6, err_msg=f"blob {k}")


def test_clipping_below_the_threshold_leaves_gradients_unchanged():
    log = Lines()
    solver = make_solver(solver_param("clip_gradients: 10"), log=log)
    grads = _grads(3, SHAPES)  # norm about 4.5
    for p, g in zip(solver.net.learnable_params, grads):
        p.blob.diff[...] = g
    solver.clip_gradients()
    for p, g in zip(solver.net.learnable_params, grads):
        np.testing.assert_array_equal(p.blob.diff, g)
    assert not any("clipping" in line for line in log.lines)


@pytest.mark.parametrize("extra, field, message", [
    ('type: "AdaGrad"\nmomentum: 0.9', "momentum", "momentum cannot be used with AdaGrad"),
    ('type: "RMSProp"\nmomentum: 0.9', "momentum", "momentum cannot be used with RMSProp"),
    ('type: "RMSProp"\nrms_decay: 1', "rms_decay", "rms_decay should lie in [0, 1) (it is 1)"),
    ('type: "RMSProp"\nrms_decay: -0.1', "rms_decay", "rms_decay should lie in [0, 1) (it is -0.1)"),
    ('type: "Adam"\nsolver_type: SGD', "solver_type", "old solver_type field (enum) and new type field (string) "
                                                      "cannot be both specified"),
    ('regularization_type: "L3"', "regularization_type", 'unknown regularization_type "L3"'),
    ('type: "Lion"', "type", 'unknown solver type "Lion"'),
    ("test_iter: 0", "test_iter", "test_iter must be at least 1 (it is 0)"),
])
def test_solver_fields_caffe_refuses_name_file_and_line(tmp_path, extra, field, message):
    from test_solver import NET

    path = tmp_path / "solver.prototxt"
    path.write_text(f'base_lr: 0.1\nlr_policy: "fixed"\n{extra}\nnet_param {{ {NET} }}\n')
    line = next(n for n, text in enumerate(path.read_text().splitlines(), 1) if text.startswith(f"{field}:"))
    with pytest.raises(SiameseError) as caught:
        load_solver(path, log=Lines())
    assert str(caught.value).startswith(f"{path}:{line}: {message}")


def test_rmsprop_accepts_zero_momentum_and_decay_in_range():
    solver = make_solver(solver_param('type: "RMSProp"\nrms_decay: 0\nmomentum: 0'), log=Lines())
    assert solver.type == "RMSProp"
