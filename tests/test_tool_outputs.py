"""plot-features, plot-log and draw-net: each says what it wrote where, writes beside its input by default,
checks the output path before the work, and turns every write failure into `error: FILE: ...` with exit 2."""
import os
import shutil
from pathlib import Path

import numpy as np
import pytest

from siamese_cli.cli import build_parser, main
from siamese_cli.io.prototxt import parse_text, read_net
from siamese_cli.net import Net
from siamese_cli.proto import caffe_pb2
from siamese_cli.tools import draw_net as dn
from siamese_cli.tools import plot_features as pf

ROOT = Path(__file__).resolve().parent.parent
TRAIN_TEST = ROOT / "examples/siamese/mnist_siamese_train_test.prototxt"
DEPLOY = ROOT / "examples/siamese/mnist_siamese.prototxt"
needs_dot = pytest.mark.skipif(shutil.which("dot") is None, reason="Graphviz's dot is not installed")
needs_dev_full = pytest.mark.skipif(not os.path.exists("/dev/full"), reason="no /dev/full here")

LOG = """I1129 02:43:50.1 1 solver.py:250] Iteration 0, Testing net (#0)
I1129 02:43:51.1 1 solver.py:320]     Test net output #0: loss = 0.2 (* 1 = 0.2 loss)
I1129 02:43:51.2 1 solver.py:210] Iteration 0 (0 iter/s, 0.1s/100 iters), loss = 0.25
I1129 02:43:52.1 1 solver.py:210] Iteration 100 (13.7 iter/s, 7.3s/100 iters), loss = 0.05
"""


def full_disk(tmp_path, name):
    """A path with a picture's extension that writes into /dev/full (no space left)."""
    link = tmp_path / name
    link.symlink_to("/dev/full")
    return link


def blocked(tmp_path, name):
    """A path whose folder is a regular file."""
    (tmp_path / "afile").write_text("x")
    return tmp_path / "afile" / name


def one_error_line(capsys, path):
    err = capsys.readouterr().err
    errors = [line for line in err.splitlines() if "error" in line.lower() or "Traceback" in line]
    assert len(errors) == 1 and errors[0].startswith(f"error: {path}: cannot write: "), err
    return errors[0]


@pytest.fixture
def tiny(tmp_path):
    """(model, weights, images, labels) of a 784 -> 2 deploy net and 6 digits."""
    model = tmp_path / "tiny.prototxt"
    model.write_text('input: "data" input_shape { dim: 10 dim: 1 dim: 28 dim: 28 }\n'
                     'layer { name: "feat" type: "InnerProduct" bottom: "data" top: "feat"\n'
                     '  inner_product_param { num_output: 2 weight_filler { type: "gaussian" std: 0.1 } } }\n')
    weights = tmp_path / "run" / "tiny_iter_40.caffemodel"
    weights.parent.mkdir()
    Net(model, seed=3).save(weights)
    rng = np.random.default_rng(0)
    images, labels = tmp_path / "images.idx", tmp_path / "labels.idx"
    images.write_bytes(bytes([0, 0, 8, 3, 0, 0, 0, 6, 0, 0, 0, 28, 0, 0, 0, 28]) + rng.bytes(6 * 784))
    labels.write_bytes(bytes([0, 0, 8, 1, 0, 0, 0, 6]) + bytes([0, 1, 2, 0, 1, 2]))
    return ["plot-features", "--model", str(model), "--weights", str(weights), "--images", str(images),
            "--labels", str(labels)]


# ---- plot-features ----------------------------------------------------------------
def test_plot_features_writes_beside_the_weights_and_says_so(tiny, tmp_path, capsys):
    assert main(tiny) == 0
    out = tmp_path / "run" / "tiny_iter_40_features.png"
    assert out.read_bytes().startswith(b"\x89PNG")
    printed = capsys.readouterr().out.splitlines()
    assert printed[-1].startswith(f"wrote {out} (6 points, 1-nearest-neighbour accuracy ")


def test_plot_features_reports_the_feature_file(tiny, tmp_path, capsys):
    out, saved = tmp_path / "f.svg", tmp_path / "f.csv"
    assert main(tiny + ["--out", str(out), "--save-features", str(saved)]) == 0
    printed = capsys.readouterr().out.splitlines()
    assert printed[0] == f"wrote {saved} (6 digits: label and 2 features each)"
    assert printed[1].startswith(f"wrote {out} (6 points")
    assert saved.read_text().splitlines()[0] == "label,feature_1,feature_2"


@pytest.mark.parametrize("flag", ["--out", "--save-features"])
def test_plot_features_checks_its_outputs_before_running_the_net(tiny, tmp_path, capsys, monkeypatch, flag):
    monkeypatch.setattr(pf, "compute_features", lambda *a, **k: pytest.fail("the net ran before the path check"))
    bad = blocked(tmp_path, "x.png" if flag == "--out" else "x.csv")
    assert main(tiny + [flag, str(bad)]) == 2
    assert "afile is a file, not a folder" in one_error_line(capsys, bad)


