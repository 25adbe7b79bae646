"""type "Python" layers: a Euclidean loss and a linear layer with its own blob, checked numerically and
trained by `siamese train` with the module found next to the prototxt."""
import csv
import subprocess
import sys
import textwrap

import numpy as np
import pytest

import caffe
from gradcheck import check_gradients, make_blobs
from siamese_cli.blob import Blob
from siamese_cli.errors import SiameseError
from siamese_cli.layers import layer_class
from siamese_cli.proto import caffe_pb2

MODULE = textwrap.dedent('''
    import ast

    import caffe
    import numpy as np


    class EuclideanLossLayer(caffe.Layer):
        """sum((a - b)^2) / num / 2, its gradient scaled by the top's diff (the loss weight)."""

        def setup(self, bottom, top):
            if len(bottom) != 2:
                raise Exception("Need two inputs to compute distance.")

        def reshape(self, bottom, top):
            if bottom[0].count != bottom[1].count:
                raise Exception("Inputs must have the same dimension.")
            self.diff = np.zeros_like(bottom[0].data, dtype=np.float32)
            top[0].reshape(1)

        def forward(self, bottom, top):
            self.diff[...] = bottom[0].data - bottom[1].data
            top[0].data[...] = np.sum(self.diff ** 2) / bottom[0].num / 2.

        def backward(self, top, propagate_down, bottom):
            for i, sign in ((0, 1), (1, -1)):
                if propagate_down[i]:
                    bottom[i].diff[...] = sign * top[0].diff[0] * self.diff / bottom[i].num


    class LinearLayer(caffe.Layer):
        """top = bottom . W^T with W a learnable blob; param_str "{'num_output': K, 'seed': s}"."""

        def setup(self, bottom, top):
            options = ast.literal_eval(self.param_str)
            self.blobs.add_blob(options["num_output"], bottom[0].count // bottom[0].num)
            rng = np.random.default_rng(options["seed"])
            self.blobs[0].data[...] = rng.uniform(-0.1, 0.1, self.blobs[0].shape)

        def reshape(self, bottom, top):
            top[0].reshape(bottom[0].num, self.blobs[0].shape[0])

        def forward(self, bottom, top):
            top[0].data[...] = bottom[0].data.reshape(bottom[0].num, -1) @ self.blobs[0].data.T

        def backward(self, top, propagate_down, bottom):
            flat = bottom[0].data.reshape(bottom[0].num, -1)
            self.blobs[0].diff[...] += top[0].diff.T @ flat
            if propagate_down[0]:
                bottom[0].diff[...] = (top[0].diff @ self.blobs[0].data).reshape(bottom[0].shape)
''')

NET = '''
name: "python_regression"
layer { name: "x" type: "DummyData" top: "x"
        dummy_data_param { shape { dim: 16 dim: 3 } data_filler { type: "gaussian" std: 1 } } }
layer { name: "teacher" type: "InnerProduct" bottom: "x" top: "y" param { lr_mult: 0 }
        inner_product_param { num_output: 2 bias_term: false weight_filler { type: "gaussian" std: 1 } } }
layer { name: "student" type: "Python" bottom: "x" top: "p"
        python_param { module: "pylayers" layer: "LinearLayer" param_str: "{'num_output': 2, 'seed': 4}" } }
layer { name: "loss" type: "Python" bottom: "p" bottom: "y" top: "loss"
        python_param { module: "pylayers" layer: "EuclideanLossLayer" } loss_weight: 1 }
'''


@pytest.fixture
def module_dir(tmp_path, monkeypatch):
    folder = tmp_path / "net"
    folder.mkdir()
    (folder / "pylayers.py").write_text(MODULE)
    monkeypatch.syspath_prepend(str(folder))
    yield folder
    sys.modules.pop("pylayers", None)


def python_layer(layer, param_str=""):
    param = caffe_pb2.LayerParameter(name="probe", type="Python")
    param.python_param.module, param.python_param.layer, param.python_param.param_str = "pylayers", layer, param_str
    return layer_class("Python")(param, phase="TRAIN", rng=np.random.default_rng(0))


def test_euclidean_loss_forward_and_gradient(module_dir):
    rng = np.random.default_rng(1)
    a, b = rng.standard_normal((2, 5, 3)).astype(np.float32)
    layer = python_layer("EuclideanLossLayer")
    bottom, top = make_blobs(a, b), [Blob()]
    layer.setup(bottom, top)
    layer.reshape(bottom, top)
    layer.forward(bottom, top)
    assert top[0].shape == (1,)
    np.testing.assert_allclose(top[0].data[0], ((a - b) ** 2).sum() / 5 / 2, rtol=1e-6)
    check_gradients(python_layer("EuclideanLossLayer"), make_blobs(a, b))


