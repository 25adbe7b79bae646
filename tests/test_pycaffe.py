"""`import caffe`: the siamese notebook's pycaffe cells run unchanged, and caffe.Net maps onto the engine."""
import gzip
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

import caffe
from siamese_cli.data import mnist_files
from siamese_cli.errors import SiameseError
from siamese_cli.io.prototxt import read_net, to_text
from siamese_cli.net import Net as EngineNet

ROOT = Path(__file__).resolve().parent.parent
DEPLOY = ROOT / "examples/siamese/mnist_siamese.prototxt"

# The code cells of Caffe's examples/siamese/mnist_siamese.ipynb, as its users run them. Two changes:
# `%matplotlib inline` is IPython syntax (the Agg backend stands in), and numpy 2 removed the binary
# mode of np.fromstring, so it reads np.frombuffer (the same bytes, the same array).
NOTEBOOK_CELLS = [
    """
import numpy as np
import matplotlib.pyplot as plt

# Make sure that caffe is on the python path:
caffe_root = '../../'  # this file is expected to be in {caffe_root}/examples/siamese
import sys
sys.path.insert(0, caffe_root + 'python')

import caffe
""",
    """
MODEL_FILE = 'mnist_siamese.prototxt'
# decrease if you want to preview during training
PRETRAINED_FILE = 'mnist_siamese_iter_50000.caffemodel'
caffe.set_mode_cpu()
net = caffe.Net(MODEL_FILE, PRETRAINED_FILE, caffe.TEST)
""",
    """
TEST_DATA_FILE = '../../data/mnist/t10k-images-idx3-ubyte'
TEST_LABEL_FILE = '../../data/mnist/t10k-labels-idx1-ubyte'
n = N_IMAGES

with open(TEST_DATA_FILE, 'rb') as f:
    f.read(16) # skip the header
    raw_data = np.frombuffer(f.read(n * 28*28), dtype=np.uint8)

with open(TEST_LABEL_FILE, 'rb') as f:
    f.read(8) # skip the header
    labels = np.frombuffer(f.read(n), dtype=np.uint8)
""",
    """
# reshape and preprocess
caffe_in = raw_data.reshape(n, 1, 28, 28) * 0.00390625 # manually scale data instead of using `caffe.io.Transformer`
out = net.forward_all(data=caffe_in)
""",
    """
feat = out['feat']
f = plt.figure(figsize=(16,9))
c = ['#ff0000', '#ffff00', '#00ff00', '#00ffff', '#0000ff',
     '#ff00ff', '#990000', '#999900', '#009900', '#009999']
for i in range(10):
    plt.plot(feat[labels==i,0].flatten(), feat[labels==i,1].flatten(), '.', c=c[i])
plt.legend(['0', '1', '2', '3', '4', '5', '6', '7', '8', '9'])
plt.grid()
plt.show()
""",
]


def random_weights(net, seed):
    """Seeded weights of fan-in scale for every param blob of a caffe.Net."""
    rng = np.random.default_rng(seed)
    for blobs in net.params.values():
        weight = blobs[0].data
        weight[...] = rng.uniform(-1, 1, weight.shape) * np.sqrt(3 / weight[0].size)
        blobs[1].data[...] = rng.uniform(-0.1, 0.1, blobs[1].shape)


@pytest.fixture
def caffe_root(tmp_path):
    """A Caffe-like tree: examples/siamese with the deploy net (batch 128) and weights, data/mnist raw IDX."""
    example = tmp_path / "examples" / "siamese"
    example.mkdir(parents=True)
    deploy = read_net(DEPLOY)
    deploy.input_shape[0].dim[0] = 128  # the page's 10,000 in one batch would hold ~1 GB of activations
    (example / "mnist_siamese.prototxt").write_text(to_text(deploy))
    net = caffe.Net(str(example / "mnist_siamese.prototxt"), caffe.TEST)
    random_weights(net, seed=5)
    net.save(str(example / "mnist_siamese_iter_50000.caffemodel"))
    data = tmp_path / "data" / "mnist"
    data.mkdir(parents=True)
    for path in mnist_files("test"):
        raw = gzip.decompress(Path(path).read_bytes())
        (data / Path(path).name.removesuffix(".gz")).write_bytes(raw)
    return tmp_path


