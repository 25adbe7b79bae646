"""Solver: lr policies, each update rule against hand-computed numbers, the loop, snapshots and resume."""
import re

import numpy as np
import pytest

from siamese_cli.errors import SiameseError
from siamese_cli.io.prototxt import parse_text
from siamese_cli.proto import caffe_pb2
from siamese_cli.solvers import make_solver
from siamese_cli.solvers.lr_policies import learning_rate

NET = """
name: "tiny"
layer { name: "data" type: "DummyData" top: "x" top: "y"
  dummy_data_param { shape { dim: 4 dim: 3 } shape { dim: 4 dim: 3 }
                     data_filler { type: "constant" value: 0.5 } data_filler { type: "constant" value: -0.25 } } }
layer { name: "ip" type: "InnerProduct" bottom: "x" top: "a"
  param { lr_mult: 1 decay_mult: 1 } param { lr_mult: 2 decay_mult: 0 }
  inner_product_param { num_output: 3 weight_filler { type: "gaussian" std: 0.5 } bias_filler { type: "constant" value: 0.1 } } }
layer { name: "ip_p" type: "InnerProduct" bottom: "y" top: "b"
  inner_product_param { num_output: 3 weight_filler { type: "gaussian" std: 0.5 } } }
layer { name: "sim" type: "DummyData" top: "sim"
  dummy_data_param { shape { dim: 4 } data_filler { type: "constant" value: 1 } } }
layer { name: "loss" type: "ContrastiveLoss" bottom: "a" bottom: "b" bottom: "sim" top: "loss" }
"""


def solver_param(extra=""):
    text = f"net_param {{ {NET} }}\nbase_lr: 0.1\nlr_policy: \"fixed\"\nmax_iter: 10\nrandom_seed: 3\n" + extra
    return parse_text(text, caffe_pb2.SolverParameter())


def lr(text, iteration):
    return float(learning_rate(parse_text(text, caffe_pb2.SolverParameter()), iteration)[0])


def test_lr_policies_match_caffe_formulas():
    assert lr('base_lr: 0.01 lr_policy: "fixed"', 123) == pytest.approx(0.01)
    assert lr('base_lr: 0.01 lr_policy: "step" gamma: 0.1 stepsize: 100', 250) == pytest.approx(0.0001)
    assert lr('base_lr: 0.01 lr_policy: "exp" gamma: 0.99', 10) == pytest.approx(0.01 * 0.99**10, rel=1e-6)
    assert lr('base_lr: 0.01 lr_policy: "inv" gamma: 0.0001 power: 0.75', 100) == pytest.approx(
        0.01 * (1 + 0.0001 * 100) ** -0.75, rel=1e-6)
    assert lr('base_lr: 0.01 lr_policy: "inv" gamma: 0.0001 power: 0.75', 0) == pytest.approx(0.01)
    assert lr('base_lr: 0.02 lr_policy: "poly" power: 2 max_iter: 100', 50) == pytest.approx(0.005)
    assert lr('base_lr: 1 lr_policy: "sigmoid" gamma: 0.1 stepsize: 30', 20) == pytest.approx(
        1 / (1 + np.exp(1.0)), rel=1e-6)
    with pytest.raises(SiameseError, match="unknown lr_policy"):
        lr('base_lr: 1 lr_policy: "cosine"', 1)


def multistep_rates(text, iterations, current_step=0):
    """Rates over successive iterations, carrying current_step as the solver does; (rates, final step)."""
    param = parse_text(text, caffe_pb2.SolverParameter())
    rates = []
    for i in iterations:
        rate, current_step = learning_rate(param, i, current_step)
        rates.append(float(rate))
    return rates, current_step


def test_multistep_moves_one_step_per_iteration_as_caffe():
    multi = 'base_lr: 1 lr_policy: "multistep" gamma: 0.5 stepvalue: 10 stepvalue: 20'
    rates, step = multistep_rates(multi, range(30))
    assert rates == [1] * 10 + [0.5] * 10 + [0.25] * 10 and step == 2
    # Caffe's `if`: from step 0 at iteration 99 it takes one step per call, not both at once.
    assert multistep_rates(multi, [99, 100, 101])[0] == [0.5, 0.25, 0.25]
    # Repeated stepvalues also take one iteration each.
    rates, _ = multistep_rates('base_lr: 1 lr_policy: "multistep" gamma: 0.5 stepvalue: 2 stepvalue: 2', range(5))
    assert rates == [1, 1, 0.5, 0.25, 0.25]


def test_multistep_logs_caffe_status_line():
    log = Lines()
    solver = make_solver(solver_param('lr_policy: "multistep" gamma: 0.5 stepvalue: 1 stepvalue: 3'), log=log)
    for _ in range(4):
        solver.apply_update()
        solver.iter += 1
    assert [line for line in log.lines if line.startswith("MultiStep")] == [
        "MultiStep Status: Iteration 1, step = 1", "MultiStep Status: Iteration 3, step = 2"]
    assert solver.current_step == 2


