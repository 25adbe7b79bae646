"""The small layers: forward values against hand-worked numbers, gradients against central differences."""
import numpy as np
import pytest

from gradcheck import check_gradients, make_blobs
from layerkit import make, setup_forward
from siamese_cli.blob import Blob
from siamese_cli.errors import SiameseError

def run(layer, bottom, num_top=1):
    return setup_forward(layer, bottom, num_top=num_top)


def backward(layer, top, bottom, top_diffs, propagate=None):
    for blob, diff in zip(top, top_diffs):
        blob.diff[...] = diff
    for blob in bottom:
        blob.diff[...] = np.nan
    layer.backward(top, propagate or [True] * len(bottom), bottom)
    return [blob.diff.copy() for blob in bottom]


def away_from_zero(rng, shape, low=0.1):
    values = rng.uniform(low, 1.0, shape) * rng.choice([-1.0, 1.0], shape)
    return values.astype(np.float32)


RNG = np.random.default_rng(1234)


# ---------------------------------------------------------------- neurons

@pytest.mark.parametrize("slope", [0.0, 0.1])
def test_relu_values_and_gradient(slope):
    x = np.array([[-2.0, -0.5, 0.5, 3.0]], np.float32)
    layer = make("ReLU", f"relu_param {{ negative_slope: {slope} }}")
    (top,) = run(layer, make_blobs(x))
    np.testing.assert_array_equal(top.data, np.where(x > 0, x, np.float32(slope) * x))
    check_gradients(make("ReLU", f"relu_param {{ negative_slope: {slope} }}"),
                    make_blobs(away_from_zero(RNG, (2, 3, 4))))


@pytest.mark.parametrize("slope", [0.0, 0.25])
def test_relu_in_place_matches_separate_top(slope):
    x = away_from_zero(RNG, (3, 5))
    dy = RNG.standard_normal((3, 5)).astype(np.float32)
    text = f"relu_param {{ negative_slope: {slope} }}"
    separate = make_blobs(x)
    layer = make("ReLU", text)
    (top,) = run(layer, separate)
    (expected_dx,) = backward(layer, [top], separate, [dy])

    (shared,) = make_blobs(x)
    layer = make("ReLU", text)
    run_top = [shared]
    layer.setup([shared], run_top)
    layer.reshape([shared], run_top)
    layer.forward([shared], run_top)
    np.testing.assert_array_equal(shared.data, top.data)
    shared.diff[...] = dy
    layer.backward(run_top, [True], [shared])
    np.testing.assert_array_equal(shared.diff, expected_dx)
    np.testing.assert_array_equal(expected_dx, dy * np.where(x > 0, 1, np.float32(slope)))


@pytest.mark.parametrize("kind,fn", [("Sigmoid", lambda x: 1 / (1 + np.exp(-x))), ("TanH", np.tanh)])
def test_sigmoid_tanh_values_gradient_in_place(kind, fn):
    x = RNG.standard_normal((2, 3, 2)).astype(np.float32) * 2
    (top,) = run(make(kind), make_blobs(x))
    np.testing.assert_allclose(top.data, fn(x.astype(np.float64)), rtol=1e-6, atol=1e-7)
    check_gradients(make(kind), make_blobs(x))

    dy = RNG.standard_normal(x.shape).astype(np.float32)
    separate = make_blobs(x)
    layer = make(kind)
    (top,) = run(layer, separate)
    (expected,) = backward(layer, [top], separate, [dy])
    (shared,) = make_blobs(x)
    layer = make(kind)
    layer.reshape([shared], [shared])
    layer.forward([shared], [shared])
    shared.diff[...] = dy
    layer.backward([shared], [True], [shared])
    np.testing.assert_array_equal(shared.diff, expected)


def test_sigmoid_saturates_without_overflow():
    (top,) = run(make("Sigmoid"), make_blobs(np.array([-200.0, 0.0, 200.0], np.float32)))
    np.testing.assert_array_equal(top.data, [0.0, 0.5, 1.0])


