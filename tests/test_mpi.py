"""The parallel package without an MPI job: launcher detection, the missing-mpi4py message, the Data
layer's record filter (rank r keeps the records whose position modulo N is r), and a LevelDB that
several processes read at once."""
import os
import subprocess
import sys

import numpy as np
import plyvel
import pytest

from siamese_cli import cli
from siamese_cli.blob import Blob
from siamese_cli.errors import SiameseError
from siamese_cli.io.db import open_reader, open_writer
from siamese_cli.layers import layer_class
from siamese_cli.parallel import SingleProcess, data_parallel, launched_size
from siamese_cli.proto import caffe_pb2


def write_db(path, count=10):
    """`count` 1x1x1 records; record k holds pixel k and label k, so a batch names its records."""
    with open_writer(path, "leveldb") as writer:
        writer.put_batch([(f"{k:08d}".encode(), caffe_pb2.Datum(channels=1, height=1, width=1, data=bytes([k]),
                                                                 label=k).SerializeToString()) for k in range(count)])
    return path


def data_layer(source, batch_size, seed=0, rand_skip=0):
    param = caffe_pb2.LayerParameter(name="data", type="Data", top=["data", "label"])
    param.data_param.source = str(source)
    param.data_param.batch_size = batch_size
    param.data_param.rand_skip = rand_skip
    layer = layer_class("Data")(param, phase="TRAIN", rng=np.random.default_rng(seed))
    top = [Blob(), Blob()]
    layer.setup([], top)
    layer.reshape([], top)
    return layer, top


def labels(layer, top, count):
    out = []
    for _ in range(count):
        layer.forward([], top)
        out.append(top[1].data.astype(int).tolist())
    return out


def test_launcher_detection():
    assert launched_size({}) == 1
    assert launched_size({"PMI_SIZE": "4"}) == 4
    assert launched_size({"OMPI_COMM_WORLD_SIZE": "8"}) == 8
    assert launched_size({"MV2_COMM_WORLD_SIZE": "2"}) == 2
    assert isinstance(data_parallel(None, environ={}), SingleProcess)
    assert isinstance(data_parallel(None, environ={"PMI_SIZE": "1"}), SingleProcess)
    assert isinstance(data_parallel(False, environ={"PMI_SIZE": "2"}), SingleProcess)


@pytest.fixture
def no_mpi4py(monkeypatch):
    monkeypatch.setitem(sys.modules, "mpi4py", None)  # import mpi4py raises ImportError
    monkeypatch.delitem(sys.modules, "siamese_cli.parallel.mpi", raising=False)


def test_without_mpi4py_both_ways_of_asking_say_how_to_install(no_mpi4py):
    with pytest.raises(SiameseError, match=r'^train --mpi needs mpi4py .*pip install -e "\.\[mpi\]"'):
        data_parallel(True, environ={})
    with pytest.raises(SiameseError, match=r"^running under an MPI launcher with 2 processes needs mpi4py"):
        data_parallel(None, environ={"PMI_SIZE": "2"})


