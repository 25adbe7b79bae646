"""plot-features: known weights give known features; the picture and the feature files are right."""
import struct
from pathlib import Path

import numpy as np
import pytest

from siamese_cli.cli import main
from siamese_cli.errors import SiameseError
from siamese_cli.io.prototxt import parse_text
from siamese_cli.net import Net
from siamese_cli.proto import caffe_pb2
from siamese_cli.tools import plot_features as pf

ROOT = Path(__file__).resolve().parent.parent
DEPLOY = ROOT / "examples/siamese/mnist_siamese.prototxt"
MAGIC = {"png": b"\x89PNG", "pdf": b"%PDF"}


def idx_bytes(array, magic):
    array = np.ascontiguousarray(array, dtype=np.uint8)
    return struct.pack(">HBB", 0, 8, array.ndim) + struct.pack(f">{array.ndim}I", *array.shape) + array.tobytes()


def tiny_deploy(num_output):
    """A deploy net with one 784 -> num_output InnerProduct, input batch 10,000 as in the example."""
    return f'''name: "tiny"
        input: "data" input_shape {{ dim: 10000 dim: 1 dim: 28 dim: 28 }}
        layer {{ name: "feat" type: "InnerProduct" bottom: "data" top: "feat"
                 inner_product_param {{ num_output: {num_output} }} }}'''


@pytest.fixture
def tiny(tmp_path):
    """(model, weights, images, labels paths, W, b, pixels, digits) for a 784 -> 2 net with known weights."""
    rng = np.random.default_rng(7)
    model = tmp_path / "tiny.prototxt"
    model.write_text(tiny_deploy(2))
    net = Net(model, phase="TEST")
    weight = rng.standard_normal((2, 784)).astype(np.float32) * 0.1
    bias = np.array([0.5, -2.0], np.float32)
    net.params["feat"][0].data[...] = weight
    net.params["feat"][1].data[...] = bias
    weights = tmp_path / "tiny.caffemodel"
    net.save(weights)
    pixels = rng.integers(0, 256, (37, 28, 28), dtype=np.uint8)
    digits = (np.arange(37) % 10).astype(np.uint8)
    images, labels = tmp_path / "images-idx3-ubyte", tmp_path / "labels-idx1-ubyte"
    images.write_bytes(idx_bytes(pixels, 2051))
    labels.write_bytes(idx_bytes(digits, 2049))
    return model, weights, images, labels, weight, bias, pixels, digits


def expected_features(pixels, weight, bias):
    return (pixels.reshape(len(pixels), -1).astype(np.float32) / np.float32(256)) @ weight.T + bias


def test_saved_features_are_images_over_256_times_weights(tiny, tmp_path):
    model, weights, images, labels, weight, bias, pixels, digits = tiny
    out, saved = tmp_path / "f.png", tmp_path / "f.npy"
    features, got_labels = pf.plot_features(model=model, weights=weights, images=images, labels=labels, out=out,
                                            save_features=saved, batch_size=10)  # 37 = 3 full batches + 7
    want = expected_features(pixels, weight, bias)
    np.testing.assert_allclose(features, want, rtol=1e-5, atol=1e-5)
    table = np.load(saved)
    assert table.dtype == np.float32 and table.shape == (37, 3)
    np.testing.assert_array_equal(table[:, 0], digits)
    np.testing.assert_allclose(table[:, 1:], want, rtol=1e-5, atol=1e-5)
    np.testing.assert_array_equal(got_labels, digits)
    assert out.read_bytes().startswith(b"\x89PNG")


