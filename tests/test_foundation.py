"""The schema, prototxt loading and the CLI's contract (help, one-line errors, exit status 2)."""
import subprocess
import sys
from pathlib import Path

import pytest

from siamese_cli.cli import main
from siamese_cli.errors import SiameseError
from siamese_cli.io.prototxt import parse_text, read_net, read_solver
from siamese_cli.proto import caffe_pb2

ROOT = Path(__file__).resolve().parents[1]
EXAMPLES = ROOT / "examples" / "siamese"


def test_generated_schema_is_current(tmp_path):
    """The committed caffe_pb2.py must be what scripts/gen_proto.sh makes from protos/caffe.proto."""
    protoc = pytest.importorskip("grpc_tools.protoc")
    status = protoc.main(["protoc", f"-I{ROOT / 'protos'}", f"--python_out={tmp_path}", str(ROOT / "protos" / "caffe.proto")])
    assert status == 0
    fresh = (tmp_path / "caffe_pb2.py").read_text()
    committed = (ROOT / "siamese_cli" / "proto" / "caffe_pb2.py").read_text()
    assert fresh == committed, "caffe_pb2.py is stale: run scripts/gen_proto.sh"


def test_field_numbers_match_caffe_wire_format():
    fields = caffe_pb2.LayerParameter.DESCRIPTOR.fields_by_name
    assert fields["convolution_param"].number == 106
    assert fields["contrastive_loss_param"].number == 105
    assert fields["input_param"].number == 143
    assert caffe_pb2.NetParameter.DESCRIPTOR.fields_by_name["layer"].number == 100
    assert caffe_pb2.SolverParameter.DESCRIPTOR.fields_by_name["type"].number == 40
    assert caffe_pb2.SolverState.DESCRIPTOR.fields_by_name["history"].number == 3
    datum = caffe_pb2.Datum(channels=2, height=1, width=1, data=b"\x01\x02", label=1)
    # Tags 1,2,3 varints, 4 bytes, 5 varint: the bytes Caffe's convert tools write.
    assert datum.SerializeToString() == b"\x08\x02\x10\x01\x18\x01\x22\x02\x01\x02\x28\x01"


def test_examples_load():
    deploy = read_net(EXAMPLES / "mnist_siamese.prototxt")
    assert [layer.name for layer in deploy.layer][:2] == ["conv1", "pool1"]
    assert list(deploy.input_shape[0].dim) == [10000, 1, 28, 28]
    train = read_net(EXAMPLES / "mnist_siamese_train_test.prototxt")
    assert len(train.layer) == 20
    feat = next(layer for layer in train.layer if layer.name == "feat")
    assert [p.name for p in feat.param] == ["feat_w", "feat_b"]
    assert [p.lr_mult for p in feat.param] == [1, 2]
    feat_p = next(layer for layer in train.layer if layer.name == "feat_p")
    assert [p.name for p in feat_p.param] == ["feat_w", "feat_b"]
    loss = train.layer[-1]
    assert loss.type == "ContrastiveLoss" and loss.contrastive_loss_param.margin == 1
    assert list(loss.bottom) == ["feat", "feat_p", "sim"]
    solver = read_solver(EXAMPLES / "mnist_siamese_solver.prototxt")
    assert solver.base_lr == pytest.approx(0.01) and solver.lr_policy == "inv"
    assert (solver.max_iter, solver.snapshot, solver.test_iter[0], solver.test_interval) == (50000, 5000, 100, 500)
    assert solver.snapshot_prefix == "examples/siamese/mnist_siamese"


def test_parse_error_names_file_line_column(tmp_path):
    bad = tmp_path / "x.prototxt"
    bad.write_text('layer {\n  name: "c"\n  convolution_param {\n    kernel_sise: 3\n  }\n}\n')
    with pytest.raises(SiameseError) as info:
        read_net(bad)
    assert str(info.value) == f'{bad}:4:5: unknown field "kernel_sise" in ConvolutionParameter; did you mean "kernel_size"?'


def test_parse_error_for_bad_value():
    with pytest.raises(SiameseError, match=r"<string>:1:\d+: .*"):
        parse_text("max_iter: many", caffe_pb2.SolverParameter())


def test_cli_help_lists_the_commands(capsys):
    with pytest.raises(SystemExit) as info:
        main(["--help"])
    assert info.value.code == 0
    text = capsys.readouterr().out
    for command in ("create-db", "train", "test", "time", "plot-features", "draw-net"):
        assert command in text


def test_cli_broken_prototxt_is_one_line_exit_2(tmp_path):
    bad = tmp_path / "broken.prototxt"
    bad.write_text('name: "n"\nlayer {\n  name: "c"\n  type: "Convolution"\n  convolution_param { kernel_sise: 3 }\n}\n')
    result = subprocess.run([sys.executable, "-m", "siamese_cli", "time", "--model", str(bad)],
                            capture_output=True, text=True, cwd=ROOT)
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [
        f'error: {bad}:5:23: unknown field "kernel_sise" in ConvolutionParameter; did you mean "kernel_size"?']


def test_cli_missing_file_is_one_line_exit_2(tmp_path):
    result = subprocess.run([sys.executable, "-m", "siamese_cli", "train", "--solver", str(tmp_path / "nope.prototxt")],
                            capture_output=True, text=True, cwd=ROOT)
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "nope.prototxt: no such file" in lines[0]
    assert "Traceback" not in result.stderr


def test_atomic_write_leaves_no_partial_file_and_normal_permissions(tmp_path):
    import os

    from siamese_cli.io.files import atomic_path, write_bytes_atomic

    write_bytes_atomic(tmp_path / "a.bin", b"abc")
    assert (tmp_path / "a.bin").read_bytes() == b"abc"
    mask = os.umask(0)
    os.umask(mask)
    assert (tmp_path / "a.bin").stat().st_mode & 0o777 == 0o666 & ~mask
    with pytest.raises(RuntimeError):
        with atomic_path(tmp_path / "b.bin") as tmp:
            tmp.write_bytes(b"half")
            raise RuntimeError("interrupted")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.bin"]


def test_write_failures_are_one_line_errors_naming_the_file(tmp_path):
    from siamese_cli.errors import SiameseError
    from siamese_cli.io.files import check_writable, write_bytes_atomic

    blocker = tmp_path / "not_a_folder"
    blocker.write_bytes(b"")
    for call in (lambda p: write_bytes_atomic(p, b"abc"), check_writable):
        with pytest.raises(SiameseError, match=r"not_a_folder/w\.bin: cannot write: .*not_a_folder is a file, not a folder"):
            call(blocker / "w.bin")
    with pytest.raises(SiameseError, match=r"^/dev/full: cannot write: No space left on device; free some space$"):
        write_bytes_atomic("/dev/full", b"abc")
    check_writable(tmp_path / "new" / "folder" / "w.bin")
    assert sorted(p.name for p in (tmp_path / "new" / "folder").iterdir()) == []
