"""siamese evaluate: the metrics against brute force from their definitions, the CLI lines, the JSON, the plot."""
import json
import struct
from itertools import product

import numpy as np
import pytest

from siamese_cli import metrics
from siamese_cli.cli import main
from siamese_cli.io.db import open_writer
from siamese_cli.net import Net
from siamese_cli.proto import caffe_pb2
from siamese_cli.tools import evaluate as ev
from siamese_cli.tools.plot_features import nearest_neighbour_accuracy


# ---- brute force, straight from the definitions ---------------------------------------------
def auc_by_counting(d, similar):
    """P(a similar pair is closer than a dissimilar one), a tie counting one half."""
    pos, neg = d[similar], d[~similar]
    wins = sum(1.0 if a < b else 0.5 if a == b else 0.0 for a, b in product(pos, neg))
    return wins / (len(pos) * len(neg))


def rates(d, similar, t):
    """(false positive rate, false negative rate) of "similar when d <= t", by counting."""
    fp = sum(1 for x, s in zip(d, similar) if x <= t and not s)
    fn = sum(1 for x, s in zip(d, similar) if x > t and s)
    return fp / (~similar).sum(), fn / similar.sum()


def eer_by_sweeping(d, similar):
    """Sweep every threshold; where FNR - FPR changes sign, meet FPR = FNR on the segment between."""
    points = [rates(d, similar, t) for t in [-np.inf] + sorted(set(d))]
    for (a1, b1), (a2, b2) in zip(points, points[1:]):
        if a1 == b1:
            return a1
        if (b1 - a1) > 0 >= (b2 - a2):
            s = (b1 - a1) / ((b1 - a1) - (b2 - a2))
            return a1 + s * (a2 - a1)
    raise AssertionError("no crossing")


def best_accuracy_by_sweeping(d, similar):
    cuts = [-np.inf] + sorted(set(d))
    return max(sum(1 for x, s in zip(d, similar) if (x <= t) == s) / len(d) for t in cuts)


def retrieval_by_definition(features, labels):
    """P@1, R-precision and MAP@R (Musgrave et al. 2020), ranking by distance then index, lone queries left out."""
    n = len(labels)
    p1, rp, mapr, queries = 0.0, 0.0, 0.0, 0
    for q in range(n):
        r = sum(1 for j in range(n) if j != q and labels[j] == labels[q])
        if r == 0:
            continue
        queries += 1
        others = sorted((float(((features[j] - features[q]) ** 2).sum()), j) for j in range(n) if j != q)
        rel = [1 if labels[j] == labels[q] else 0 for _, j in others]
        p1 += rel[0]
        rp += sum(rel[:r]) / r
        mapr += sum(sum(rel[:i]) / i * rel[i - 1] for i in range(1, r + 1)) / r
    return {"precision_at_1": p1 / queries, "r_precision": rp / queries, "map_at_r": mapr / queries}


# ---- the metrics -------------------------------------------------------------------------
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_pair_metrics_equal_brute_force_with_ties(seed):
    rng = np.random.default_rng(seed)
    similar = rng.random(60) < 0.3
    d = np.round(rng.gamma(2.0, 1.0, 60) - similar * 1.2, 1).clip(0)  # rounded: many ties, some across labels
    assert metrics.roc_auc(d, similar) == pytest.approx(auc_by_counting(d, similar), abs=1e-12)
    eer, _ = metrics.equal_error_rate(d, similar)
    assert eer == pytest.approx(eer_by_sweeping(d, similar), abs=1e-12)
    accuracy, threshold = metrics.best_threshold(d, similar)
    assert accuracy == pytest.approx(best_accuracy_by_sweeping(d, similar), abs=1e-12)
    assert np.mean((d <= threshold) == similar) == pytest.approx(accuracy, abs=1e-12)


