"""ArgMax, Embed, Reduction, Tile, Filter, BatchReindex, Parameter: values from Caffe's definitions, gradients
by central differences."""
import numpy as np
import pytest
from google.protobuf import text_format

import layerkit
from gradcheck import check_gradients, make_blobs
from siamese_cli.blob import Blob
from siamese_cli.errors import SiameseError
from siamese_cli.net import Net
from siamese_cli.proto import caffe_pb2

RNG = np.random.default_rng(77)


def make(type_name, text="", seed=0):
    return layerkit.make(type_name, text, phase="TRAIN", seed=seed)


def run(layer, bottom, num_top=1):
    return layerkit.setup_forward(layer, bottom, num_top=num_top)


# ---------------------------------------------------------------- ArgMax

def ranked(values):
    """Indices of `values` from largest to smallest, the higher index first among equals (by hand, no sort key trick)."""
    order = []
    remaining = list(range(len(values)))
    while remaining:
        best = remaining[0]
        for j in remaining[1:]:
            if values[j] > values[best] or (values[j] == values[best] and j > best):
                best = j
        order.append(best)
        remaining.remove(best)
    return order


def test_argmax_without_axis_layouts():
    x = RNG.standard_normal((3, 2, 2, 2)).astype(np.float32)
    x[1, 0, 0, 0] = x[1, 1, 1, 1] = 9  # a tie: index 7 ranks before index 0
    (top,) = run(make("ArgMax", "argmax_param { top_k: 3 }"), make_blobs(x))
    assert top.shape == (3, 1, 3, 1)  # Caffe keeps the bottom's axis count (at least 3)
    top.data.shape = (3, 1, 3)
    for n in range(3):
        assert top.data[n, 0].tolist() == ranked(x[n].ravel().tolist())[:3]
    assert top.data[1, 0, :2].tolist() == [7, 0]

    (top,) = run(make("ArgMax", "argmax_param { top_k: 2 out_max_val: true }"), make_blobs(x))
    assert top.shape == (3, 2, 2, 1)
    top.data.shape = (3, 2, 2)
    for n in range(3):
        order = ranked(x[n].ravel().tolist())[:2]
        assert top.data[n, 0].tolist() == order
        np.testing.assert_array_equal(top.data[n, 1], x[n].ravel()[order])

    (top,) = run(make("ArgMax"), make_blobs(x.reshape(3, 8)))
    assert top.shape == (3, 1, 1)
    np.testing.assert_array_equal(top.data.ravel(), [ranked(row.tolist())[0] for row in x.reshape(3, 8)])


@pytest.mark.parametrize("axis", [1, 2, -1])
def test_argmax_with_axis(axis):
    x = RNG.standard_normal((2, 4, 3)).astype(np.float32)
    (top,) = run(make("ArgMax", f"argmax_param {{ axis: {axis} top_k: 2 }}"), make_blobs(x))
    moved = np.moveaxis(x, axis, -1)
    expected_shape = list(x.shape)
    expected_shape[axis] = 2
    assert list(top.shape) == expected_shape
    got = np.moveaxis(top.data, axis, -1)
    for index in np.ndindex(moved.shape[:-1]):
        assert got[index].tolist() == ranked(moved[index].tolist())[:2]
    (top,) = run(make("ArgMax", f"argmax_param {{ axis: {axis} top_k: 2 out_max_val: true }}"), make_blobs(x))
    got = np.moveaxis(top.data, axis, -1)
    for index in np.ndindex(moved.shape[:-1]):
        np.testing.assert_array_equal(got[index], moved[index][ranked(moved[index].tolist())[:2]])


def test_argmax_refuses_top_k_beyond_the_axis():
    with pytest.raises(SiameseError, match="top_k 5 exceeds"):
        run(make("ArgMax", "argmax_param { axis: 1 top_k: 5 }"), make_blobs(np.ones((2, 4), np.float32)))
    assert not make("ArgMax").allow_backward(0)


# ---------------------------------------------------------------- Embed