@needs_dev_full
@pytest.mark.parametrize("name", ["f.png", "f.svg", "f.pdf", "f.csv", "f.npy"])
def test_plot_features_on_a_full_disk(tiny, tmp_path, capsys, name):
    full = full_disk(tmp_path, name)
    flag = "--save-features" if name.endswith(("csv", "npy")) else "--out"
    assert main(tiny + [flag, str(full)]) == 2
    assert "No space left on device" in one_error_line(capsys, full)


def test_plot_features_help_shows_the_defaults():
    text = build_parser()._subparsers._group_actions[0].choices["plot-features"].format_help()
    assert "highest iteration" in " ".join(text.split()) and "WEIGHTS_features.png" in text


# ---- plot-log ---------------------------------------------------------------------
def test_plot_log_writes_beside_the_log_and_says_so(tmp_path, capsys):
    log = tmp_path / "logs" / "train.log"
    log.parent.mkdir()
    log.write_text(LOG)
    assert main(["plot-log", str(log)]) == 0
    out = tmp_path / "logs" / "train_loss.png"
    assert out.read_bytes().startswith(b"\x89PNG")
    assert capsys.readouterr().out == f"wrote {out} (2 train losses to iteration 100, 1 test passes)\n"
    help_text = build_parser()._subparsers._group_actions[0].choices["plot-log"].format_help()
    assert "train_loss.png" in help_text


def test_plot_log_write_failures(tmp_path, capsys):
    log = tmp_path / "train.log"
    log.write_text(LOG)
    bad = blocked(tmp_path, "loss.png")
    assert main(["plot-log", str(log), "--out", str(bad)]) == 2
    one_error_line(capsys, bad)


@needs_dev_full
@pytest.mark.parametrize("name", ["l.png", "l.svg", "l.pdf"])
def test_plot_log_on_a_full_disk(tmp_path, capsys, name):
    log = tmp_path / "train.log"
    log.write_text(LOG)
    full = full_disk(tmp_path, name)
    assert main(["plot-log", str(log), "--out", str(full)]) == 2
    assert "No space left on device" in one_error_line(capsys, full)


# ---- draw-net ---------------------------------------------------------------------
def test_draw_net_says_what_it_wrote(tmp_path, capsys):
    out = tmp_path / "net.dot"
    assert main(["draw-net", str(TRAIN_TEST), str(out), "--phase", "TRAIN"]) == 0
    assert capsys.readouterr().out == f"wrote {out} (19 layers, top to bottom)\n"


@pytest.mark.parametrize("name", ["n.dot", pytest.param("n.png", marks=needs_dot),
                                  pytest.param("n.svg", marks=needs_dot)])
def test_draw_net_write_failures(tmp_path, capsys, name):
    bad = blocked(tmp_path, name)
    assert main(["draw-net", str(DEPLOY), str(bad)]) == 2
    one_error_line(capsys, bad)


@needs_dev_full
@pytest.mark.parametrize("name", ["n.dot", pytest.param("n.png", marks=needs_dot),
                                  pytest.param("n.pdf", marks=needs_dot)])
def test_draw_net_on_a_full_disk(tmp_path, capsys, name):
    full = full_disk(tmp_path, name)
    assert main(["draw-net", str(DEPLOY), str(full)]) == 2
    assert "No space left on device" in one_error_line(capsys, full)


def test_direction_follows_the_shape_of_the_graph():
    siamese = dn.select_layers(read_net(TRAIN_TEST), "TRAIN")
    depth, width = dn.graph_shape(siamese)
    assert (depth, width) == (10, 4)  # data, slice, 7 layers per tower, the loss; relu1 beside ip2, in both towers
    assert dn.auto_rankdir(siamese) == "TB" and 'rankdir="TB"' in dn.net_to_dot(read_net(TRAIN_TEST))
    wide = 'input: "x" input_shape { dim: 1 dim: 3 }\n' + "".join(
        f'layer {{ name: "b{k}" type: "ReLU" bottom: "x" top: "y{k}" }}\n' for k in range(4))
    net = parse_text(wide, caffe_pb2.NetParameter())
    assert dn.graph_shape(net.layer) == (1, 4) and 'rankdir="LR"' in dn.net_to_dot(net)
    assert 'rankdir="BT"' in dn.net_to_dot(net, rankdir="BT")


def test_deploy_input_box_shows_its_shape():
    dot = dn.net_to_dot(read_net(DEPLOY))
    assert 'label="data\\n(net input)\\n10000 x 1 x 28 x 28"' in dot
    legacy = parse_text('input: "x" input_dim: 5 input_dim: 3 input_dim: 8 input_dim: 8\n'
                        'layer { name: "r" type: "ReLU" bottom: "x" top: "y" }', caffe_pb2.NetParameter())
    assert "5 x 3 x 8 x 8" in dn.net_to_dot(legacy)
