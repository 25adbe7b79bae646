"""The optional compiled kernels: how they are found, built, turned off, and reported."""
import numpy as np
import pytest

from siamese_cli import accel


def test_off_by_environment(monkeypatch):
    monkeypatch.setenv(accel.ENV, "0")
    assert accel.kernels() is None
    assert accel.status() == "numpy only (SIAMESE_ACCEL=0)"


def test_missing_compiler_falls_back_to_numpy_and_says_so(monkeypatch, tmp_path):
    monkeypatch.setenv(accel.ENV, "1")
    monkeypatch.setenv("SIAMESE_CACHE_DIR", str(tmp_path))
    monkeypatch.setenv("CC", str(tmp_path / "no-such-cc"))
    assert accel.kernels() is None
    assert "could not be built" in accel.status() and "no-such-cc" in accel.status()
    assert not list(tmp_path.glob("*.so")) and not list(tmp_path.glob("*.tmp*"))


def test_builds_into_the_cache_and_pools(monkeypatch, tmp_path):
    if accel._compiler() is None:
        pytest.skip("no C compiler on this machine")
    monkeypatch.setenv(accel.ENV, "1")
    monkeypatch.setenv("SIAMESE_CACHE_DIR", str(tmp_path))
    k = accel.kernels()
    assert k is not None and k.path.parent == tmp_path and str(tmp_path) in accel.status()
    x = np.array([[[[1, 3], [3, 2]]], [[[-1, -1], [-1, -5]]]], np.float32)
    out, mask = np.zeros((2, 1, 1, 1), np.float32), np.zeros((2, 1, 1, 1), np.int32)
    k.max_pool_forward(k.ptr(x), k.ptr(out), k.ptr(mask, accel.INT32), 2, 2, 2, 1, 1, 2, 2, 2, 2, 0, 0)
    assert out.ravel().tolist() == [3, -1] and mask.ravel().tolist() == [1, 0]  # the first maximum wins
    with pytest.raises(ValueError):
        k.ptr(x[:, :, :, ::-1])


@pytest.mark.parametrize("text, shape", [
    ("kernel_size: 2 stride: 2", (64, 20, 24, 24)),          # LeNet's pool1: the 2x2 tiles kernel
    ("kernel_size: 2 stride: 2", (5, 50, 8, 8)),             # LeNet's pool2: rows of 4 outputs
    ("kernel_size: 2 stride: 2", (1, 3, 2, 2)),              # one tile per plane
    ("kernel_size: 2 stride: 2", (3, 4, 9, 17)),             # odd sizes: Caffe's ceil windows, the generic loop
    ("kernel_size: 3 stride: 2", (2, 8, 27, 27)),            # AlexNet-style overlapping windows
    ("kernel_size: 3 stride: 1 pad: 1", (2, 5, 14, 14)),     # GoogLeNet-style padded windows
])
def test_compiled_pooling_matches_numpy(monkeypatch, text, shape):
    """Same tops, masks and bottom gradients on both paths; many ties (values from a small set)."""
    from google.protobuf import text_format

    from siamese_cli.blob import Blob
    from siamese_cli.layers import layer_class
    from siamese_cli.proto import caffe_pb2

    if accel._compiler() is None:
        pytest.skip("no C compiler on this machine")
    rng = np.random.default_rng(3)
    x = rng.integers(0, 4, shape).astype(np.float32)
    dy = None
    results = {}
    for env in ("1", "0"):
        monkeypatch.setenv(accel.ENV, env)
        param = caffe_pb2.LayerParameter(name="pool", type="Pooling")
        text_format.Merge(f"pooling_param {{ {text} }}", param)
        layer = layer_class("Pooling")(param)
        bottom, top = [Blob(shape)], [Blob(), Blob()]
        bottom[0].data[...] = x
        layer.setup(bottom, top)
        layer.reshape(bottom, top)
        assert bool(layer.compiled) == (env == "1")
        layer.forward(bottom, top)
        if dy is None:
            dy = rng.standard_normal(top[0].shape).astype(np.float32)
        top[0].diff[...] = dy
        layer.backward(top, [True], bottom)
        results[env] = (top[0].data.copy(), top[1].data.copy(), bottom[0].diff.copy())
    for compiled, plain in zip(results["1"], results["0"]):
        np.testing.assert_array_equal(compiled, plain)


