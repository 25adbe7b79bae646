"""RNN and LSTM: Caffe's blob layout, outputs against a per-stream float64 loop written from Caffe's
unrolled-net definition, the carried and exposed states, gradients by central differences."""
import numpy as np
import pytest
from google.protobuf import text_format

from gradcheck import check_gradients, make_blobs
from siamese_cli.blob import Blob
from siamese_cli.errors import SiameseError
from siamese_cli.layers import layer_class
from siamese_cli.proto import caffe_pb2

RNG = np.random.default_rng(5)
FILLERS = 'weight_filler { type: "uniform" min: -0.6 max: 0.6 } bias_filler { type: "uniform" min: -0.3 max: 0.3 }'


def make(type_name, hidden=3, expose=False, seed=0):
    param = caffe_pb2.LayerParameter(name="rec", type=type_name)
    text_format.Merge(f"recurrent_param {{ num_output: {hidden} expose_hidden: {str(expose).lower()} {FILLERS} }}", param)
    return layer_class(type_name)(param, phase="TRAIN", rng=np.random.default_rng(seed))


def run(layer, bottom, num_top=1, setup=True):
    top = [Blob() for _ in range(num_top)]
    if setup:
        layer.check_counts(bottom, top)
        layer.setup(bottom, top)
    layer.reshape(bottom, top)
    layer.forward(bottom, top)
    return top


def sigmoid(v):
    return 1 / (1 + np.exp(-v))


def rnn_reference(blobs, x, cont, static=None, h0=None):
    """o[t, n] for each stream n, one step at a time, from Caffe's RNN net definition."""
    w_xh, b_h = blobs[0], blobs[1]
    w_static = blobs[2] if static is not None else None
    w_hh, w_ho, b_o = blobs[-3:]
    steps, streams = cont.shape
    hidden = b_h.size
    out = np.zeros((steps, streams, hidden))
    final = np.zeros((streams, hidden))
    for n in range(streams):
        h = np.zeros(hidden) if h0 is None else h0[n]
        for t in range(steps):
            pre = w_xh @ x[t, n].ravel() + b_h + w_hh @ (cont[t, n] * h)
            if static is not None:
                pre = pre + w_static @ static[n].ravel()
            h = np.tanh(pre)
            out[t, n] = np.tanh(w_ho @ h + b_o)
        final[n] = h
    return out, final


def lstm_reference(blobs, x, cont, static=None, h0=None, c0=None):
    w_xc, b_c, w_hc = blobs[0], blobs[1], blobs[-1]
    w_static = blobs[2] if static is not None else None
    steps, streams = cont.shape
    hidden = w_hc.shape[1]
    out = np.zeros((steps, streams, hidden))
    finals = np.zeros((streams, hidden)), np.zeros((streams, hidden))
    for n in range(streams):
        h = np.zeros(hidden) if h0 is None else h0[n]
        c = np.zeros(hidden) if c0 is None else c0[n]
        for t in range(steps):
            a = w_xc @ x[t, n].ravel() + b_c + w_hc @ (cont[t, n] * h)
            if static is not None:
                a = a + w_static @ static[n].ravel()
            i, f, o, g = (a[k * hidden:(k + 1) * hidden] for k in range(4))
            c = cont[t, n] * sigmoid(f) * c + sigmoid(i) * np.tanh(g)
            h = sigmoid(o) * np.tanh(c)
            out[t, n] = h
        finals[0][n], finals[1][n] = h, c
    return out, finals


def sequences(steps=4, streams=2, shape=(2, 3), static=False):
    x = RNG.standard_normal((steps, streams) + shape).astype(np.float32)
    cont = np.ones((steps, streams), np.float32)
    cont[0] = 0
    cont[2, 1] = 0  # stream 1 starts a new sequence at step 2
    arrays = [x, cont]
    if static:
        arrays.append(RNG.standard_normal((streams, 2)).astype(np.float32))
    return arrays


def params(layer):
    return [blob.data.astype(np.float64) for blob in layer.blobs]


@pytest.mark.parametrize("kind,shapes", [
    ("RNN", [(3, 6), (3,), (3, 3), (3, 3), (3,)]),
    ("LSTM", [(12, 6), (12,), (12, 3)]),
])
def test_blob_layout_is_caffes(kind, shapes):
    layer = make(kind)
    run(layer, make_blobs(*sequences()))
    assert [blob.shape for blob in layer.blobs] == shapes
    layer = make(kind)
    run(layer, make_blobs(*sequences(static=True)))
    with_static = shapes[:2] + [(shapes[0][0], 2)] + shapes[2:]
    assert [blob.shape for blob in layer.blobs] == with_static


@pytest.mark.parametrize("kind,reference", [("RNN", rnn_reference), ("LSTM", lstm_reference)])
@pytest.mark.parametrize("static", [False, True])
def test_outputs_and_gradients(kind, reference, static):
    arrays = sequences(static=static)
    layer = make(kind)
    (top,) = run(layer, make_blobs(*arrays))
    assert top.shape == (4, 2, 3)
    x, cont = (a.astype(np.float64) for a in arrays[:2])
    expected, _ = reference(params(layer), x, cont, arrays[2].astype(np.float64) if static else None)
    np.testing.assert_allclose(top.data, expected, rtol=1e-5, atol=1e-6)
    check = [0, 2] if static else [0]
    check_gradients(make(kind), make_blobs(*arrays), check_bottom=check, step=1e-3)
    assert not layer.allow_backward(1)


