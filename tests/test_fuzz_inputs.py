"""Property-based: random and mutated input files give a one-line SiameseError or a result, never another
exception or a hang. Each property runs a bounded number of examples with a deadline, so the file takes seconds."""
import io
import string
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from siamese_cli.errors import SiameseError
from siamese_cli.io.idx import read_idx
from siamese_cli.io.prototxt import parse_text
from siamese_cli.log import CaffeLog
from siamese_cli.net import Net
from siamese_cli.proto import caffe_pb2
from siamese_cli.solvers import make_solver

FUZZ = settings(max_examples=60, deadline=10000, derandomize=True,
                suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])

NET = """name: "fuzz"
layer { name: "data" type: "DummyData" top: "x" top: "label"
  dummy_data_param { shape { dim: 2 dim: 1 dim: 6 dim: 6 } shape { dim: 2 }
    data_filler { type: "gaussian" std: 1 } data_filler { type: "constant" value: 1 } } }
layer { name: "conv" type: "Convolution" bottom: "x" top: "c"
  param { name: "cw" lr_mult: 1 } param { lr_mult: 2 }
  convolution_param { num_output: 2 kernel_size: 3 stride: 1 weight_filler { type: "xavier" } } }
layer { name: "pool" type: "Pooling" bottom: "c" top: "p" pooling_param { pool: MAX kernel_size: 2 stride: 2 } }
layer { name: "ip" type: "InnerProduct" bottom: "p" top: "z"
  inner_product_param { num_output: 3 weight_filler { type: "gaussian" std: 0.1 } } }
layer { name: "relu" type: "ReLU" bottom: "z" top: "z" }
layer { name: "loss" type: "SoftmaxWithLoss" bottom: "z" bottom: "label" top: "loss" }
"""


def expect_clean(run):
    """Run `run`; a SiameseError must be one line, and nothing else may escape."""
    try:
        run()
    except SiameseError as exc:
        assert str(exc) and "\n" not in str(exc), repr(str(exc))


def mutated(data, payload):
    """`payload` with a few bytes overwritten, deleted or inserted, and possibly cut short."""
    payload = bytearray(payload)
    for _ in range(data.draw(st.integers(1, 4))):
        if not payload:
            break
        at = data.draw(st.integers(0, len(payload) - 1))
        action = data.draw(st.sampled_from(["set", "delete", "insert"]))
        if action == "set":
            payload[at] = data.draw(st.integers(0, 255))
        elif action == "delete":
            del payload[at:at + data.draw(st.integers(1, 8))]
        else:
            payload[at:at] = data.draw(st.binary(min_size=1, max_size=8))
    return bytes(payload[:data.draw(st.integers(0, len(payload)))]) if data.draw(st.booleans()) else bytes(payload)


@pytest.fixture(scope="module")
def net():
    return Net(parse_text(NET, caffe_pb2.NetParameter()), phase="TRAIN", seed=0)


@pytest.fixture(scope="module")
def caffemodel(net):
    return net.to_proto().SerializeToString()


# ---- .caffemodel ------------------------------------------------------------------
@FUZZ
@given(payload=st.binary(max_size=600))
def test_random_bytes_as_caffemodel(net, tmp_path, payload):
    path = tmp_path / "w.caffemodel"
    path.write_bytes(payload)
    expect_clean(lambda: net.copy_from(path, log=CaffeLog(io.StringIO())))


@FUZZ
@given(data=st.data())
def test_mutated_caffemodel(net, caffemodel, tmp_path, data):
    path = tmp_path / "w.caffemodel"
    path.write_bytes(mutated(data, caffemodel))
    expect_clean(lambda: net.copy_from(path, log=CaffeLog(io.StringIO())))


@FUZZ
@given(data=st.data())
def test_edited_caffemodel_fields(net, tmp_path, data):
    """Well-formed protobuf with wrong contents: value counts, shapes, legacy dims, names, blob counts."""
    proto = net.to_proto()
    layer = data.draw(st.sampled_from([layer for layer in proto.layer if layer.blobs]))
    blob = layer.blobs[data.draw(st.integers(0, len(layer.blobs) - 1))]
    for _ in range(data.draw(st.integers(1, 3))):
        edit = data.draw(st.sampled_from(["cut", "grow", "dim", "legacy", "noshape", "diff", "rename", "drop"]))
        if edit == "cut" and len(blob.data):
            del blob.data[data.draw(st.integers(0, len(blob.data) - 1)):]
        elif edit == "grow":
            blob.data.extend([0.5] * data.draw(st.integers(1, 5)))
        elif edit == "dim" and blob.shape.dim:
            blob.shape.dim[data.draw(st.integers(0, len(blob.shape.dim) - 1))] = data.draw(st.integers(-2, 40))
        elif edit == "legacy":
            blob.ClearField("shape")
            blob.num, blob.channels, blob.height, blob.width = data.draw(st.lists(st.integers(-1, 30), min_size=4,
                                                                                  max_size=4))
        elif edit == "noshape":
            blob.ClearField("shape")
        elif edit == "diff":
            blob.diff.extend([1.0] * data.draw(st.integers(1, 60)))
        elif edit == "rename":
            layer.name = data.draw(st.sampled_from(["conv", "ip", "other", ""]))
        elif edit == "drop" and layer.blobs:
            del layer.blobs[-1]
    path = tmp_path / "w.caffemodel"
    path.write_bytes(proto.SerializeToString())
    expect_clean(lambda: net.copy_from(path, log=CaffeLog(io.StringIO())))