def test_pair_metrics_known_values():
    d = np.array([0.1, 0.2, 0.3, 0.4])
    similar = np.array([True, False, True, False])
    # pairs (similar, dissimilar): (0.1,0.2) (0.1,0.4) (0.3,0.4) won, (0.3,0.2) lost -> 3/4
    assert metrics.roc_auc(d, similar) == 0.75
    assert metrics.equal_error_rate(d, similar)[0] == 0.5
    accuracy, threshold = metrics.best_threshold(d, similar)
    assert accuracy == 0.75 and threshold == pytest.approx(0.15)
    separable = metrics.pair_metrics(np.array([0.1, 0.2, 0.9, 1.0]), np.array([1, 1, 0, 0]))
    assert separable == {"pairs": 4, "roc_auc": 1.0, "eer": 0.0, "best_threshold_accuracy": 1.0,
                         "best_threshold": pytest.approx(0.55)}
    with pytest.raises(ValueError, match="both"):
        metrics.roc_auc(d, np.ones(4, bool))


@pytest.mark.parametrize("block", [None, 1, 7])
def test_retrieval_metrics_equal_the_definition(block):
    rng = np.random.default_rng(3)
    labels = rng.integers(0, 5, 40)
    labels[0] = 9  # a lone query: left out
    features = rng.integers(0, 4, (40, 2)).astype(np.float32)  # a 4 x 4 grid: ties everywhere
    got = metrics.retrieval_metrics(features, labels, block=block)
    want = retrieval_by_definition(features, labels)
    for key in want:
        assert got[key] == pytest.approx(want[key], abs=1e-12), key


def test_retrieval_metrics_known_values():
    features = np.array([[0.0], [3.0], [10.0], [11.0], [6.0]], np.float32)
    labels = np.array([0, 0, 1, 1, 1])
    got = metrics.retrieval_metrics(features, labels)
    # query 0 (R=1): item 1 first, a hit. Query 1 (R=1): items 0 and 4 tie at 3, the lower index (0) first: a hit.
    # Queries 2 and 3 (R=2): both same-class items first. Query 4 (R=2): item 1 (miss), then item 2 (hit):
    # R-precision 1/2, AP@R = (0 + 1/2) / 2.
    assert got["precision_at_1"] == pytest.approx(4 / 5)
    assert got["r_precision"] == pytest.approx(4.5 / 5)
    assert got["map_at_r"] == pytest.approx(4.25 / 5)


# ---- the command ---------------------------------------------------------------------------
def _idx(array, magic):
    array = np.ascontiguousarray(array, np.uint8)
    return struct.pack(">HBB", 0, 8, array.ndim) + struct.pack(f">{array.ndim}I", *array.shape) + array.tobytes()


@pytest.fixture
def setup(tmp_path):
    """A 784 -> 3 deploy net with known weights, a 40-pair LMDB, 30 labelled images."""
    rng = np.random.default_rng(11)
    model = tmp_path / "tiny.prototxt"
    model.write_text('name: "tiny" input: "data" input_shape { dim: 10000 dim: 1 dim: 28 dim: 28 } '
                     'layer { name: "feat" type: "InnerProduct" bottom: "data" top: "feat" '
                     'inner_product_param { num_output: 3 } }')
    net = Net(model, phase="TEST")
    weight = rng.standard_normal((3, 784)).astype(np.float32) * 0.05
    net.params["feat"][0].data[...] = weight
    net.params["feat"][1].data[...] = [0.5, -1.0, 2.0]
    weights = tmp_path / "tiny.caffemodel"
    net.save(weights)
    pairs = rng.integers(0, 256, (40, 2, 28, 28), dtype=np.uint8)
    similar = np.arange(40) % 3 == 0
    db = tmp_path / "pairs_lmdb"
    with open_writer(db, "lmdb") as writer:
        writer.put_batch([(b"%08d" % k, caffe_pb2.Datum(channels=2, height=28, width=28, data=pairs[k].tobytes(),
                                                       label=int(similar[k])).SerializeToString())
                          for k in range(40)])
    pixels = rng.integers(0, 256, (30, 28, 28), dtype=np.uint8)
    digits = (np.arange(30) % 4).astype(np.uint8)
    images, labels = tmp_path / "img-idx3-ubyte", tmp_path / "lab-idx1-ubyte"
    images.write_bytes(_idx(pixels, 2051))
    labels.write_bytes(_idx(digits, 2049))

    def embed(x):
        return (x.reshape(len(x), -1).astype(np.float64) / 256) @ weight.T.astype(np.float64) + [0.5, -1.0, 2.0]

    distances = np.linalg.norm(embed(pairs[:, 0]) - embed(pairs[:, 1]), axis=1)
    return dict(model=model, weights=weights, db=db, images=images, labels=labels, similar=similar,
                distances=distances, features=embed(pixels), digits=digits)