def test_siamese_notebook_cells_run_and_give_the_engines_features(caffe_root, monkeypatch):
    import matplotlib

    matplotlib.use("Agg")
    monkeypatch.chdir(caffe_root / "examples" / "siamese")
    monkeypatch.setattr(sys, "path", list(sys.path))
    scope = {"N_IMAGES": 300}  # 300 = two full batches of 128 and one padded
    for cell in NOTEBOOK_CELLS:
        exec(compile(cell, "<notebook cell>", "exec"), scope)
    feat, labels = scope["feat"], scope["labels"]
    assert feat.shape == (300, 2) and labels.shape == (300,)
    assert len(scope["plt"].gca().lines) == 10

    # The same features straight from the engine, one batch of 300 at the input's own size.
    engine = EngineNet("mnist_siamese.prototxt", weights="mnist_siamese_iter_50000.caffemodel", phase="TEST")
    pixels = scope["raw_data"].reshape(300, 1, 28, 28).astype(np.float32) * np.float32(0.00390625)
    want = engine.forward(data=pixels)["feat"]
    np.testing.assert_allclose(feat, want, rtol=1e-5, atol=1e-6)
    assert np.abs(feat).max() > 0.01  # real features, not zeros from unloaded weights
    scope["plt"].close("all")


def small_net(tmp_path):
    text = """
name: "small"
force_backward: true  # no loss here: as in Caffe, backward runs only when forced
input: "x"
input_shape { dim: 4 dim: 3 }
layer { name: "ip" type: "InnerProduct" bottom: "x" top: "y"
        inner_product_param { num_output: 2 weight_filler { type: "gaussian" std: 1 } } }
layer { name: "relu" type: "ReLU" bottom: "y" top: "y" }
layer { name: "scale" type: "Power" bottom: "y" top: "z" power_param { scale: 3 } }
"""
    path = tmp_path / "small.prototxt"
    path.write_text(text)
    return str(path)


def test_net_forward_backward_ranges_and_views(tmp_path):
    caffe.set_random_seed(3)
    net = caffe.Net(small_net(tmp_path), caffe.TEST)
    assert net._layer_names == ["ip", "relu", "scale"]
    assert net.inputs == ["x"] and net.outputs == ["z"]
    assert net.top_names["relu"] == ["y"] and net.bottom_names["scale"] == ["y"]
    assert [layer.type for layer in net.layers] == ["InnerProduct", "ReLU", "Power"]
    assert list(net.params) == ["ip"] and [b.shape for b in net.params["ip"]] == [(2, 3), (2,)]
    assert net.layers[0].blobs[0].data is net.params["ip"][0].data

    x = np.arange(12, dtype=np.float32).reshape(4, 3) / 10 - 0.5
    weight, bias = net.params["ip"][0].data, net.params["ip"][1].data
    bias[...] = [0.1, -0.2]
    y = np.maximum(x @ weight.T + bias, 0)
    out = net.forward(x=x)
    np.testing.assert_allclose(out["z"], 3 * y, rtol=1e-6)
    # end= returns that layer's tops; start= reruns from a layer on the blobs already there
    assert set(net.forward(end="ip")) == {"y"}
    net.blobs["y"].data[...] = 1.0
    np.testing.assert_allclose(net.forward(start="scale")["z"], 3.0)

    net.forward(x=x)
    diffs = net.backward(z=np.ones((4, 2), np.float32))
    assert set(diffs) == {"x"}
    mask = (y > 0).astype(np.float32)
    np.testing.assert_allclose(net.params["ip"][0].diff, (3 * mask).T @ x, rtol=1e-5)
    got = net.backward(diffs=["y"], start="scale", end="scale", z=np.full((4, 2), 2, np.float32))
    np.testing.assert_allclose(got["y"], 6.0)

    blob = net.blobs["x"]
    assert (blob.num, blob.channels, blob.height, blob.width, blob.count) == (4, 3, 1, 1, 12)
    blob.reshape(2, 3)
    net.reshape()
    assert net.blobs["z"].shape == (2, 2)