# ---- .solverstate -----------------------------------------------------------------
@pytest.fixture(scope="module")
def solver(tmp_path_factory):
    folder = tmp_path_factory.mktemp("state")
    param = parse_text(f'base_lr: 0.01 lr_policy: "fixed" momentum: 0.9 max_iter: 2 snapshot_prefix: "{folder}/s"',
                       caffe_pb2.SolverParameter())
    param.net_param.CopyFrom(parse_text(NET, caffe_pb2.NetParameter()))
    solver = make_solver(param, log=CaffeLog(io.StringIO()))
    solver.step(1)
    _, state = solver.snapshot()
    return solver, Path(state).read_bytes()


@FUZZ
@given(payload=st.binary(max_size=400))
def test_random_bytes_as_solverstate(solver, tmp_path, payload):
    path = tmp_path / "s.solverstate"
    path.write_bytes(payload)
    expect_clean(lambda: solver[0].restore(path))


@FUZZ
@given(data=st.data())
def test_mutated_solverstate(solver, tmp_path, data):
    path = tmp_path / "s.solverstate"
    path.write_bytes(mutated(data, solver[1]))
    expect_clean(lambda: solver[0].restore(path))


@FUZZ
@given(data=st.data())
def test_edited_solverstate_fields(solver, tmp_path, data):
    state = caffe_pb2.SolverState.FromString(solver[1])
    edit = data.draw(st.sampled_from(["learned_net", "history", "values", "iter"]))
    if edit == "learned_net":
        state.learned_net = data.draw(st.text(max_size=20))
    elif edit == "history":
        del state.history[data.draw(st.integers(0, len(state.history) - 1)):]
    elif edit == "values":
        del state.history[data.draw(st.integers(0, len(state.history) - 1))].data[1:]
    else:
        state.iter = data.draw(st.integers(-5, 10))
        state.current_step = data.draw(st.integers(-5, 10))
    path = tmp_path / "s.solverstate"
    path.write_bytes(state.SerializeToString())
    expect_clean(lambda: solver[0].restore(path))


def test_a_file_name_with_a_line_break_stays_one_line(solver, tmp_path):
    state = caffe_pb2.SolverState.FromString(solver[1])
    state.learned_net = "weights\nfile.caffemodel"
    path = tmp_path / "s.solverstate"
    path.write_bytes(state.SerializeToString())
    with pytest.raises(SiameseError) as err:
        solver[0].restore(path)
    assert str(err.value) == "weights\\nfile.caffemodel: no such file"


# ---- IDX --------------------------------------------------------------------------
IDX_IMAGES = bytes([0, 0, 8, 3, 0, 0, 0, 2, 0, 0, 0, 3, 0, 0, 0, 3]) + bytes(range(18))


@FUZZ
@given(payload=st.one_of(st.binary(max_size=64), st.builds(lambda tail: IDX_IMAGES[:4] + tail, st.binary(max_size=40))),
       gz=st.booleans())
def test_random_bytes_as_idx(tmp_path, payload, gz):
    import gzip

    path = tmp_path / "f.idx"
    path.write_bytes(gzip.compress(payload) if gz else payload)
    expect_clean(lambda: read_idx(path))


@FUZZ
@given(data=st.data())
def test_mutated_idx_and_gzip(tmp_path, data):
    import gzip

    path = tmp_path / "f.idx.gz"
    raw = data.draw(st.sampled_from([IDX_IMAGES, gzip.compress(IDX_IMAGES)]))
    path.write_bytes(mutated(data, raw))
    expect_clean(lambda: read_idx(path, 2051))


# ---- Datum records ----------------------------------------------------------------
DATUM = caffe_pb2.Datum(channels=2, height=2, width=2, data=bytes(range(8)), label=1).SerializeToString()


@FUZZ
@given(data=st.data())
def test_random_and_mutated_datum_records(data):
    from siamese_cli.layers.data import decode_batch

    values = [data.draw(st.binary(max_size=40)) if data.draw(st.booleans()) else mutated(data, DATUM)
              for _ in range(data.draw(st.integers(1, 3)))]
    records = [(f"{k:08d}".encode(), value) for k, value in enumerate(values)]
    expect_clean(lambda: decode_batch(records, (2, 2, 2), "fuzz_db"))


# ---- prototxt ---------------------------------------------------------------------
WORDS = ["layer", "name", "type", "bottom", "top", "{", "}", ":", '"x"', '"ReLU"', '"Nope"', "param", "lr_mult",
         "convolution_param", "kernel_size", "num_output", "0", "1", "-1", "3", "2.5", "#", "\n", '"', "<", ">",
         "[", "]", ",", "include", "phase", "TEST", "inner_product_param", "weight_filler", '"bilnear"', "input",
         "input_shape", "dim", "pool", "AVE", "stride", "pad", "slice_point", "axis"]


@FUZZ
@given(text=st.text(alphabet=string.printable, max_size=200))
def test_random_text_as_net(text):
    expect_clean(lambda: Net(parse_text(text, caffe_pb2.NetParameter())))


@FUZZ
@given(data=st.data())
def test_mutated_net_text(tmp_path, data):
    tokens = NET.replace("{", " { ").replace("}", " } ").split(" ")
    for _ in range(data.draw(st.integers(1, 3))):
        at = data.draw(st.integers(0, len(tokens) - 1))
        action = data.draw(st.sampled_from(["replace", "delete", "insert"]))
        if action == "delete":
            del tokens[at]
        else:
            tokens[at:at + (action == "replace")] = [data.draw(st.sampled_from(WORDS))]
    path = tmp_path / "net.prototxt"
    path.write_text(" ".join(tokens))
    expect_clean(lambda: Net(path, phase=data.draw(st.sampled_from(["TRAIN", "TEST"]))).forward_backward())