@pytest.mark.parametrize("power,scale,shift", [(2, 0.5, 1), (3, 1.5, 0), (0.5, 2, 1), (1, 2, 3), (2, 1, 0), (-1, 1, 2)])
def test_power(power, scale, shift):
    x = RNG.uniform(0.5, 2.0, (2, 5)).astype(np.float32)
    text = f"power_param {{ power: {power} scale: {scale} shift: {shift} }}"
    (top,) = run(make("Power", text), make_blobs(x))
    np.testing.assert_allclose(top.data, (shift + scale * x.astype(np.float64)) ** power, rtol=1e-6)
    check_gradients(make("Power", text), make_blobs(x), step=1e-3)


def test_power_constant_cases_and_in_place():
    x = np.array([1.0, -2.0, 3.0], np.float32)
    (top,) = run(make("Power", "power_param { power: 0 scale: 3 shift: 5 }"), make_blobs(x))
    np.testing.assert_array_equal(top.data, [1, 1, 1])
    layer = make("Power", "power_param { power: 2 scale: 0 shift: 3 }")
    (top,) = run(layer, make_blobs(x))
    np.testing.assert_array_equal(top.data, [9, 9, 9])
    bottom = make_blobs(x)
    (top,) = run(layer, bottom)
    assert backward(layer, [top], bottom, [np.ones(3, np.float32)])[0].tolist() == [0, 0, 0]

    (shared,) = make_blobs(np.array([1.0, 2.0], np.float32))
    layer = make("Power", "power_param { power: 3 shift: 1 }")
    layer.setup([shared], [shared])
    layer.reshape([shared], [shared])
    layer.forward([shared], [shared])
    np.testing.assert_array_equal(shared.data, [8, 27])
    shared.diff[...] = 1
    layer.backward([shared], [True], [shared])
    np.testing.assert_allclose(shared.diff, [12, 27], rtol=1e-6)


def test_dropout_train_statistics_and_backward():
    x = np.full((200, 500), 2.0, np.float32)
    layer = make("Dropout", "dropout_param { dropout_ratio: 0.3 }", phase="TRAIN", seed=7)
    bottom = make_blobs(x)
    (top,) = run(layer, bottom)
    kept = top.data != 0
    assert abs(kept.mean() - 0.7) < 0.01
    np.testing.assert_allclose(top.data[kept], np.float32(2.0) * np.float32(1 / 0.7), rtol=1e-6)
    assert abs(top.data.mean() - 2.0) < 0.03
    (dx,) = backward(layer, [top], bottom, [np.ones_like(x)])
    np.testing.assert_array_equal(dx != 0, kept)
    np.testing.assert_allclose(dx[kept], 1 / 0.7, rtol=1e-6)
    layer.forward(bottom, [top])
    assert (top.data != 0).tolist() != kept.tolist()


def test_dropout_test_phase_is_identity():
    x = RNG.standard_normal((4, 6)).astype(np.float32)
    layer = make("Dropout", "dropout_param { dropout_ratio: 0.5 }", phase="TEST")
    bottom = make_blobs(x)
    (top,) = run(layer, bottom)
    np.testing.assert_array_equal(top.data, x)
    dy = RNG.standard_normal(x.shape).astype(np.float32)
    np.testing.assert_array_equal(backward(layer, [top], bottom, [dy])[0], dy)


def test_dropout_rejects_ratio_one():
    with pytest.raises(SiameseError, match="dropout_ratio"):
        run(make("Dropout", "dropout_param { dropout_ratio: 1 }", phase="TRAIN"), make_blobs(np.ones(3)))


# ---------------------------------------------------------------- slicing and shapes

def test_slice_siamese_pair_data():
    pair = RNG.random((5, 2, 28, 28)).astype(np.float32)
    layer = make("Slice", "slice_param { slice_dim: 1 slice_point: 1 }")
    bottom = make_blobs(pair)
    data, data_p = run(layer, bottom, num_top=2)
    assert data.shape == data_p.shape == (5, 1, 28, 28)
    np.testing.assert_array_equal(data.data, pair[:, :1])
    np.testing.assert_array_equal(data_p.data, pair[:, 1:])
    assert not np.shares_memory(data.data, pair)
    (dx,) = backward(layer, [data, data_p], bottom, [np.ones((5, 1, 28, 28)), np.full((5, 1, 28, 28), 2.0)])
    np.testing.assert_array_equal(dx[:, 0], 1)
    np.testing.assert_array_equal(dx[:, 1], 2)