def test_embed_values_gradient_and_range():
    text = 'embed_param { num_output: 3 input_dim: 5 weight_filler { type: "gaussian" } bias_filler { type: "uniform" } }'
    indices = np.array([[0, 4, 2], [2, 2, 1]], np.float32)
    layer = make("Embed", text)
    (top,) = run(layer, make_blobs(indices))
    weights, bias = (blob.data.astype(np.float64) for blob in layer.blobs)
    assert weights.shape == (5, 3) and bias.shape == (3,)
    assert top.shape == (2, 3, 3)
    for i in range(2):
        for j in range(3):
            np.testing.assert_allclose(top.data[i, j], weights[int(indices[i, j])] + bias, rtol=1e-6)
    check_gradients(layer, make_blobs(indices), check_bottom=[], setup=False)
    assert not layer.allow_backward(0)

    for bad in (5, -1, 1.5):
        with pytest.raises(SiameseError, match="not an integer in 0..4"):
            run(make("Embed", text), make_blobs(np.array([0, bad], np.float32)))


def test_embed_repeated_index_gradient_adds_up():
    layer = make("Embed", "embed_param { num_output: 2 input_dim: 3 bias_term: false }")
    bottom = make_blobs(np.array([1, 1, 0], np.float32))
    (top,) = run(layer, bottom)
    assert len(layer.blobs) == 1
    np.testing.assert_array_equal(top.data, 0)
    top.diff[...] = [[1, 2], [10, 20], [5, 5]]
    layer.backward([top], [False], bottom)
    np.testing.assert_array_equal(layer.blobs[0].diff, [[5, 5], [11, 22], [0, 0]])


# ---------------------------------------------------------------- Reduction

REDUCTIONS = {"SUM": lambda r: r.sum(1), "ASUM": lambda r: np.abs(r).sum(1),
              "SUMSQ": lambda r: (r * r).sum(1), "MEAN": lambda r: r.mean(1)}


@pytest.mark.parametrize("op", sorted(REDUCTIONS))
@pytest.mark.parametrize("axis,coeff", [(0, 1.0), (1, -2.0), (2, 0.5), (-1, 3.0)])
def test_reduction(op, axis, coeff):
    x = RNG.uniform(0.1, 1.0, (2, 3, 4)) * RNG.choice([-1.0, 1.0], (2, 3, 4))
    x = x.astype(np.float32)
    text = f"reduction_param {{ operation: {op} axis: {axis} coeff: {coeff} }}"
    (top,) = run(make("Reduction", text), make_blobs(x))
    kept = axis % 3
    assert top.shape == x.shape[:kept]
    rows = x.astype(np.float64).reshape(int(np.prod(x.shape[:kept])), -1)
    np.testing.assert_allclose(top.data.ravel(), coeff * REDUCTIONS[op](rows), rtol=1e-5)
    check_gradients(make("Reduction", text), make_blobs(x), step=1e-3)


# ---------------------------------------------------------------- Tile

@pytest.mark.parametrize("axis,tiles", [(1, 3), (0, 2), (-1, 2), (2, 1)])
def test_tile(axis, tiles):
    x = RNG.standard_normal((2, 3, 2)).astype(np.float32)
    text = f"tile_param {{ axis: {axis} tiles: {tiles} }}"
    (top,) = run(make("Tile", text), make_blobs(x))
    a = axis % 3
    expected = np.concatenate([x] * tiles, axis=a)  # whole blocks repeated, not each element
    np.testing.assert_array_equal(top.data, expected)
    check_gradients(make("Tile", text), make_blobs(x))


def test_tile_needs_tiles():
    with pytest.raises(SiameseError, match="tiles"):
        run(make("Tile", "tile_param { axis: 1 }"), make_blobs(np.ones((2, 2), np.float32)))


# ---------------------------------------------------------------- Filter