def test_cli_train_mpi_without_mpi4py_is_one_line(no_mpi4py, capsys):
    assert cli.main(["train", "--solver", "any.prototxt", "--mpi"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("error: train --mpi needs mpi4py"), err


def test_record_filter_splits_the_stream_round_robin(tmp_path):
    """2 ranks of batch 3 read, batch for batch, the records one layer of batch 6 reads, wrapping the
    10-record DB; the same after a resume (seek) and from a shared rand_skip start."""
    source = write_db(tmp_path / "db")
    whole, whole_top = data_layer(source, 6)
    expected = labels(whole, whole_top, 4)
    assert expected[1] == [6, 7, 8, 9, 0, 1]
    for rank in range(2):
        layer, top = data_layer(source, 3)
        layer.shard(rank, 2)
        assert labels(layer, top, 4) == [batch[rank::2] for batch in expected]
        layer.seek(1)
        assert labels(layer, top, 1) == [expected[1][rank::2]]
        layer.close()
    whole.close()

    skipped, skipped_top = data_layer(source, 4, rand_skip=10, seed=7)
    start = skipped.first_record
    expected = labels(skipped, skipped_top, 2)
    assert expected[0][0] == start
    for rank in range(2):
        layer, top = data_layer(source, 2, rand_skip=10, seed=100 + rank)  # another draw on each rank
        layer.shard(rank, 2, first_record=start)  # rank 0's start, broadcast
        assert labels(layer, top, 2) == [batch[rank::2] for batch in expected]
        layer.close()
    skipped.close()


def test_record_filter_checks_the_rank(tmp_path):
    layer, _ = data_layer(write_db(tmp_path / "db"), 2)
    with pytest.raises(SiameseError, match=r"rank 2 of 2"):
        layer.shard(2, 2)
    layer.close()


def test_a_leveldb_another_process_holds_is_read_through_a_private_copy(tmp_path):
    source = write_db(tmp_path / "db", count=5)
    holder = subprocess.Popen([sys.executable, "-c", "import plyvel, sys; db = plyvel.DB(sys.argv[1]); "
                               "print('open', flush=True); sys.stdin.read()", str(source)],
                              stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline() == "open\n"
        with pytest.raises(plyvel.IOError):
            plyvel.DB(str(source))  # LevelDB's own lock refuses a second process
        reader = open_reader(source, "leveldb")
        view = reader._handle.folder
        assert os.path.isdir(view)
        assert [caffe_pb2.Datum.FromString(v).label for _, v in reader.take(7)] == [0, 1, 2, 3, 4, 0, 1]
        reader.close()
        assert not os.path.exists(view)
    finally:
        holder.communicate("")


def test_bench_scaling_model_of_a_ring_allreduce():
    """scripts/bench_mpi.py (bench.py --mpi): at 2 ranks the model gives back the measured allreduce; at N it is
    2(N-1) latencies plus 2(N-1)/N of the buffer at the measured bandwidth."""
    import importlib.util
    from pathlib import Path

    spec = importlib.util.spec_from_file_location("bench_mpi", Path(__file__).parent.parent / "scripts" / "bench_mpi.py")
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    comm, speedup = bench.scaling_model(compute_ms=20.0, allreduce_ms=1.01, latency_ms=0.01, nbytes=1000, ranks=2)
    assert comm == pytest.approx(1.01) and speedup == pytest.approx(2 * 20 / 21.01)
    comm, speedup = bench.scaling_model(compute_ms=20.0, allreduce_ms=1.01, latency_ms=0.01, nbytes=1000, ranks=64)
    assert comm == pytest.approx(2 * 63 * 0.01 + 2 * 63 / 64 * (1.01 - 2 * 0.01))
    assert speedup == pytest.approx(64 * 20 / (20 + comm))
    comm, _ = bench.network_model(compute_ms=20.0, nbytes=1_250_000, ranks=8, gbytes_per_s=1.25, latency_ms=0.05)
    assert comm == pytest.approx(2 * 7 * 0.05 + 2 * 7 / 8 * 1.0)


def test_layers_without_a_record_filter_are_named():
    """Layers that read a source but cannot be split over ranks (ImageData, HDF5Data) get a warning at start-up."""
    from types import SimpleNamespace

    mpi = pytest.importorskip("siamese_cli.parallel.mpi")
    image_data = caffe_pb2.LayerParameter(name="images", type="ImageData")
    image_data.image_data_param.source = "list.txt"
    hdf5 = caffe_pb2.LayerParameter(name="h5", type="HDF5Data")
    hdf5.hdf5_data_param.source = "files.txt"
    dummy = caffe_pb2.LayerParameter(name="d", type="DummyData")
    dummy.dummy_data_param.shape.add(dim=[2, 3])
    assert mpi._reads_a_source(SimpleNamespace(param=image_data))
    assert mpi._reads_a_source(SimpleNamespace(param=hdf5))
    assert not mpi._reads_a_source(SimpleNamespace(param=dummy))
    assert not mpi._reads_a_source(SimpleNamespace(param=caffe_pb2.LayerParameter(name="i", type="Input")))