def test_slice_points_equal_split_and_gradient():
    x = RNG.standard_normal((2, 3, 6)).astype(np.float32)
    tops = run(make("Slice", "slice_param { axis: -1 slice_point: 1 slice_point: 4 }"), make_blobs(x), 3)
    assert [t.shape for t in tops] == [(2, 3, 1), (2, 3, 3), (2, 3, 2)]
    np.testing.assert_array_equal(tops[1].data, x[:, :, 1:4])
    tops = run(make("Slice", "slice_param { axis: 2 }"), make_blobs(x), 3)
    assert [t.shape for t in tops] == [(2, 3, 2)] * 3
    np.testing.assert_array_equal(tops[2].data, x[:, :, 4:])
    tops = run(make("Slice", "slice_param { slice_dim: 0 }"), make_blobs(x), 2)
    np.testing.assert_array_equal(tops[1].data, x[1:])
    check_gradients(make("Slice", "slice_param { axis: 2 slice_point: 2 }"), make_blobs(x), top=[Blob(), Blob()])


@pytest.mark.parametrize("text,tops,message", [
    ("slice_param { axis: 1 slice_point: 3 }", 2, "slice_point"),
    ("slice_param { axis: 1 slice_point: 2 slice_point: 2 }", 3, "slice_point"),
    ("slice_param { axis: 1 slice_point: 1 }", 3, "one fewer"),
    ("slice_param { axis: 1 }", 2, "evenly divide"),
    ("slice_param { axis: 1 slice_dim: 1 }", 2, "not both"),
    ("slice_param { slice_dim: 4 }", 2, "out of range"),
])
def test_slice_errors(text, tops, message):
    with pytest.raises(SiameseError, match=message):
        run(make("Slice", text), make_blobs(np.zeros((2, 3, 4), np.float32)), tops)


def test_concat_values_gradient_and_concat_dim():
    a = RNG.standard_normal((2, 1, 3)).astype(np.float32)
    b = RNG.standard_normal((2, 2, 3)).astype(np.float32)
    (top,) = run(make("Concat"), make_blobs(a, b))
    np.testing.assert_array_equal(top.data, np.concatenate([a, b], axis=1))
    check_gradients(make("Concat"), make_blobs(a, b))
    (top,) = run(make("Concat", "concat_param { concat_dim: 0 }"), make_blobs(a, a))
    np.testing.assert_array_equal(top.data, np.concatenate([a, a], axis=0))
    with pytest.raises(SiameseError, match="except on axis"):
        run(make("Concat", "concat_param { axis: 2 }"), make_blobs(a, b))


def test_flatten():
    x = RNG.standard_normal((2, 3, 4, 5)).astype(np.float32)
    (top,) = run(make("Flatten"), make_blobs(x))
    assert top.shape == (2, 60)
    np.testing.assert_array_equal(top.data, x.reshape(2, 60))
    (top,) = run(make("Flatten", "flatten_param { axis: 1 end_axis: 2 }"), make_blobs(x))
    assert top.shape == (2, 12, 5)
    check_gradients(make("Flatten", "flatten_param { axis: 0 end_axis: -2 }"), make_blobs(x[:, :, :2, :2]))


@pytest.mark.parametrize("bottom_shape,text,shape", [
    ((2, 4, 3, 5), "shape { dim: 0 dim: -1 }", (2, 60)),
    ((2, 3, 5, 4), "shape { dim: 10 dim: 0 dim: 1 dim: 0 }", (10, 3, 1, 4)),
    ((2, 4, 4, 5), "shape { dim: 2 dim: 2 } axis: 1 num_axes: 1", (2, 2, 2, 4, 5)),
    ((2, 3, 4, 5), "shape { dim: -1 } axis: -3", (2, 3, 20)),
    ((2, 4, 3, 5), "shape { dim: 1 } axis: 0 num_axes: 0", (1, 2, 4, 3, 5)),
])
def test_reshape_shapes(bottom_shape, text, shape):
    x = RNG.standard_normal(bottom_shape).astype(np.float32)
    layer = make("Reshape", f"reshape_param {{ {text} }}")
    bottom = make_blobs(x)
    (top,) = run(layer, bottom)
    assert top.shape == shape
    np.testing.assert_array_equal(top.data.ravel(), x.ravel())
    dy = RNG.standard_normal(shape).astype(np.float32)
    np.testing.assert_array_equal(backward(layer, [top], bottom, [dy])[0], dy.reshape(x.shape))