def _one_update(kind, extra, grads_seq):
    """Apply the given gradients for successive iterations; return (initial params, final params)."""
    solver = make_solver(solver_param(f'type: "{kind}"\n{extra}'), log=lambda *a, **k: None)
    params = solver.net.learnable_params
    start = [p.blob.data.astype(np.float64).copy() for p in params]
    for grads in grads_seq:
        for p, g in zip(params, grads):
            p.blob.diff[...] = g
        solver.apply_update()
        solver.iter += 1
    return solver, start, [p.blob.data.astype(np.float64) for p in params]


def _grads(seed, solver_shapes):
    rng = np.random.default_rng(seed)
    return [rng.standard_normal(shape).astype(np.float32) for shape in solver_shapes]


SHAPES = [(3, 3), (3,), (3, 3), (3,)]


def test_sgd_momentum_weight_decay_and_lr_mult(kernel_path):
    seq = [_grads(s, SHAPES) for s in range(3)]
    solver, start, end = _one_update("SGD", "momentum: 0.9\nweight_decay: 0.01", seq)
    mults = [(1, 1), (2, 0), (1, 1), (1, 1)]
    for k, (lr_mult, decay_mult) in enumerate(mults):
        w = start[k].copy()
        h = np.zeros_like(w)
        for grads in seq:
            g = grads[k] + 0.01 * decay_mult * w
            h = 0.9 * h + 0.1 * lr_mult * g
            w = w - h
        np.testing.assert_allclose(end[k], w, rtol=1e-5, atol=1e-6)


def test_l1_regularization_uses_sign(kernel_path):
    seq = [_grads(7, SHAPES)]
    _, start, end = _one_update("SGD", 'weight_decay: 0.5\nregularization_type: "L1"', seq)
    np.testing.assert_allclose(end[0], start[0] - 0.1 * (seq[0][0] + 0.5 * np.sign(start[0])), rtol=1e-5, atol=1e-6)


def test_nesterov():
    seq = [_grads(s, SHAPES) for s in range(2)]
    _, start, end = _one_update("Nesterov", "momentum: 0.8", seq)
    w, h = start[0].copy(), np.zeros((3, 3))
    for grads in seq:
        prev = h.copy()
        h = 0.8 * h + 0.1 * grads[0]
        w = w - ((1.8) * h - 0.8 * prev)
    np.testing.assert_allclose(end[0], w, rtol=1e-5, atol=1e-6)


def test_adagrad():
    seq = [_grads(s, SHAPES) for s in range(2)]
    _, start, end = _one_update("AdaGrad", "delta: 1e-6", seq)
    w, h = start[1].copy(), np.zeros(3)
    for grads in seq:
        h = h + grads[1] ** 2
        w = w - 0.2 * grads[1] / (np.sqrt(h) + 1e-6)
    np.testing.assert_allclose(end[1], w, rtol=1e-5, atol=1e-6)


def test_rmsprop():
    seq = [_grads(s, SHAPES) for s in range(3)]
    _, start, end = _one_update("RMSProp", "rms_decay: 0.9\ndelta: 1e-6", seq)
    w, h = start[0].copy(), np.zeros((3, 3))
    for grads in seq:
        h = 0.9 * h + 0.1 * grads[0] ** 2
        w = w - 0.1 * grads[0] / (np.sqrt(h) + 1e-6)
    np.testing.assert_allclose(end[0], w, rtol=1e-5, atol=1e-6)


def test_adadelta():
    seq = [_grads(s, SHAPES) for s in range(3)]
    _, start, end = _one_update("AdaDelta", "momentum: 0.95\ndelta: 1e-6", seq)
    w, eg, ex = start[0].copy(), np.zeros((3, 3)), np.zeros((3, 3))
    for grads in seq:
        g = grads[0].astype(np.float64)
        eg = 0.95 * eg + 0.05 * g**2
        step = g * np.sqrt((ex + 1e-6) / (eg + 1e-6))
        ex = 0.95 * ex + 0.05 * step**2
        w = w - 0.1 * step
    np.testing.assert_allclose(end[0], w, rtol=1e-4, atol=1e-6)


def test_adam():
    seq = [_grads(s, SHAPES) for s in range(3)]
    _, start, end = _one_update("Adam", "momentum: 0.9\nmomentum2: 0.999\ndelta: 1e-8", seq)
    w, m, v = start[2].copy(), np.zeros((3, 3)), np.zeros((3, 3))
    for t, grads in enumerate(seq, start=1):
        g = grads[2].astype(np.float64)
        m = 0.9 * m + 0.1 * g
        v = 0.999 * v + 0.001 * g**2
        w = w - 0.1 * np.sqrt(1 - 0.999**t) / (1 - 0.9**t) * m / (np.sqrt(v) + 1e-8)
    np.testing.assert_allclose(end[2], w, rtol=1e-4, atol=1e-6)


def test_legacy_solver_type_enum_and_unknown_type():
    solver = make_solver(solver_param("solver_type: ADAM"), log=lambda *a, **k: None)
    assert type(solver).__name__ == "Adam"
    with pytest.raises(SiameseError, match='unknown solver type "Lion"'):
        make_solver(solver_param('type: "Lion"'), log=lambda *a, **k: None)


