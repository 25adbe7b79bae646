"""Training N iterations, snapshotting and resuming for N more equals 2N iterations straight."""
import gzip
import struct

import numpy as np
import pytest

from siamese_cli.io.prototxt import parse_text
from siamese_cli.proto import caffe_pb2
from siamese_cli.solvers import make_solver
from siamese_cli.tools.create_db import create_pair_db


def write_idx(tmp_path, count=40, size=4, seed=0):
    rng = np.random.default_rng(seed)
    images = rng.integers(0, 256, (count, size, size), dtype=np.uint8)
    labels = rng.integers(0, 3, count, dtype=np.uint8)
    image_path, label_path = tmp_path / "images.idx.gz", tmp_path / "labels.idx"
    image_path.write_bytes(gzip.compress(struct.pack(">IIII", 2051, count, size, size) + images.tobytes()))
    label_path.write_bytes(struct.pack(">II", 2049, count) + labels.tobytes())
    return image_path, label_path


def net_text(db):
    tower = ""
    for suffix, blob in (("", "d"), ("_p", "d_p")):
        tower += f"""
layer {{ name: "ip{suffix}" type: "InnerProduct" bottom: "{blob}" top: "h{suffix}"
  param {{ name: "w" lr_mult: 1 }} param {{ name: "b" lr_mult: 2 }}
  inner_product_param {{ num_output: 5 weight_filler {{ type: "xavier" }} }} }}
layer {{ name: "relu{suffix}" type: "ReLU" bottom: "h{suffix}" top: "h{suffix}" }}
layer {{ name: "f{suffix}" type: "InnerProduct" bottom: "h{suffix}" top: "f{suffix}"
  param {{ name: "fw" }} param {{ name: "fb" }}
  inner_product_param {{ num_output: 2 weight_filler {{ type: "xavier" }} }} }}"""
    return f"""
layer {{ name: "pair" type: "Data" top: "pair" top: "sim" transform_param {{ scale: 0.00390625 }}
  data_param {{ source: "{db}" batch_size: 6 }} }}
layer {{ name: "slice" type: "Slice" bottom: "pair" top: "d" top: "d_p" slice_param {{ slice_dim: 1 slice_point: 1 }} }}
{tower}
layer {{ name: "loss" type: "ContrastiveLoss" bottom: "f" bottom: "f_p" bottom: "sim" top: "loss" }}"""


def quiet(*args, **kwargs):
    pass


quiet.progress = None


# Multistep at 3 and 4 with the resume at 5: a state that lost current_step would take its steps again
# after the resume; Adam and AdaDelta keep two history sets, both of which must come back.
RULES = {
    "SGD inv": 'lr_policy: "inv" gamma: 0.01 power: 0.75\nmomentum: 0.9',
    "SGD multistep": 'lr_policy: "multistep" gamma: 0.5 stepvalue: 3 stepvalue: 4\nmomentum: 0.9',
    "Adam multistep": 'type: "Adam"\nlr_policy: "multistep" gamma: 0.5 stepvalue: 3 stepvalue: 4\nmomentum: 0.9',
    "AdaDelta": 'type: "AdaDelta"\nlr_policy: "fixed"\nmomentum: 0.95\ndelta: 1e-6',
}


@pytest.mark.parametrize("rule", list(RULES))
def test_resume_gives_identical_weights(tmp_path, monkeypatch, rule):
    monkeypatch.chdir(tmp_path)
    images, labels = write_idx(tmp_path)
    create_pair_db(images, labels, tmp_path / "pairs", seed=1)
    text = (f'net_param {{ {net_text(tmp_path / "pairs")} }}\nbase_lr: 0.05\n{RULES[rule]}\n'
            f'max_iter: 10\nrandom_seed: 5\nsnapshot_prefix: "{tmp_path}/s"\n')

    straight = make_solver(parse_text(text, caffe_pb2.SolverParameter()), log=quiet)
    straight.param.snapshot_after_train = False
    straight.solve(handle_signals=False)

    first = make_solver(parse_text(text.replace("max_iter: 10", "max_iter: 5"), caffe_pb2.SolverParameter()), log=quiet)
    first.solve(handle_signals=False)
    second = make_solver(parse_text(text, caffe_pb2.SolverParameter()), log=quiet)
    second.param.snapshot_after_train = False
    second.restore(tmp_path / "s_iter_5.solverstate")
    assert second.iter == 5
    second.solve(handle_signals=False)

    for a, b in zip(straight.net.learnable_params, second.net.learnable_params):
        np.testing.assert_array_equal(a.blob.data, b.blob.data)
    moved = [not np.array_equal(a.blob.data, b.blob.data)
             for a, b in zip(straight.net.learnable_params, first.net.learnable_params)]
    assert any(moved)