def test_unwritable_cache_falls_back_to_a_temporary_folder(monkeypatch, tmp_path):
    if accel._compiler() is None:
        pytest.skip("no C compiler on this machine")
    blocked = tmp_path / "file"
    blocked.write_text("not a folder")
    monkeypatch.setenv(accel.ENV, "1")
    monkeypatch.setenv("SIAMESE_CACHE_DIR", str(blocked / "cache"))  # cannot be created
    monkeypatch.setenv("TMPDIR", str(tmp_path / "tmp"))
    (tmp_path / "tmp").mkdir()
    import tempfile

    monkeypatch.setattr(tempfile, "tempdir", None)
    k = accel.kernels()
    assert k is not None and str(tmp_path / "tmp") in str(k.path), accel.status()


@pytest.mark.parametrize("text", ["kernel_size: 2 stride: 2", "kernel_size: 3 stride: 2"])
def test_compiled_pooling_propagates_nan(monkeypatch, text):
    """A NaN anywhere in a window makes that output NaN (numpy's maximum), whatever its position."""
    from google.protobuf import text_format

    from siamese_cli.blob import Blob
    from siamese_cli.layers import layer_class
    from siamese_cli.proto import caffe_pb2

    if accel._compiler() is None:
        pytest.skip("no C compiler on this machine")
    monkeypatch.setenv(accel.ENV, "1")
    from siamese_cli.layers import pooling

    monkeypatch.setattr(pooling, "COMPILED_MIN_ROW", 1)
    for position in range(4):
        param = caffe_pb2.LayerParameter(name="pool", type="Pooling")
        text_format.Merge(f"pooling_param {{ {text} }}", param)
        layer = layer_class("Pooling")(param)
        bottom, top = [Blob((1, 1, 4, 4))], [Blob()]
        bottom[0].data[...] = np.arange(16, dtype=np.float32).reshape(1, 1, 4, 4)
        bottom[0].data[0, 0, position // 2, position % 2] = np.nan
        layer.setup(bottom, top)
        layer.reshape(bottom, top)
        assert layer.compiled
        layer.forward(bottom, top)
        assert np.isnan(top[0].data[0, 0, 0, 0]) and not np.isnan(top[0].data).all()


@pytest.mark.parametrize("extra", ["momentum: 0.9\nweight_decay: 0.01", "momentum: 0.5", 'weight_decay: 0.2\nregularization_type: "L1"'])
def test_compiled_sgd_step_equals_numpy_bit_for_bit(monkeypatch, extra):
    """The one-pass SGD kernel: the same data, diff (the step) and history as numpy's six passes."""
    from test_solver import SHAPES, _grads, solver_param

    from siamese_cli.solvers import make_solver

    if accel._compiler() is None:
        pytest.skip("no C compiler on this machine")
    seq = [_grads(s, SHAPES) for s in range(4)]
    results = {}
    for env in ("1", "0"):
        monkeypatch.setenv(accel.ENV, env)
        solver = make_solver(solver_param(f'type: "SGD"\n{extra}'), log=lambda *a, **k: None)
        params = solver.net.learnable_params
        for grads in seq:
            for p, g in zip(params, grads):
                p.blob.diff[...] = g
            solver.apply_update()
            solver.iter += 1
        results[env] = [a.copy() for p, h in zip(params, solver.history) for a in (p.blob.data, p.blob.diff, h)]
    for compiled, plain in zip(results["1"], results["0"]):
        np.testing.assert_array_equal(compiled, plain)


def test_a_compiler_refusing_march_native_builds_portable_code(monkeypatch, tmp_path):
    compiler = accel._compiler()
    if compiler is None:
        pytest.skip("no C compiler on this machine")
    wrapper = tmp_path / "picky-cc"
    wrapper.write_text('#!/bin/sh\nfor a in "$@"; do [ "$a" = "-march=native" ] && '
                       '{ echo "picky-cc: error: -march=native is not supported" >&2; exit 1; }; done\n'
                       f'exec {compiler} "$@"\n')
    wrapper.chmod(0o755)
    monkeypatch.setenv(accel.ENV, "1")
    monkeypatch.setenv("SIAMESE_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.setenv("CC", str(wrapper))
    assert accel.kernels() is not None, accel.status()


def test_a_failing_compiler_is_named_with_its_error(monkeypatch, tmp_path):
    wrapper = tmp_path / "broken-cc"
    wrapper.write_text('#!/bin/sh\necho "broken-cc: error: no space left" >&2\necho "compilation terminated." >&2\nexit 1\n')
    wrapper.chmod(0o755)
    monkeypatch.setenv(accel.ENV, "1")
    monkeypatch.setenv("SIAMESE_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.setenv("CC", str(wrapper))
    assert accel.kernels() is None
    assert accel.status().endswith("broken-cc: error: no space left)"), accel.status()


@pytest.mark.parametrize("type_name, text, in_place", [
    ("BatchNorm", "batch_norm_param { use_global_stats: true }", False),
    ("BatchNorm", "batch_norm_param { use_global_stats: false }", True),
    ("Scale", "scale_param { bias_term: true filler { type: 'gaussian' } bias_filler { type: 'gaussian' } }", True),
    ("Scale", "scale_param { axis: 1 num_axes: 2 filler { type: 'gaussian' } }", False),
])
def test_compiled_channel_affine_equals_numpy_bit_for_bit(monkeypatch, type_name, text, in_place):
    """BatchNorm's normalisation and Scale in one pass each: numpy's two roundings, the same bits."""
    from siamese_cli.blob import Blob
    from siamese_cli.layers import layer_class
    from siamese_cli.proto import caffe_pb2
    from google.protobuf import text_format

    if accel._compiler() is None:
        pytest.skip("no C compiler on this machine")
    x = np.random.default_rng(5).standard_normal((3, 4, 5, 6)).astype(np.float32) * 3 + 1
    outputs = {}
    for env in ("1", "0"):
        monkeypatch.setenv(accel.ENV, env)
        param = caffe_pb2.LayerParameter(name="l", type=type_name)
        text_format.Merge(text, param)
        layer = layer_class(type_name)(param, phase="TEST", rng=np.random.default_rng(0))
        bottom = [Blob(x.shape)]
        bottom[0].data[...] = x
        top = bottom if in_place else [Blob()]
        layer.setup(bottom, top)
        if type_name == "BatchNorm":
            layer.blobs[0].data[...] = np.arange(4) * 0.3
            layer.blobs[1].data[...] = np.arange(1, 5) * 0.7
            layer.blobs[2].data[...] = 2
        assert (layer.kernels is not None) == (env == "1")
        layer.reshape(bottom, top)
        layer.forward(bottom, top)
        outputs[env] = top[0].data.copy()
    np.testing.assert_array_equal(outputs["1"], outputs["0"])


def test_a_net_that_never_runs_backward_keeps_no_input_copies(tmp_path):
    """needs_backward: an in-place Scale of a deploy net skips the input copy only backward would read."""
    from siamese_cli.net import Net

    net_text = ('input: "x" input_shape { dim: 2 dim: 3 dim: 4 dim: 4 }\n'
                'layer { name: "s" type: "Scale" bottom: "x" top: "x" scale_param { bias_term: true } }\n')
    deploy = tmp_path / "deploy.prototxt"
    deploy.write_text(net_text)
    trained = tmp_path / "train.prototxt"
    trained.write_text("force_backward: true\n" + net_text)
    for path, keeps in ((deploy, False), (trained, True)):
        net = Net(str(path), phase="TEST")
        net.blobs["x"].data[...] = 1.5
        net.forward()
        layer = net.layer_dict["s"]
        assert layer.needs_backward == keeps and (layer._input is not None) == keeps
        np.testing.assert_array_equal(net.blobs["x"].data, 1.5)  # factor 1, bias 0