def test_linear_layer_with_its_own_blob_gradient(module_dir):
    rng = np.random.default_rng(2)
    layer = python_layer("LinearLayer", "{'num_output': 4, 'seed': 0}")
    x = rng.standard_normal((3, 2, 5)).astype(np.float32)
    check_gradients(layer, make_blobs(x))
    assert [b.shape for b in layer.blobs] == [(4, 10)]
    assert layer.user.param_str == "{'num_output': 4, 'seed': 0}" and layer.user.phase == caffe.TRAIN


def test_python_layers_in_a_caffe_net(module_dir):
    (module_dir / "net.prototxt").write_text(NET)
    net = caffe.Net(str(module_dir / "net.prototxt"), caffe.TRAIN)
    student = net.layers[net._layer_names.index("student")]
    assert isinstance(student, caffe.Layer) and student.type == "Python"
    assert student.blobs[0].data is net.params["student"][0].data
    out = net.forward()
    p, y = net.blobs["p"].data, net.blobs["y"].data
    np.testing.assert_allclose(out["loss"], ((p - y) ** 2).sum() / 16 / 2, rtol=1e-5)
    assert net.blob_loss_weights["loss"] == 1.0


def test_siamese_train_learns_through_python_layers(tmp_path):
    folder = tmp_path / "net"
    folder.mkdir()
    (folder / "pylayers.py").write_text(MODULE)
    (folder / "regression.prototxt").write_text(NET)
    (folder / "solver.prototxt").write_text(
        'net: "net/regression.prototxt"\nbase_lr: 0.1\nmomentum: 0.9\nlr_policy: "fixed"\nmax_iter: 60\n'
        'display: 20\nsnapshot_after_train: false\nrandom_seed: 3\n')
    result = subprocess.run([sys.executable, "-m", "siamese_cli", "train", "--solver", "net/solver.prototxt",
                             "--log", "run.csv"], cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    losses = [float(row["value"]) for row in csv.DictReader(open(tmp_path / "run.csv"))
              if row["phase"] == "train" and row["name"] == "loss"]
    assert len(losses) == 60
    assert losses[0] > 0.3 and np.mean(losses[-5:]) < 0.01 * losses[0]


def test_missing_module_is_one_clear_error(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "net.prototxt").write_text(NET.replace('module: "pylayers" layer: "LinearLayer"',
                                                       'module: "no_such_module" layer: "X"'))
    with pytest.raises(SiameseError, match='layer "student" \\(Python\\): no module "no_such_module"'):
        caffe.Net(str(tmp_path / "net.prototxt"), caffe.TRAIN)


def test_siamese_time_finds_the_module_next_to_the_model(tmp_path, monkeypatch, capsys):
    from siamese_cli.cli import main

    folder = tmp_path / "models"
    folder.mkdir()
    (folder / "pylayers_beside.py").write_text(MODULE)
    (folder / "net.prototxt").write_text(NET.replace('"pylayers"', '"pylayers_beside"'))
    monkeypatch.chdir(tmp_path)
    try:
        assert main(["time", "--model", "models/net.prototxt", "--iterations", "1"]) == 0
    finally:
        sys.modules.pop("pylayers_beside", None)
    assert str(folder) not in sys.path  # the folder was on the path only while the net was built and run
    printed = capsys.readouterr()
    assert "Average Forward-Backward" in printed.out + printed.err


def test_solver_step_snapshot_restore_solve(module_dir, monkeypatch):
    monkeypatch.chdir(module_dir)
    (module_dir / "regression.prototxt").write_text(NET)
    (module_dir / "solver.prototxt").write_text(
        'net: "regression.prototxt"\ntype: "Adam"\nbase_lr: 0.05\nlr_policy: "fixed"\nmax_iter: 8\n'
        'snapshot_prefix: "snap"\nrandom_seed: 2\nsolver_mode: CPU\n')
    solver = caffe.get_solver("solver.prototxt")
    assert type(solver._solver).__name__ == "Adam"
    assert type(caffe.SGDSolver("solver.prototxt")._solver).__name__ == "SGD"  # the class decides, as in pycaffe
    before = solver.net.params["student"][0].data.copy()
    solver.step(5)
    assert solver.iter == 5 and not np.allclose(solver.net.params["student"][0].data, before)
    solver.snapshot()
    assert (module_dir / "snap_iter_5.caffemodel").exists() and (module_dir / "snap_iter_5.solverstate").exists()

    resumed = caffe.AdamSolver("solver.prototxt")
    resumed.restore("snap_iter_5.solverstate")
    assert resumed.iter == 5
    np.testing.assert_array_equal(resumed.net.params["student"][0].data, solver.net.params["student"][0].data)
    again = caffe.AdamSolver("solver.prototxt")
    again.solve("snap_iter_5.solverstate")
    assert again.iter == 8 and (module_dir / "snap_iter_8.caffemodel").exists()
    assert again.net.forward()["loss"] >= 0  # the nets stay usable after solve()