def test_csv_features_through_the_cli(tiny, tmp_path):
    model, weights, images, labels, weight, bias, pixels, digits = tiny
    saved = tmp_path / "f.csv"
    assert main(["plot-features", "--model", str(model), "--weights", str(weights), "--images", str(images),
                 "--labels", str(labels), "--out", str(tmp_path / "f.svg"), "--save-features", str(saved)]) == 0
    lines = saved.read_text().splitlines()
    assert lines[0] == "label,feature_1,feature_2" and len(lines) == 38
    table = np.loadtxt(saved, delimiter=",", skiprows=1)
    np.testing.assert_array_equal(table[:, 0], digits)
    np.testing.assert_allclose(table[:, 1:], expected_features(pixels, weight, bias), rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("fmt", ["png", "svg", "pdf"])
def test_each_picture_format(tiny, tmp_path, fmt):
    model, weights, images, labels = tiny[:4]
    out = tmp_path / f"features.{fmt}"
    assert main(["plot-features", "--model", str(model), "--weights", str(weights), "--images", str(images),
                 "--labels", str(labels), "--out", str(out)]) == 0
    head = out.read_bytes()[:600]
    assert b"<svg" in head if fmt == "svg" else head.startswith(MAGIC[fmt])


def test_figure_has_one_colour_per_digit_legend_and_grid():
    rng = np.random.default_rng(0)
    labels = np.repeat(np.arange(10, dtype=np.uint8), 20)
    features = rng.standard_normal((200, 2)).astype(np.float32) + labels[:, None]
    fig = pf.features_figure(features, labels, title="t")
    ax = fig.axes[0]
    assert len(ax.collections) == 10
    colours = {tuple(np.round(c.get_facecolor()[0][:3], 3)) for c in ax.collections}
    assert len(colours) == 10
    assert [t.get_text() for t in ax.get_legend().get_texts()] == [str(d) for d in range(10)]
    assert ax.xaxis.get_gridlines()[0].get_visible()
    assert (ax.get_xlabel(), ax.get_ylabel(), ax.get_title()) == ("feature 1", "feature 2", "t")
    np.testing.assert_allclose(ax.collections[3].get_offsets(), features[labels == 3])


def test_more_than_two_dimensions_are_projected_by_pca():
    rng = np.random.default_rng(1)
    # Variance mostly along two known directions of a 5-D space.
    basis = np.linalg.qr(rng.standard_normal((5, 5)))[0][:, :2]
    coords = rng.standard_normal((500, 2)) * [5.0, 2.0]
    features = (coords @ basis.T + rng.standard_normal((500, 5)) * 0.001 + 3.0).astype(np.float32)
    points, note = pf.project_2d(features)
    assert points.shape == (500, 2)
    assert note.startswith("PCA projection of 5-D features (100% of variance")
    # The projection keeps the distances of the 2-D layout (up to the 0.001 noise).
    d_points = np.linalg.norm(points[:50, None] - points[None, :50], axis=-1)
    d_coords = np.linalg.norm(coords[:50, None] - coords[None, :50], axis=-1)
    np.testing.assert_allclose(d_points, d_coords, atol=0.01)
    fig = pf.features_figure(features, np.zeros(500, np.uint8), title="T")
    assert fig.axes[0].get_title() == "T\n" + note
    assert fig.axes[0].get_xlabel() == "principal component 1"
    assert pf.project_2d(features[:, :2])[1] is None


def test_newest_snapshot_is_the_highest_iteration(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(SiameseError, match="no --weights given"):
        pf.newest_snapshot()
    folder = tmp_path / "examples/siamese"
    folder.mkdir(parents=True)
    for n in (500, 10000, 2000):
        (folder / f"mnist_siamese_iter_{n}.caffemodel").write_bytes(b"")
    (folder / "mnist_siamese_iter_99999.solverstate").write_bytes(b"")
    assert pf.newest_snapshot() == Path("examples/siamese/mnist_siamese_iter_10000.caffemodel")


def test_deploy_batch_is_resized_and_bundled_test_set_is_the_default():
    net = pf.deploy_net(DEPLOY, batch_size=7)
    assert net.blobs["data"].shape == (7, 1, 28, 28) and net.blobs["conv1"].shape[0] == 7
    pixels, digits = pf.load_images()
    assert pixels.shape == (10000, 1, 28, 28) and pixels.dtype == np.float32 and digits.shape == (10000,)
    assert pixels.max() == np.float32(255 / 256) and pixels.min() == 0
    assert list(np.bincount(digits)) == [980, 1135, 1032, 1010, 982, 892, 958, 1028, 974, 1009]
    with pytest.raises(SiameseError, match="--images and --labels together"):
        pf.load_images(images="x")


def test_user_errors(tiny, tmp_path, capsys):
    model, weights, images, labels = tiny[:4]
    base = ["plot-features", "--model", str(model), "--weights", str(weights), "--images", str(images),
            "--labels", str(labels)]
    assert main(base + ["--out", str(tmp_path / "f.jpg")]) == 2
    assert "unknown picture format" in capsys.readouterr().err
    assert main(base + ["--out", str(tmp_path / "f.png"), "--save-features", str(tmp_path / "f.txt")]) == 2
    assert ".npy or .csv" in capsys.readouterr().err
    assert main(base[:5] + ["--images", str(labels), "--labels", str(labels), "--out", str(tmp_path / "f.png")]) == 2
    assert "magic number 2049, expected 2051" in capsys.readouterr().err
    assert not list(tmp_path.glob("f.*"))
    net = Net(parse_text(tiny_deploy(2).replace("dim: 28 dim: 28", "dim: 32 dim: 32"), caffe_pb2.NetParameter()))
    with pytest.raises(SiameseError, match=r"images are 1x28x28 but input \"data\".*takes 1x32x32"):
        pf.compute_features(net, np.zeros((3, 1, 28, 28), np.float32))


def test_show_without_display_still_writes_the_file(tiny, tmp_path, monkeypatch, capsys):
    model, weights, images, labels = tiny[:4]
    monkeypatch.delenv("DISPLAY", raising=False)
    monkeypatch.delenv("WAYLAND_DISPLAY", raising=False)
    out = tmp_path / "f.png"
    pf.plot_features(model=model, weights=weights, images=images, labels=labels, out=out, show=True)
    assert out.read_bytes().startswith(b"\x89PNG")
    assert "no display" in capsys.readouterr().err


def test_higher_dimensional_net_end_to_end(tmp_path):
    """A 784 -> 3 net: saved features keep all three dimensions, the picture is a PCA projection."""
    rng = np.random.default_rng(3)
    model = tmp_path / "tiny3.prototxt"
    model.write_text(tiny_deploy(3))
    net = Net(model, phase="TEST")
    net.params["feat"][0].data[...] = rng.standard_normal((3, 784)).astype(np.float32) * 0.05
    weights = tmp_path / "w.caffemodel"
    net.save(weights)
    pixels, digits = pf.load_images()
    features = pf.compute_features(pf.deploy_net(model, weights, batch_size=64), pixels[:100], batch_size=64)
    assert features.shape == (100, 3)
    np.testing.assert_allclose(features, pixels[:100].reshape(100, -1) @ net.params["feat"][0].data.T, atol=1e-4)


def test_nearest_neighbour_accuracy_counts_hits():
    from siamese_cli.tools.plot_features import nearest_neighbour_accuracy

    features = np.array([[0, 0], [10, 0], [0, 10], [0.5, 0], [9, 1], [10, 9]], np.float32)
    labels = np.array([0, 1, 2, 0, 1, 1], np.uint8)
    # Queries [0.5, 0], [9, 1] and [10, 9] lie nearest to references of digits 0, 1 and 1.
    assert nearest_neighbour_accuracy(features, labels) == 1.0
    labels[5] = 2
    assert nearest_neighbour_accuracy(features, labels) == pytest.approx(2 / 3)
