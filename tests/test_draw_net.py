"""draw-net: the DOT text names every layer, marks shared params, and dot lays it out cleanly."""
import re
import shutil
import subprocess
from pathlib import Path

import pytest

from siamese_cli.cli import main
from siamese_cli.errors import SiameseError
from siamese_cli.io.prototxt import parse_text, read_net
from siamese_cli.proto import caffe_pb2
from siamese_cli.tools import draw_net as dn

ROOT = Path(__file__).resolve().parent.parent
TRAIN_TEST = ROOT / "examples/siamese/mnist_siamese_train_test.prototxt"
DEPLOY = ROOT / "examples/siamese/mnist_siamese.prototxt"
needs_dot = pytest.mark.skipif(shutil.which("dot") is None,
                               reason="Graphviz's dot is not installed (apt-get install graphviz)")

SHARED_PAIRS = {("conv1", "conv1_p"), ("conv2", "conv2_p"), ("ip1", "ip1_p"), ("ip2", "ip2_p"), ("feat", "feat_p")}
MAGIC = {"png": b"\x89PNG", "pdf": b"%PDF"}

_NODE = re.compile(r"^  (layer\d+|blob\d+) \[label=(?:<(.*?)>, shape=|\"(.*?)\")", re.M)


def nodes(dot):
    """{node id: label text}; an HTML label is cut at its first line break."""
    found = {}
    for node_id, html_label, plain in _NODE.findall(dot):
        found[node_id] = html_label.split("<BR/>")[0] if html_label else plain
    return found


def edges(dot, extra=""):
    return re.findall(r"^  (\w+) -> (\w+)" + extra, dot, re.M)


@pytest.fixture(scope="module")
def siamese_dot():
    return dn.net_to_dot(read_net(TRAIN_TEST), rankdir="LR", phase="ALL")


def test_every_layer_is_a_node_and_each_blob_one_node(siamese_dot):
    net = read_net(TRAIN_TEST)
    found = nodes(siamese_dot)
    layer_names = [label for node, label in found.items() if node.startswith("layer")]
    assert len(net.layer) == 20
    assert sorted(layer_names) == sorted(layer.name for layer in net.layer)
    blob_names = [label for node, label in found.items() if node.startswith("blob")]
    # The TRAIN and TEST Data layers write the same two blobs: one node each, two producers.
    assert len(blob_names) == len(set(blob_names))
    assert set(blob_names) == {top for layer in net.layer for top in layer.top}
    pair_data = next(node for node, label in found.items() if node.startswith("blob") and label == "pair_data")
    producers = [src for src, dst in edges(siamese_dot) if dst == pair_data]
    assert len(producers) == 2 and all(found[src] == "pair_data" for src in producers)


def test_in_place_layer_points_back_at_its_blob(siamese_dot):
    found = nodes(siamese_dot)
    ids = {label: node for node, label in found.items()}
    relu = next(node for node, label in found.items() if node.startswith("layer") and label == "relu1")
    ip1_blobs = [node for node, label in found.items() if node.startswith("blob") and label == "ip1"]
    assert len(ip1_blobs) == 1
    flow = edges(siamese_dot)
    assert (ip1_blobs[0], relu) in flow and (relu, ip1_blobs[0]) in flow
    assert ids["relu1"] == relu


def test_shared_params_are_marked(siamese_dot):
    found = nodes(siamese_dot)
    dashed = edges(siamese_dot, r' \[dir="none", style="dashed", color="(#[0-9a-f]{6})".*tooltip="shared: ([^"]*)"')
    pairs = {(found[a], found[b]): (colour, names) for a, b, colour, names in dashed}
    assert set(pairs) == SHARED_PAIRS
    assert pairs[("conv1", "conv1_p")][1] == "conv1_w, conv1_b"
    assert pairs[("feat", "feat_p")][1] == "feat_w, feat_b"
    assert len({colour for colour, _ in pairs.values()}) == 5
    # Both towers name the param in the param's colour, and the legend lists every shared pair.
    conv1_colour = pairs[("conv1", "conv1_p")][0]
    assert siamese_dot.count(f'<FONT COLOR="{conv1_colour}"><B>conv1_w</B></FONT>') == 2
    assert siamese_dot.count(f'<FONT COLOR="{conv1_colour}"><B>conv1_w, conv1_b</B></FONT>') == 1
    legend = re.search(r"^  legend \[label=<(.*)>", siamese_dot, re.M).group(1)
    assert "Shared parameters" in legend
    for owner, user in SHARED_PAIRS:
        assert f"{owner} = {user}" in legend