@pytest.mark.parametrize("text,message", [
    ("shape { dim: -1 dim: -1 }", "more than one -1"),
    ("shape { dim: 7 dim: -1 }", "cannot infer"),
    ("shape { dim: 5 dim: 5 }", "holds 25 values"),
    ("shape { dim: 0 dim: 0 dim: 0 }", "no axis 2"),
    ("shape { dim: 1 } axis: 3", "out of range"),
])
def test_reshape_errors(text, message):
    with pytest.raises(SiameseError, match=message):
        run(make("Reshape", f"reshape_param {{ {text} }}"), make_blobs(np.zeros((4, 6), np.float32)))


# ---------------------------------------------------------------- multi-blob plumbing

def test_eltwise_sum_prod_values_and_gradients():
    a, b, c = (RNG.uniform(0.5, 1.5, (2, 3)).astype(np.float32) for _ in range(3))
    (top,) = run(make("Eltwise", "eltwise_param { operation: SUM coeff: 1 coeff: -2 coeff: 0.5 }"), make_blobs(a, b, c))
    np.testing.assert_allclose(top.data, a - 2 * b + 0.5 * c, rtol=1e-6)
    check_gradients(make("Eltwise", "eltwise_param { operation: SUM coeff: 1 coeff: -2 coeff: 0.5 }"),
                    make_blobs(a, b, c))
    (top,) = run(make("Eltwise", "eltwise_param { operation: PROD }"), make_blobs(a, b, c))
    np.testing.assert_allclose(top.data, a * b * c, rtol=1e-6)
    for stable in ("true", "false"):
        check_gradients(make("Eltwise", f"eltwise_param {{ operation: PROD stable_prod_grad: {stable} }}"),
                        make_blobs(a, b, c))


def test_eltwise_max_gradient_routes_to_the_winner():
    values = RNG.permutation(24).astype(np.float32).reshape(3, 2, 4) * 0.1
    a, b, c = values
    layer = make("Eltwise", "eltwise_param { operation: MAX }")
    bottom = make_blobs(a, b, c)
    (top,) = run(layer, bottom)
    np.testing.assert_array_equal(top.data, values.max(axis=0))
    check_gradients(make("Eltwise", "eltwise_param { operation: MAX }"), make_blobs(a, b, c))
    dx = backward(layer, [top], bottom, [np.ones((2, 4), np.float32)])
    np.testing.assert_array_equal(np.stack(dx), (values == values.max(axis=0)).astype(np.float32))


def test_eltwise_max_ties_follow_caffe():
    one = np.ones(2, np.float32)
    layer = make("Eltwise", "eltwise_param { operation: MAX }")
    bottom = make_blobs(one, one, one)
    (top,) = run(layer, bottom)
    dx = backward(layer, [top], bottom, [np.ones(2, np.float32)])
    assert [d.tolist() for d in dx] == [[0, 0], [1, 1], [0, 0]]


def test_eltwise_errors():
    with pytest.raises(SiameseError, match="one per bottom"):
        run(make("Eltwise", "eltwise_param { coeff: 1 }"), make_blobs(np.ones(2), np.ones(2)))
    with pytest.raises(SiameseError, match="only to operation SUM"):
        run(make("Eltwise", "eltwise_param { operation: PROD coeff: 1 coeff: 1 }"), make_blobs(np.ones(2), np.ones(2)))
    with pytest.raises(SiameseError, match="equal shapes"):
        run(make("Eltwise"), make_blobs(np.ones(2), np.ones(3)))


def test_split_copies_and_sums_diffs():
    x = RNG.standard_normal((2, 3)).astype(np.float32)
    layer = make("Split")
    bottom = make_blobs(x)
    tops = run(layer, bottom, 3)
    for top in tops:
        np.testing.assert_array_equal(top.data, x)
    (dx,) = backward(layer, tops, bottom, [np.full((2, 3), v, np.float32) for v in (1, 2, 4)])
    np.testing.assert_array_equal(dx, np.full((2, 3), 7))