def test_forward_all_pads_the_last_batch_and_trims_it(tmp_path):
    net = caffe.Net(small_net(tmp_path), caffe.TEST)
    x = np.random.default_rng(0).standard_normal((10, 3)).astype(np.float32)
    out = net.forward_all(x=x, blobs=["y"])
    assert out["z"].shape == (10, 2) and out["y"].shape == (10, 2)
    np.testing.assert_allclose(out["z"], 3 * out["y"], rtol=1e-6)
    one = net.forward(x=x[8:10])["z"]  # another batch size reshapes the net
    np.testing.assert_allclose(out["z"][8:], one, rtol=1e-6)
    blobs, grads = net.forward_backward_all(x=x, z=np.ones((10, 2), np.float32))
    assert blobs["z"].shape == (10, 2) and grads["x"].shape == (10, 3)


def test_constructor_forms_save_copy_from_and_share_with(tmp_path):
    model = small_net(tmp_path)
    a = caffe.Net(model, caffe.TRAIN)
    weights = str(tmp_path / "w.caffemodel")
    a.save(weights)
    for b in (caffe.Net(model, weights, caffe.TEST), caffe.Net(model, caffe.TEST, weights=weights),
              caffe.Net(model, weights=weights, phase=caffe.TEST)):
        np.testing.assert_array_equal(b.params["ip"][0].data, a.params["ip"][0].data)
    c = caffe.Net(model, caffe.TEST)
    c.copy_from(weights)
    np.testing.assert_array_equal(c.params["ip"][0].data, a.params["ip"][0].data)
    d = caffe.Net(model, caffe.TEST)
    d.share_with(a)
    a.params["ip"][0].data[...] = 7
    assert (d.params["ip"][0].data == 7).all()
    with pytest.raises(TypeError, match="phase"):
        caffe.Net(model)
    with pytest.raises(SiameseError, match='no layer of that name'):
        c.forward(start="nope")


def test_gpu_mode_is_accepted_with_one_notice(capsys):
    caffe.set_mode_cpu()
    caffe.set_device(0)
    caffe.set_mode_gpu()
    caffe.set_mode_gpu()
    notices = capsys.readouterr().err.count("computes on the CPU")
    assert notices <= 1  # one per process (an earlier test may have seen it already)


def test_module_surface():
    assert "Python" in caffe.layer_type_list() and "Convolution" in caffe.layer_type_list()
    from caffe.proto import caffe_pb2
    from siamese_cli.proto import caffe_pb2 as engine_pb2

    assert caffe_pb2.NetParameter is engine_pb2.NetParameter
    assert (caffe.TRAIN, caffe.TEST) == (0, 1)
    assert issubclass(caffe.SGDSolver, caffe.solvers.Solver)


def test_draw_net_to_file_writes_the_graph(tmp_path):
    import caffe.draw
    from caffe.proto import caffe_pb2
    from google.protobuf import text_format

    net_param = text_format.Merge(open(DEPLOY).read(), caffe_pb2.NetParameter())
    caffe.draw.draw_net_to_file(net_param, str(tmp_path / "net.dot"), "TB", caffe.TEST)
    dot = (tmp_path / "net.dot").read_text()
    assert "digraph" in dot and "conv1" in dot and "rankdir=TB" in dot.replace('"', "").replace(" ", "")


def test_a_real_pycaffe_earlier_on_the_path_wins(tmp_path):
    fake = tmp_path / "caffe"
    fake.mkdir()
    (fake / "__init__.py").write_text("REAL = True\n")
    env = dict(os.environ, PYTHONPATH=str(tmp_path))
    code = textwrap.dedent("""
        import caffe
        print(getattr(caffe, "REAL", False))
    """)
    result = subprocess.run([sys.executable, "-c", code], env=env, cwd=tmp_path, capture_output=True, text=True)
    assert result.stdout.strip() == "True", result.stderr
