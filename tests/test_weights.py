"""Weights into a net: shapes must agree (Caffe's ShapeEquals), value counts must fill them, and the user is told
which layers were copied, ignored, or left at their initial values."""
import io
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from siamese_cli.errors import SiameseError
from siamese_cli.io.prototxt import parse_text
from siamese_cli.log import CaffeLog
from siamese_cli.net import Net
from siamese_cli.proto import caffe_pb2

ROOT = Path(__file__).resolve().parents[1]

NET = """name: "chain"
layer { name: "data" type: "DummyData" top: "x" top: "label"
  dummy_data_param { shape { dim: 4 dim: 4 } shape { dim: 4 }
    data_filler { type: "gaussian" std: 1 } data_filler { type: "constant" value: 1 } } }
layer { name: "ip1" type: "InnerProduct" bottom: "x" top: "h"
  inner_product_param { num_output: 2 weight_filler { type: "xavier" } } }
layer { name: "relu" type: "ReLU" bottom: "h" top: "h" }
layer { name: "ip2" type: "InnerProduct" bottom: "h" top: "z"
  inner_product_param { num_output: 3 weight_filler { type: "xavier" } } }
layer { name: "loss" type: "SoftmaxWithLoss" bottom: "z" bottom: "label" top: "loss" }
"""


def make_net(seed=0, text=NET):
    return Net(parse_text(text, caffe_pb2.NetParameter()), phase="TEST", seed=seed)


def quiet():
    stream = io.StringIO()
    return CaffeLog(stream), stream


def blob_proto(shape, values=None, legacy=False):
    proto = caffe_pb2.BlobProto()
    count = int(np.prod(shape))
    values = np.arange(count, dtype=np.float32) if values is None else values
    if legacy:
        proto.num, proto.channels, proto.height, proto.width = shape
    else:
        proto.shape.dim.extend(shape)
    proto.data.extend(np.asarray(values, np.float32).ravel().tolist())
    return proto


def weights_file(tmp_path, net, edit):
    proto = net.to_proto()
    edit({layer.name: layer for layer in proto.layer})
    path = tmp_path / "w.caffemodel"
    path.write_bytes(proto.SerializeToString())
    return path


def test_transposed_weight_with_the_same_count_is_refused(tmp_path):
    net = make_net()
    assert net.params["ip1"][0].shape == (2, 4)
    before = net.params["ip1"][0].data.copy()
    path = weights_file(tmp_path, net, lambda layers: layers["ip1"].blobs[0].CopyFrom(blob_proto((4, 2))))
    with pytest.raises(SiameseError) as err:
        net.copy_from(path, log=quiet()[0])
    message = str(err.value)
    assert message.startswith(f'{path}: layer "ip1" blob 0 has shape [4, 2] in the file but [2, 4] in the net')
    assert "\n" not in message
    np.testing.assert_array_equal(net.params["ip1"][0].data, before)  # nothing half-loaded into ip1


def test_legacy_shape_may_differ_only_by_leading_ones(tmp_path):
    net = make_net()
    values = np.arange(8, dtype=np.float32) / 10
    path = weights_file(tmp_path, net, lambda layers: layers["ip1"].blobs[0].CopyFrom(
        blob_proto((1, 1, 2, 4), values, legacy=True)))
    net.copy_from(path, log=quiet()[0])
    np.testing.assert_array_equal(net.params["ip1"][0].data, values.reshape(2, 4))

    for legacy in ((2, 4, 1, 1), (1, 1, 4, 2), (1, 2, 1, 4)):
        path = weights_file(tmp_path, net, lambda layers: layers["ip1"].blobs[0].CopyFrom(
            blob_proto(legacy, values, legacy=True)))
        with pytest.raises(SiameseError, match=rf"blob 0 has shape \[{', '.join(map(str, legacy))}\] \(legacy"):
            net.copy_from(path, log=quiet()[0])
    # A BlobShape must match exactly, leading 1s included.
    path = weights_file(tmp_path, net, lambda layers: layers["ip1"].blobs[0].CopyFrom(blob_proto((1, 2, 4), values)))
    with pytest.raises(SiameseError, match=r"shape \[1, 2, 4\] in the file but \[2, 4\] in the net"):
        net.copy_from(path, log=quiet()[0])