def test_silence_zeroes_diffs():
    layer = make("Silence")
    bottom = make_blobs(np.ones(3), np.ones((2, 2)))
    run(layer, bottom, 0)
    dx = backward(layer, [], bottom, [], propagate=[True, False])
    assert dx[0].tolist() == [0, 0, 0]
    assert np.isnan(dx[1]).all()


def test_input_shapes():
    tops = run(make("Input", "input_param { shape { dim: 2 dim: 3 } shape { dim: 4 } }"), [], 2)
    assert [t.shape for t in tops] == [(2, 3), (4,)]
    tops = run(make("Input", "input_param { shape { dim: 1 dim: 5 } }"), [], 2)
    assert [t.shape for t in tops] == [(1, 5), (1, 5)]
    layer = make("Input", "input_param { shape { dim: 1 dim: 5 } }")
    tops[0].data[...] = 7
    layer.reshape([], tops)
    layer.forward([], tops)
    assert (tops[0].data == 7).all()
    with pytest.raises(SiameseError, match="one per top"):
        run(make("Input", "input_param { shape { dim: 1 } shape { dim: 1 } }"), [], 3)


def test_dummy_data_constant_once_random_each_forward():
    text = """dummy_data_param {
        shape { dim: 2 dim: 3 } shape { dim: 4 }
        data_filler { type: "constant" value: 1.5 } data_filler { type: "gaussian" std: 2 } }"""
    layer = make("DummyData", text)
    top = [Blob(), Blob()]
    layer.setup([], top)
    assert top[0].shape == (2, 3) and top[1].shape == (4,)
    np.testing.assert_array_equal(top[0].data, 1.5)
    layer.reshape([], top)
    layer.forward([], top)
    first = top[1].data.copy()
    layer.forward([], top)
    assert not np.array_equal(first, top[1].data)
    np.testing.assert_array_equal(top[0].data, 1.5)

    legacy = make("DummyData", "dummy_data_param { num: 2 channels: 1 height: 3 width: 3 }")
    (top,) = run(legacy, [])
    assert top.shape == (2, 1, 3, 3) and not top.data.any()
    with pytest.raises(SiameseError, match="not both"):
        run(make("DummyData", "dummy_data_param { num: 2 channels: 1 height: 3 width: 3 shape { dim: 1 } }"), [])


# ---------------------------------------------------------------- softmax, losses, accuracy

def log_softmax(x, axis):
    x = x.astype(np.float64)
    shifted = x - x.max(axis=axis, keepdims=True)
    return shifted - np.log(np.exp(shifted).sum(axis=axis, keepdims=True))


def test_softmax_values_and_gradient():
    x = RNG.standard_normal((2, 4, 3)).astype(np.float32) * 3
    (top,) = run(make("Softmax"), make_blobs(x))
    np.testing.assert_allclose(top.data, np.exp(log_softmax(x, 1)), rtol=1e-5, atol=1e-7)
    check_gradients(make("Softmax"), make_blobs(x))
    (top,) = run(make("Softmax", "softmax_param { axis: -1 }"), make_blobs(x))
    np.testing.assert_allclose(top.data.sum(axis=-1), 1, rtol=1e-6)


def test_softmax_loss_against_log_softmax_and_second_top():
    x = RNG.standard_normal((5, 4)).astype(np.float32) * 2
    labels = np.array([0, 3, 1, 1, 2], np.float32)
    loss, prob = run(make("SoftmaxWithLoss"), make_blobs(x, labels), 2)
    expected = -log_softmax(x, 1)[np.arange(5), labels.astype(int)].mean()
    assert loss.shape == ()
    assert float(loss.data) == pytest.approx(expected, rel=1e-6)
    np.testing.assert_allclose(prob.data, np.exp(log_softmax(x, 1)), rtol=1e-5)
    check_gradients(make("SoftmaxWithLoss"), make_blobs(x, labels), check_bottom=[0])