def test_clip_gradients_scales_global_norm():
    solver = make_solver(solver_param("clip_gradients: 1.0"), log=lambda *a, **k: None)
    for p in solver.net.learnable_params:
        p.blob.diff[...] = 2.0
    solver.clip_gradients()
    norm = np.sqrt(sum(float((p.blob.diff.astype(np.float64) ** 2).sum()) for p in solver.net.learnable_params))
    assert norm == pytest.approx(1.0, rel=1e-5)


def test_iter_size_averages_accumulated_gradients():
    """iter_size 2 steps by the mean gradient of two different batches (the DummyData draws anew each pass)."""
    varying = NET.replace('data_filler { type: "constant" value: 0.5 } data_filler { type: "constant" value: -0.25 }',
                          'data_filler { type: "gaussian" std: 1 }')
    assert varying != NET
    param = parse_text(f'net_param {{ {varying} }}\nbase_lr: 0.1\nlr_policy: "fixed"\nmax_iter: 1\n'
                       f"random_seed: 3\niter_size: 2\n", caffe_pb2.SolverParameter())
    solver = make_solver(param, log=Lines())
    reference = make_solver(param, log=Lines())  # same seed: the same weights and the same batches
    reference.net.clear_param_diffs()
    reference.net.forward_backward()
    first = [p.blob.diff.astype(np.float64).copy() for p in reference.net.learnable_params]
    reference.net.clear_param_diffs()
    reference.net.forward_backward()
    second = [p.blob.diff.astype(np.float64) for p in reference.net.learnable_params]
    assert not np.allclose(first[0], second[0])  # the two batches differ, so one pass alone is wrong
    start = [p.blob.data.astype(np.float64).copy() for p in solver.net.learnable_params]
    solver.step(1)
    mults = [1, 2, 1, 1]
    for k, p in enumerate(solver.net.learnable_params):
        expected = start[k] - 0.1 * mults[k] * (first[k] + second[k]) / 2
        np.testing.assert_allclose(p.blob.data, expected, rtol=1e-5, atol=1e-6)


class Lines:
    def __init__(self):
        self.lines = []

    def __call__(self, message, severity="I", depth=1):
        self.lines.append(message)

    def warning(self, message):
        self.lines.append(message)

    progress = None


def test_loop_logs_caffe_lines_and_snapshots(tmp_path):
    param = solver_param(f'display: 2\nmax_iter: 4\nsnapshot: 2\nsnapshot_prefix: "{tmp_path}/tiny"\n'
                         f'test_iter: 1\ntest_interval: 2\ntest_net_param {{ {NET} }}\nmomentum: 0.9')
    log = Lines()
    solver = make_solver(param, log=log, log_path=tmp_path / "run.csv")
    solver.solve(handle_signals=False)
    text = "\n".join(log.lines)
    assert "Iteration 0, Testing net (#0)" in text
    assert re.search(r"    Test net output #0: loss = [\d.e-]+ \(\* 1 = [\d.e-]+ loss\)", text)
    assert re.search(r"Iteration 2 \([\d.e+-]+ iter/s, [\d.e+-]+s/2 iters\), loss = [\d.e-]+", text)
    assert re.search(r"    Train net output #0: loss = [\d.e-]+ \(\* 1 = [\d.e-]+ loss\)", text)
    assert "Iteration 2, lr = 0.1" in text
    assert f"Snapshotting to binary proto file {tmp_path}/tiny_iter_2.caffemodel" in text
    assert f"Snapshotting solver state to binary proto file {tmp_path}/tiny_iter_4.solverstate" in text
    assert log.lines[-2] == "Optimization Done."
    assert text.count("Testing net") == 3  # iterations 0, 2 and 4
    # The closing line splits the wall time: training, the 3 test passes, the 2 snapshot pairs.
    spent = re.fullmatch(r"Time: ([\d.]+) s in all: training ([\d.]+) s, testing ([\d.]+) s \(3 passes\), "
                         r"snapshots ([\d.]+) s \(2\)", log.lines[-1])
    assert spent, log.lines[-1]
    total, training, testing, saving = map(float, spent.groups())
    assert abs(total - training - testing - saving) <= 0.15
    assert solver.spent["testing"][0] > 0 and solver.spent["snapshots"][0] > 0
    state = caffe_pb2.SolverState()
    state.ParseFromString((tmp_path / "tiny_iter_4.solverstate").read_bytes())
    assert state.iter == 4 and state.learned_net == f"{tmp_path}/tiny_iter_4.caffemodel"
    assert len(state.history) == 4 and list(state.history[0].shape.dim) == [3, 3]
    model = caffe_pb2.NetParameter()
    model.ParseFromString((tmp_path / "tiny_iter_4.caffemodel").read_bytes())
    ip = next(layer for layer in model.layer if layer.name == "ip")
    np.testing.assert_array_equal(np.array(ip.blobs[0].data).reshape(3, 3), solver.net.params["ip"][0].data)
    rows = (tmp_path / "run.csv").read_text().splitlines()
    assert rows[0] == "phase,iter,name,value"
    assert any(row.startswith("train,3,loss,") for row in rows)
    assert any(row.startswith("test,4,loss,") for row in rows)
