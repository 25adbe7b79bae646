"""HDF5Data, HDF5Output and HDF5 snapshots (h5py, the `hdf5` extra), in Caffe's layout."""
import numpy as np
import pytest

from siamese_cli.blob import Blob
from siamese_cli.errors import SiameseError
from siamese_cli.layers import layer_class
from siamese_cli.proto import caffe_pb2

h5py = pytest.importorskip("h5py")


def write_h5(path, **datasets):
    with h5py.File(path, "w") as handle:
        for name, values in datasets.items():
            handle.create_dataset(name, data=values)
    return path


def hdf5_layer(source, batch_size, shuffle=False, tops=("data", "label"), seed=0):
    param = caffe_pb2.LayerParameter(name="h", type="HDF5Data", top=list(tops))
    param.hdf5_data_param.source, param.hdf5_data_param.batch_size = str(source), batch_size
    param.hdf5_data_param.shuffle = shuffle
    layer = layer_class("HDF5Data")(param, phase="TRAIN", rng=np.random.default_rng(seed))
    top = [Blob() for _ in tops]
    layer.setup([], top)
    layer.reshape([], top)
    return layer, top


def test_hdf5_data_reads_rows_across_files_in_order(tmp_path):
    a = write_h5(tmp_path / "a.h5", data=np.arange(3 * 2 * 2, dtype=np.float64).reshape(3, 1, 2, 2),
                 label=np.array([0, 1, 2], np.int32))
    b = write_h5(tmp_path / "b.h5", data=100 + np.arange(2 * 4, dtype=np.float32).reshape(2, 1, 2, 2),
                 label=np.array([3, 4], np.float32))
    (tmp_path / "list.txt").write_text(f"{a}\n\n{b}\n")
    layer, top = hdf5_layer(tmp_path / "list.txt", 4)
    assert top[0].shape == (4, 1, 2, 2) and top[1].shape == (4,)
    layer.forward([], top)
    np.testing.assert_array_equal(top[1].data, [0, 1, 2, 3])
    np.testing.assert_array_equal(top[0].data[3, 0], [[100, 101], [102, 103]])
    layer.forward([], top)
    np.testing.assert_array_equal(top[1].data, [4, 0, 1, 2])


def test_hdf5_data_shuffle_is_seeded_and_covers_every_row(tmp_path):
    path = write_h5(tmp_path / "a.h5", data=np.arange(6, dtype=np.float32)[:, None], label=np.arange(6.0))
    (tmp_path / "list.txt").write_text(f"{path}\n")
    runs = []
    for seed in (4, 4, 5):
        layer, top = hdf5_layer(tmp_path / "list.txt", 3, shuffle=True, seed=seed)
        labels = []
        for _ in range(4):
            layer.forward([], top)
            np.testing.assert_array_equal(top[0].data[:, 0], top[1].data)  # rows stay together
            labels.extend(top[1].data.astype(int))
        assert sorted(labels[:6]) == list(range(6)) and sorted(labels[6:]) == list(range(6))
        runs.append(labels)
    assert runs[0] == runs[1] and runs[0] != runs[2]


def test_hdf5_data_errors_name_the_file(tmp_path):
    path = write_h5(tmp_path / "a.h5", data=np.zeros((2, 3), np.float32))
    (tmp_path / "list.txt").write_text(f"{path}\n")
    with pytest.raises(SiameseError, match=r'a.h5: no dataset "label"'):
        hdf5_layer(tmp_path / "list.txt", 1)
    with pytest.raises(SiameseError, match=r"nolist.txt: no such file"):
        hdf5_layer(tmp_path / "nolist.txt", 1)


def test_hdf5_output_appends_each_batch(tmp_path):
    param = caffe_pb2.LayerParameter(name="out", type="HDF5Output", bottom=["data", "label"])
    param.hdf5_output_param.file_name = str(tmp_path / "out.h5")
    layer = layer_class("HDF5Output")(param)
    data, label = Blob((2, 3)), Blob((2,))
    layer.setup([data, label], [])
    for k in range(2):
        data.data[...] = np.arange(6).reshape(2, 3) + 10 * k
        label.data[...] = [k, k + 1]
        layer.reshape([data, label], [])
        layer.forward([data, label], [])
    layer.close()
    with h5py.File(tmp_path / "out.h5", "r") as handle:
        np.testing.assert_array_equal(handle["label"][...], [0, 1, 1, 2])
        np.testing.assert_array_equal(handle["data"][2], [10, 11, 12])


NET = """
name: "tiny"
layer { name: "d" type: "DummyData" top: "x" top: "y"
        dummy_data_param { shape { dim: 4 dim: 3 } shape { dim: 4 }
                           data_filler { type: "gaussian" } data_filler { type: "constant" value: 1 } } }
layer { name: "ip" type: "InnerProduct" bottom: "x" top: "ip" param { name: "w" } param { name: "b" }
        inner_product_param { num_output: 2 weight_filler { type: "xavier" } } }
layer { name: "ip2" type: "InnerProduct" bottom: "x" top: "ip2" param { name: "w" } param { name: "b" }
        inner_product_param { num_output: 2 } }
layer { name: "sum" type: "Eltwise" bottom: "ip" bottom: "ip2" top: "s" }
layer { name: "loss" type: "SoftmaxWithLoss" bottom: "s" bottom: "y" top: "loss" }
"""


def test_hdf5_snapshot_layout_and_resume(tmp_path, monkeypatch):
    from siamese_cli.solvers import load_solver

    monkeypatch.chdir(tmp_path)
    (tmp_path / "net.prototxt").write_text(NET)
    (tmp_path / "solver.prototxt").write_text(
        'net: "net.prototxt" type: "Adam" base_lr: 0.01 lr_policy: "step" stepsize: 1 gamma: 0.5 max_iter: 2 '
        'random_seed: 1 snapshot_prefix: "snap" snapshot_format: HDF5\n')
    solver = load_solver("solver.prototxt")
    solver.solve()
    with h5py.File("snap_iter_2.caffemodel.h5", "r") as handle:
        assert sorted(handle["data"].keys()) == ["d", "ip", "ip2", "loss", "sum"]
        assert sorted(handle["data/ip"].keys()) == ["0", "1"]
        assert len(handle["data/ip2"]) == 0  # shared params are written under their owner only
        np.testing.assert_array_equal(handle["data/ip/0"][...], solver.net.params["ip"][0].data)
    with h5py.File("snap_iter_2.solverstate.h5", "r") as handle:
        assert int(handle["iter"][0]) == 2 and int(handle["current_step"][0]) == solver.current_step
        assert handle["learned_net"][()].decode() == "snap_iter_2.caffemodel.h5"
        assert sorted(handle["history"].keys()) == ["0", "1", "2", "3"]  # Adam: two sets of two params
        np.testing.assert_array_equal(handle["history/1"][...], solver.history[1])
    resumed = load_solver("solver.prototxt")
    resumed.restore("snap_iter_2.solverstate.h5")
    assert resumed.iter == 2 and resumed.current_step == solver.current_step
    np.testing.assert_array_equal(resumed.net.params["ip"][0].data, solver.net.params["ip"][0].data)
    np.testing.assert_array_equal(resumed.net.params["ip2"][1].data, solver.net.params["ip"][1].data)
    for mine, theirs in zip(resumed.history, solver.history):
        np.testing.assert_array_equal(mine, theirs)
    resumed.close()