@pytest.mark.parametrize("text,divisor", [
    ("", 4), ("loss_param { normalization: FULL }", 6), ("loss_param { normalization: BATCH_SIZE }", 2),
    ("loss_param { normalization: NONE }", 1), ("loss_param { normalize: false }", 2),
    ("loss_param { normalize: true }", 4),
])
def test_softmax_loss_spatial_ignore_label_and_normalization(text, divisor):
    x = RNG.standard_normal((2, 3, 1, 3)).astype(np.float32)
    labels = np.array([[[0, 2, 9]], [[9, 1, 1]]], np.float32)  # N x 1 x W, 9 ignored
    ignore = "loss_param { ignore_label: 9 }"
    layer = make("SoftmaxWithLoss", f"{ignore} {text}")
    bottom = make_blobs(x, labels)
    (loss,) = run(layer, bottom)
    logp = log_softmax(x, 1)[:, :, 0, :]
    valid = [(0, 0, 0), (0, 2, 1), (1, 1, 1), (1, 1, 2)]  # (n, label, w)
    expected = -sum(logp[n, c, w] for n, c, w in valid) / divisor
    assert float(loss.data) == pytest.approx(expected, rel=1e-6)
    dx, dlabel = backward(layer, [loss], bottom, [np.float32(2.0)], propagate=[True, False])
    assert not dx[0, :, 0, 2].any() and not dx[1, :, 0, 0].any()
    prob = np.exp(log_softmax(x, 1))
    np.testing.assert_allclose(dx[0, :, 0, 0], 2.0 * (prob[0, :, 0, 0] - [1, 0, 0]) / divisor, rtol=1e-5)
    assert np.isnan(dlabel).all()
    check_gradients(make("SoftmaxWithLoss", f"{ignore} {text}"), make_blobs(x, labels), check_bottom=[0])


def test_softmax_loss_rejects_bad_labels():
    with pytest.raises(SiameseError, match="label count"):
        run(make("SoftmaxWithLoss"), make_blobs(np.zeros((2, 3)), np.zeros(3)))
    with pytest.raises(SiameseError, match="out of range"):
        run(make("SoftmaxWithLoss"), make_blobs(np.zeros((2, 3)), np.array([0, 3])))


def test_accuracy_top_k_and_per_class():
    scores = np.array([
        [0.1, 0.5, 0.2, 0.2],   # label 1: top-1 hit
        [0.4, 0.3, 0.2, 0.1],   # label 2: 3rd
        [0.3, 0.3, 0.3, 0.1],   # label 0: a tie, ranked after 1 and 2 (higher index first)
        [0.9, 0.0, 0.0, 0.1],   # label 3: 2nd
        [0.2, 0.2, 0.5, 0.1],   # label 5: ignored
    ], np.float32)
    labels = np.array([1, 2, 0, 3, 5], np.float32)
    expected = {1: 1 / 4, 2: 2 / 4, 3: 4 / 4}
    for k, value in expected.items():
        layer = make("Accuracy", f"accuracy_param {{ top_k: {k} ignore_label: 5 }}")
        acc, per_class = run(layer, make_blobs(scores, labels), 2)
        assert acc.shape == () and float(acc.data) == pytest.approx(value)
        assert per_class.shape == (4,)
    np.testing.assert_array_equal(per_class.data, [1, 1, 1, 1])
    layer = make("Accuracy", "accuracy_param { top_k: 2 ignore_label: 5 }")
    acc, per_class = run(layer, make_blobs(scores, labels), 2)
    np.testing.assert_array_equal(per_class.data, [0, 1, 0, 1])
    with pytest.raises(SiameseError, match="top_k"):
        run(make("Accuracy", "accuracy_param { top_k: 5 }"), make_blobs(scores, labels))


def test_accuracy_spatial_axis():
    scores = np.zeros((1, 3, 2), np.float32)
    scores[0, 2, 0] = 1
    scores[0, 1, 1] = 1
    (acc,) = run(make("Accuracy"), make_blobs(scores, np.array([[2, 0]], np.float32)))
    assert float(acc.data) == 0.5


# ---------------------------------------------------------------- contrastive loss

PAIRS_A = np.array([[0.3, 0.4], [0.6, 0.0], [0.0, 1.5]], np.float32)
PAIRS_B = np.zeros((3, 2), np.float32)
PAIRS_Y = np.array([1, 0, 0], np.float32)