@pytest.mark.parametrize("kind,reference", [("RNN", rnn_reference), ("LSTM", lstm_reference)])
def test_state_carries_into_the_next_forward(kind, reference):
    x, cont = sequences()
    layer = make(kind)
    bottom = make_blobs(x, cont)
    (top,) = run(layer, bottom)
    first = top.data.copy()
    bottom[1].data[...] = 1  # the second batch continues the sequences
    layer.reshape(bottom, [top])
    layer.forward(bottom, [top])
    w = params(layer)
    if kind == "RNN":
        _, h = reference(w, x.astype(np.float64), cont.astype(np.float64))
        expected, _ = reference(w, x.astype(np.float64), np.ones_like(cont, np.float64), h0=h)
    else:
        _, (h, c) = reference(w, x.astype(np.float64), cont.astype(np.float64))
        expected, _ = reference(w, x.astype(np.float64), np.ones_like(cont, np.float64), h0=h, c0=c)
    np.testing.assert_allclose(top.data, expected, rtol=1e-5, atol=1e-6)
    assert not np.allclose(top.data, first)


@pytest.mark.parametrize("kind,reference", [("RNN", rnn_reference), ("LSTM", lstm_reference)])
def test_expose_hidden(kind, reference):
    x, cont = sequences()
    cont[0] = 1  # the given initial states count
    states = len(layer_class(kind).states)
    initial = [RNG.standard_normal((1, 2, 3)).astype(np.float32) for _ in range(states)]
    layer = make(kind, expose=True)
    bottom = make_blobs(x, cont, *initial)
    tops = run(layer, bottom, num_top=1 + states)
    assert [t.shape for t in tops] == [(4, 2, 3)] + [(1, 2, 3)] * states
    w = params(layer)
    given = {"h0": initial[0][0].astype(np.float64)}
    if kind == "LSTM":
        given["c0"] = initial[1][0].astype(np.float64)
    expected, finals = reference(w, x.astype(np.float64), cont.astype(np.float64), **given)
    np.testing.assert_allclose(tops[0].data, expected, rtol=1e-5, atol=1e-6)
    finals = [finals] if kind == "RNN" else list(finals)
    for blob, final in zip(tops[1:], finals):
        np.testing.assert_allclose(blob.data[0], final, rtol=1e-5, atol=1e-6)
    assert not layer.allow_backward(1) and all(layer.allow_backward(k) for k in range(2, 2 + states))
    # The full gradient: from the final-state tops too, and into the initial states (Caffe 1.0 drops both).
    check_gradients(make(kind, expose=True), make_blobs(x, cont, *initial), top=[Blob() for _ in range(1 + states)],
                    check_bottom=[0] + list(range(2, 2 + states)), step=1e-3)


def test_counts_and_shapes_are_checked():
    x, cont = sequences()
    with pytest.raises(SiameseError, match="takes bottoms x, cont"):
        run(make("LSTM", expose=True), make_blobs(x, cont, np.zeros((1, 2, 3))), num_top=3)
    with pytest.raises(SiameseError, match="cont .bottom 1. must be T x N"):
        run(make("RNN"), make_blobs(x, cont[:3]))
    layer = make("RNN")
    run(layer, make_blobs(x, cont))
    with pytest.raises(SiameseError, match="keep its 4 time steps"):
        run(layer, make_blobs(x[:3], cont[:3]), setup=False)
    with pytest.raises(SiameseError, match="num_output must be positive"):
        run(make("LSTM", hidden=0), make_blobs(x, cont))


def test_lstm_in_a_net_trains_and_its_weights_round_trip(tmp_path):
    from siamese_cli.net import Net

    text = f"""
      input: "x" input_shape {{ dim: 5 dim: 3 dim: 2 }}
      input: "cont" input_shape {{ dim: 5 dim: 3 }}
      input: "target" input_shape {{ dim: 5 dim: 3 dim: 1 }}
      layer {{ name: "lstm" type: "LSTM" bottom: "x" bottom: "cont" top: "h"
              recurrent_param {{ num_output: 4 {FILLERS} }} }}
      layer {{ name: "out" type: "InnerProduct" bottom: "h" top: "y"
              inner_product_param {{ num_output: 1 axis: 2 weight_filler {{ type: "xavier" }} }} }}
      layer {{ name: "loss" type: "EuclideanLoss" bottom: "y" bottom: "target" top: "loss" }}
    """
    param = text_format.Parse(text, caffe_pb2.NetParameter())
    net = Net(param, phase="TRAIN", seed=1)
    assert [b.shape for b in net.params["lstm"]] == [(16, 2), (16,), (16, 4)]
    x = RNG.standard_normal((5, 3, 2)).astype(np.float32)
    cont = np.ones((5, 3), np.float32)
    cont[0] = 0
    target = np.cumsum(x[..., :1], axis=0)  # a running sum: needs the memory
    net.blobs["x"].data[...] = x
    net.blobs["cont"].data[...] = cont
    net.blobs["target"].data[...] = target
    losses = []
    for _ in range(60):
        net.clear_param_diffs()
        losses.append(net.forward_backward())
        for p in net.learnable_params:
            p.blob.data -= np.float32(0.1) * p.blob.diff
    assert losses[-1] < 0.5 * losses[0]
    assert net.propagate_down[0] == [False, False]  # inputs need no gradient here; cont never takes one

    path = tmp_path / "lstm.caffemodel"
    path.write_bytes(net.to_proto().SerializeToString())
    again = Net(param, phase="TRAIN", seed=2, weights=path)
    for a, b in zip(net.params["lstm"], again.params["lstm"]):
        np.testing.assert_array_equal(a.data, b.data)