@pytest.mark.parametrize("count", [7, 9, 0])
def test_blob_with_too_few_or_too_many_values_names_file_layer_and_counts(tmp_path, count):
    net = make_net()
    path = weights_file(tmp_path, net, lambda layers: layers["ip1"].blobs[0].CopyFrom(
        blob_proto((2, 4), np.ones(count))))
    with pytest.raises(SiameseError) as err:
        net.copy_from(path, log=quiet()[0])
    assert str(err.value).startswith(f'{path}: layer "ip1" blob 0 holds {count} values but its shape [2, 4] needs 8')


def test_diff_of_the_wrong_length_is_refused(tmp_path):
    net = make_net()

    def edit(layers):
        layers["ip2"].blobs[1].diff.extend([1.0, 2.0])
    path = weights_file(tmp_path, net, edit)
    with pytest.raises(SiameseError, match=r'layer "ip2" blob 1 holds 2 diff values but its shape \[3\] needs 3'):
        net.copy_from(path, log=quiet()[0])


def test_report_names_copied_ignored_and_untouched_layers(tmp_path):
    source = make_net(seed=1)
    proto = source.to_proto()
    del proto.layer[3:]  # data, ip1, relu: ip2 is missing
    extra = proto.layer.add(name="old_fc", type="InnerProduct")
    extra.blobs.append(blob_proto((3,)))
    path = tmp_path / "part.caffemodel"
    path.write_bytes(proto.SerializeToString())

    net = make_net(seed=2)
    log, stream = quiet()
    assert net.copy_from(path, log=log) == ["ip1"]
    lines = stream.getvalue().splitlines()
    assert lines[0].startswith("I") and lines[0].endswith(f"Copied 1 layers from {path}: ip1")
    assert lines[1].startswith("I") and lines[1].endswith('Ignoring source layer old_fc: net "chain" has no layer of '
                                                          "that name")
    assert lines[2].startswith("W") and lines[2].endswith(f"{path} holds no weights for 1 layers, left at their "
                                                          "initial values: ip2")
    np.testing.assert_array_equal(net.params["ip1"][0].data, source.params["ip1"][0].data)


def test_complete_file_warns_about_nothing(tmp_path):
    source = make_net(seed=1)
    path = tmp_path / "full.caffemodel"
    source.save(path)
    log, stream = quiet()
    make_net(seed=2).copy_from(path, log=log)
    (line,) = stream.getvalue().splitlines()
    assert line.endswith("Copied 2 layers from " + str(path) + ": ip1, ip2")


def test_layers_sharing_a_storage_are_loaded_through_either_name(tmp_path):
    text = NET.replace('top: "h"\n  inner', 'top: "h" param { name: "w1" } param { name: "b1" }\n  inner')
    text += """layer { name: "ip1_p" type: "InnerProduct" bottom: "x" top: "h_p"
  param { name: "w1" } param { name: "b1" } inner_product_param { num_output: 2 } }
layer { name: "silence" type: "Silence" bottom: "h_p" }
"""
    source = make_net(seed=1, text=text)
    proto = source.to_proto()
    keep = [layer for layer in proto.layer if layer.name != "ip1_p"]
    del proto.layer[:]
    proto.layer.extend(keep)
    path = tmp_path / "w.caffemodel"
    path.write_bytes(proto.SerializeToString())
    log, stream = quiet()
    net = make_net(seed=2, text=text)
    net.copy_from(path, log=log)
    assert "initial values" not in stream.getvalue()
    np.testing.assert_array_equal(net.params["ip1_p"][0].data, source.params["ip1"][0].data)


def test_siamese_test_warns_on_weights_cut_at_a_layer_boundary(tmp_path):
    (tmp_path / "net.prototxt").write_text(NET)
    source = make_net(seed=1)
    full = source.to_proto()
    payload = full.SerializeToString()
    head = caffe_pb2.NetParameter()
    head.CopyFrom(full)
    del head.layer[3:]  # the file ends after ip1 and relu
    cut = head.SerializeToString()
    assert payload.startswith(cut) and len(cut) < len(payload)
    (tmp_path / "cut.caffemodel").write_bytes(cut)
    result = subprocess.run([sys.executable, "-m", "siamese_cli", "test", "--model", str(tmp_path / "net.prototxt"),
                             "--weights", str(tmp_path / "cut.caffemodel"), "--iterations", "1"],
                            capture_output=True, text=True, cwd=ROOT)
    assert result.returncode == 0, result.stderr
    warnings = [line for line in result.stderr.splitlines() if line.startswith("W")]
    assert len(warnings) == 1 and warnings[0].endswith("left at their initial values: ip2")
    assert "Copied 1 layers from" in result.stderr