def test_filter_keeps_selected_items_and_their_gradients():
    x = RNG.standard_normal((4, 3, 2)).astype(np.float32)
    labels = np.arange(4, dtype=np.float32)
    selector = np.array([1, 0, 0, 2], np.float32).reshape(4, 1)
    layer = make("Filter")
    bottom = make_blobs(x, labels, selector)
    top = [Blob(), Blob()]
    layer.check_counts(bottom, top)
    layer.setup(bottom, top)
    layer.reshape(bottom, top)
    assert top[0].shape == (4, 3, 2)  # the first reshape keeps the whole batch
    layer.reshape(bottom, top)
    layer.forward(bottom, top)
    assert top[0].shape == (2, 3, 2) and top[1].shape == (2,)
    np.testing.assert_array_equal(top[0].data, x[[0, 3]])
    np.testing.assert_array_equal(top[1].data, [0, 3])
    assert not layer.allow_backward(2) and layer.allow_backward(1)
    check_gradients(layer, bottom, top=top, check_bottom=[0, 1], setup=False)

    top[0].diff[...] = 1
    top[1].diff[...] = 0
    layer.backward(top, [True, False, False], bottom)
    np.testing.assert_array_equal(bottom[0].diff[[1, 2]], 0)
    np.testing.assert_array_equal(bottom[0].diff[[0, 3]], 1)

    bottom[2].data[...] = 0
    layer.reshape(bottom, top)
    layer.forward(bottom, top)
    assert top[0].shape == (0, 3, 2)


def test_filter_checks_shapes():
    with pytest.raises(SiameseError, match="one top per filtered bottom"):
        run(make("Filter"), make_blobs(np.ones((2, 3)), np.ones(2)), num_top=2)
    with pytest.raises(SiameseError, match="selector"):
        run(make("Filter"), make_blobs(np.ones((2, 3)), np.ones((2, 2))))
    with pytest.raises(SiameseError, match="axis 0 must match"):
        run(make("Filter"), make_blobs(np.ones((3, 3)), np.ones(2)))


# ---------------------------------------------------------------- BatchReindex

def test_batch_reindex():
    x = RNG.standard_normal((3, 2, 2)).astype(np.float32)
    permut = np.array([2, 0, 2, 2, 1], np.float32)
    layer = make("BatchReindex")
    bottom = make_blobs(x, permut)
    (top,) = run(layer, bottom)
    assert top.shape == (5, 2, 2)
    for i, j in enumerate([2, 0, 2, 2, 1]):
        np.testing.assert_array_equal(top.data[i], x[j])
    top.diff[...] = np.arange(5, dtype=np.float32).reshape(5, 1, 1)
    layer.backward([top], [True, False], bottom)
    np.testing.assert_array_equal(bottom[0].diff[:, 0, 0], [1, 4, 0 + 2 + 3])
    check_gradients(make("BatchReindex"), make_blobs(x, permut), check_bottom=[0])
    assert not layer.allow_backward(1)
    with pytest.raises(SiameseError, match="out of range for a batch of 3"):
        run(make("BatchReindex"), make_blobs(x, np.array([0, 3], np.float32)))


# ---------------------------------------------------------------- Parameter

def test_parameter_blob_is_the_top_and_learns():
    net = caffe_pb2.NetParameter()
    text_format.Merge("""
      layer { name: "p" type: "Parameter" top: "p" parameter_param { shape { dim: 2 dim: 3 } } }
      layer { name: "x" type: "DummyData" top: "x"
              dummy_data_param { shape { dim: 2 dim: 3 } data_filler { type: "constant" value: 2 } } }
      layer { name: "prod" type: "Eltwise" bottom: "p" bottom: "x" top: "prod" eltwise_param { operation: PROD } }
      layer { name: "loss" type: "Reduction" bottom: "prod" top: "loss" loss_weight: 1 }
    """, net)
    net = Net(net, phase="TRAIN")
    assert net.params["p"][0].shape == (2, 3)
    np.testing.assert_array_equal(net.params["p"][0].data, 0)
    net.params["p"][0].data[...] = np.arange(6).reshape(2, 3)
    loss = net.forward_backward()
    assert loss == pytest.approx(2 * 15)
    np.testing.assert_array_equal(net.params["p"][0].diff, 2)
    check_gradients(make("Parameter", "parameter_param { shape { dim: 4 } }"), [])