def test_layer_boxes_show_key_settings(siamese_dot):
    labels = {m.group(1).split("<BR/>")[0]: m.group(1)
              for m in re.finditer(r"^  layer\d+ \[label=<(.*?)>, shape=", siamese_dot, re.M)}
    assert "20 outputs<BR/>kernel 5, stride 1, pad 0" in labels["conv1"]
    assert "MAX 2, stride 2, pad 0" in labels["pool2"]
    assert "500 outputs" in labels["ip1_p"]
    assert "(ContrastiveLoss)<BR/>margin 1" in labels["loss"]
    assert "batch 64, leveldb" in siamese_dot and "[only TRAIN]" in siamese_dot and "[only TEST]" in siamese_dot


def test_phase_filter_and_rankdir():
    net = read_net(TRAIN_TEST)
    train = dn.net_to_dot(net, rankdir="TB", phase="TRAIN")
    assert 'rankdir="TB"' in train and "(TRAIN)" in train
    assert "batch 64" in train and "batch 100" not in train
    assert len([n for n in nodes(train) if n.startswith("layer")]) == 19
    with pytest.raises(SiameseError, match="rankdir"):
        dn.net_to_dot(net, rankdir="UP")
    with pytest.raises(SiameseError, match="phase"):
        dn.net_to_dot(net, phase="VAL")


def test_partially_shared_and_quoted_names():
    net = parse_text('''name: "odd \\"net\\""
        input: "x" input_shape { dim: 1 dim: 3 }
        layer { name: "a<1>" type: "InnerProduct" bottom: "x" top: "y" param { name: "w" } param { name: "b_a" }
                inner_product_param { num_output: 2 bias_term: true } }
        layer { name: "b&2" type: "InnerProduct" bottom: "x" top: "z" param { name: "w" } param { name: "b_b" }
                inner_product_param { num_output: 2 } }''', caffe_pb2.NetParameter())
    dot = dn.net_to_dot(net)
    assert dot.startswith('digraph "odd \\"net\\"" {')
    assert "a&lt;1&gt;" in dot and "b&amp;2" in dot
    assert 'tooltip="shared: w"' in dot and "b_a" in dot and "b_b" in dot
    assert len(edges(dot, r' \[dir="none"')) == 1


def test_dot_output_needs_no_graphviz(tmp_path, monkeypatch):
    monkeypatch.setattr(dn.shutil, "which", lambda name: None)
    out = tmp_path / "net.dot"
    assert main(["draw-net", str(DEPLOY), str(out)]) == 0
    assert out.read_text().startswith('digraph "mnist_siamese" {')
    with pytest.raises(SiameseError, match=r"apt-get install graphviz.*brew install graphviz"):
        dn.draw_net(DEPLOY, tmp_path / "net.png")
    assert not (tmp_path / "net.png").exists()


def test_unknown_extension_is_a_user_error(tmp_path, capsys):
    assert main(["draw-net", str(DEPLOY), str(tmp_path / "net.bmp")]) == 2
    assert "unknown picture format '.bmp'" in capsys.readouterr().err


@needs_dot
@pytest.mark.parametrize("fmt", ["png", "svg", "pdf"])
def test_writes_each_image_format(tmp_path, fmt):
    out = tmp_path / f"net.{fmt}"
    assert main(["draw-net", str(TRAIN_TEST), str(out), "--rankdir", "TB"]) == 0
    head = out.read_bytes()[:400]
    if fmt == "svg":
        assert b"<svg" in head
    else:
        assert head.startswith(MAGIC[fmt])
    assert out.stat().st_size > 5000
    assert list(tmp_path.iterdir()) == [out]


@needs_dot
@pytest.mark.parametrize("rankdir", ["LR", "TB"])
def test_layout_has_no_overlapping_nodes(rankdir):
    """dot's own layout of the 20-layer net: no two node boxes intersect."""
    dot = dn.net_to_dot(read_net(TRAIN_TEST), rankdir=rankdir)
    plain = subprocess.run(["dot", "-Tplain"], input=dot.encode(), capture_output=True, check=True).stdout.decode()
    boxes = []
    for line in plain.splitlines():
        parts = line.split()
        if parts and parts[0] == "node":
            x, y, w, h = map(float, parts[2:6])
            boxes.append((parts[1], x - w / 2, y - h / 2, x + w / 2, y + h / 2))
    assert len(boxes) == 20 + 19 + 1  # layers, blobs, legend
    for i, a in enumerate(boxes):
        for b in boxes[i + 1:]:
            apart = a[3] <= b[1] or b[3] <= a[1] or a[4] <= b[2] or b[4] <= a[2]
            assert apart, f"{a[0]} overlaps {b[0]}"


def test_missing_prototxt_is_a_user_error(tmp_path, capsys):
    assert main(["draw-net", str(tmp_path / "nope.prototxt"), str(tmp_path / "n.dot")]) == 2
    assert "no such file" in capsys.readouterr().err