def test_contrastive_loss_hand_computed():
    layer = make("ContrastiveLoss")
    bottom = make_blobs(PAIRS_A, PAIRS_B, PAIRS_Y.reshape(3, 1, 1, 1))
    (loss,) = run(layer, bottom)
    # similar d^2 = 0.25; dissimilar d = 0.6 -> (1 - 0.6)^2 = 0.16; d = 1.5 is beyond the margin
    assert loss.shape == ()
    assert float(loss.data) == pytest.approx((0.25 + 0.16) / 6, rel=1e-6)
    da, db, dy = backward(layer, [loss], bottom, [np.float32(1)], propagate=[True, True, False])
    beta = -(1 / 3) * 0.4 / (0.6 + 1e-4)
    expected = np.array([[0.3 / 3, 0.4 / 3], [beta * 0.6, 0], [0, 0]])
    np.testing.assert_allclose(da, expected, rtol=1e-6)
    assert abs(da[1, 0] - (-0.4 * 0.6 / (3 * 0.6))) > 1e-5  # the 1e-4 is really there
    np.testing.assert_array_equal(db, -da)
    assert np.isnan(dy).all()
    da2, _, _ = backward(layer, [loss], bottom, [np.float32(0.5)], propagate=[True, False, False])
    np.testing.assert_allclose(da2, expected / 2, rtol=1e-6)


def test_contrastive_loss_legacy_hand_computed():
    layer = make("ContrastiveLoss", "contrastive_loss_param { legacy_version: true margin: 2 }")
    bottom = make_blobs(PAIRS_A, PAIRS_B, PAIRS_Y)
    (loss,) = run(layer, bottom)
    # similar 0.25; dissimilar 2 - 0.36 = 1.64 and 2 - 2.25 < 0 -> 0 (not squared)
    assert float(loss.data) == pytest.approx((0.25 + 1.64) / 6, rel=1e-6)
    da, db, _ = backward(layer, [loss], bottom, [np.float32(1)], propagate=[True, True, False])
    np.testing.assert_allclose(da, [[0.1, 0.4 / 3], [-0.2, 0], [0, 0]], rtol=1e-6)
    np.testing.assert_array_equal(db, -da)


def test_contrastive_loss_label_integer_part_decides():
    bottom = make_blobs(PAIRS_A[:1], PAIRS_B[:1], np.array([0.7], np.float32))
    (loss,) = run(make("ContrastiveLoss"), bottom)
    assert float(loss.data) == pytest.approx((1 - 0.5) ** 2 / 2, rel=1e-6)


@pytest.mark.parametrize("margin", [1.0, 2.5])
@pytest.mark.parametrize("legacy", ["false", "true"])
def test_contrastive_loss_gradient(margin, legacy):
    text = f"contrastive_loss_param {{ margin: {margin} legacy_version: {legacy} }}"
    layer = make("ContrastiveLoss", text)
    # Dissimilar pairs inside and outside the margin (on d, or on d^2 for legacy), none near it.
    ratios = np.array([0.2, 0.5, 0.8, 1.3, 1.7, 0.4, 1.1, 0.6, 1.5, 0.9])
    similar = np.array([1, 0, 0, 0, 0, 1, 0, 1, 1, 0], np.float32)
    dist = np.sqrt(ratios * margin) if legacy == "true" else ratios * margin
    rng = np.random.default_rng(5)
    a = rng.standard_normal((10, 3))
    direction = rng.standard_normal((10, 3))
    direction /= np.linalg.norm(direction, axis=1, keepdims=True)
    b = a + dist[:, None] * direction
    check_gradients(layer, make_blobs(a.astype(np.float32), b.astype(np.float32), similar),
                    check_bottom=[0, 1], step=1e-3)


def test_contrastive_loss_shape_errors():
    with pytest.raises(SiameseError, match="one value per pair"):
        run(make("ContrastiveLoss"), make_blobs(PAIRS_A, PAIRS_B, np.zeros(2)))
    with pytest.raises(SiameseError, match="same N x C"):
        run(make("ContrastiveLoss"), make_blobs(PAIRS_A, np.zeros((3, 3)), PAIRS_Y))
    with pytest.raises(SiameseError, match="N x C"):
        run(make("ContrastiveLoss"), make_blobs(np.zeros((3, 2, 2)), np.zeros((3, 2, 2)), PAIRS_Y))