def test_cli_prints_one_line_per_metric_and_writes_the_json(setup, tmp_path, capsys):
    s = setup
    out_json, out_png = tmp_path / "m.json", tmp_path / "roc.png"
    assert main(["evaluate", "--model", str(s["model"]), "--weights", str(s["weights"]), "--pairs", str(s["db"]),
                 "--images", str(s["images"]), "--labels", str(s["labels"]), "--json", str(out_json),
                 "--plot", str(out_png)]) == 0
    lines = capsys.readouterr().out.splitlines()
    keys = ["pairs", "roc_auc", "eer", "best_threshold_accuracy", "best_threshold", "images", "precision_at_1",
            "r_precision", "map_at_r", "knn_accuracy"]
    assert [line.split(" = ")[0] for line in lines[:len(keys)]] == keys
    result = json.loads(out_json.read_text())
    assert set(keys) <= set(result)
    d, similar = s["distances"], s["similar"]
    assert result["pairs"] == 40 and lines[0] == "pairs = 40"
    assert result["roc_auc"] == pytest.approx(auc_by_counting(d, similar), abs=1e-6)
    assert result["eer"] == pytest.approx(eer_by_sweeping(d, similar), abs=1e-6)
    assert result["best_threshold_accuracy"] == pytest.approx(best_accuracy_by_sweeping(d, similar), abs=1e-6)
    assert f"roc_auc = {result['roc_auc']:.4f}" in lines
    want = retrieval_by_definition(s["features"], s["digits"])
    for key in want:
        assert result[key] == pytest.approx(want[key], abs=1e-6), key
    assert result["knn_accuracy"] == nearest_neighbour_accuracy(s["features"].astype(np.float32), s["digits"])
    assert result["images"] == 30


def test_plot_is_a_png_with_both_panels(setup, tmp_path):
    s = setup
    fig = ev.evaluation_figure(s["distances"], s["similar"], title="t")
    assert len(fig.axes) == 2
    assert fig.axes[0].get_xlabel().startswith("false positive rate")
    assert fig.axes[1].get_xlabel().startswith("Euclidean distance")
    assert len(fig.axes[1].patches) > 0  # the histogram bars
    out = tmp_path / "p.png"
    from siamese_cli.tools.figures import save_figure
    save_figure(fig, out)
    payload = out.read_bytes()
    assert payload.startswith(b"\x89PNG\r\n\x1a\n")
    width, height = struct.unpack(">II", payload[16:24])
    assert width > 1.8 * height > 500  # two panels side by side


def test_a_db_of_single_images_is_refused(setup, tmp_path, capsys):
    s = setup
    db = tmp_path / "single_lmdb"
    with open_writer(db, "lmdb") as writer:
        writer.put_batch([(b"00000000", caffe_pb2.Datum(channels=1, height=28, width=28, data=bytes(784),
                                                        label=3).SerializeToString())])
    assert main(["evaluate", "--model", str(s["model"]), "--weights", str(s["weights"]), "--pairs", str(db)]) == 2
    assert "1 channel(s); a pair DB holds two images per record" in capsys.readouterr().err
