"""create-db: Caffe's pair records (decoded with caffe_pb2), seeds, both backends, bad input leaves nothing."""
import gzip
import os

import numpy as np
import pytest

from siamese_cli.cli import main
from siamese_cli.errors import SiameseError
from siamese_cli.io import db as dbmod
from siamese_cli.io.db import open_reader
from siamese_cli.proto import caffe_pb2
from siamese_cli.io.datum_layout import datum_header
from siamese_cli.tools.create_db import create_example_dbs, create_pair_db, draw_pairs


def idx_bytes(array):
    array = np.asarray(array, np.uint8)
    header = (0x0800 + array.ndim).to_bytes(4, "big") + b"".join(int(d).to_bytes(4, "big") for d in array.shape)
    return header + array.tobytes()


def make_inputs(folder, count=60, height=4, width=3, classes=5, gz=True):
    """Images whose first pixel is their index (so a record's halves tell i and j), labels cycling."""
    rng = np.random.default_rng(123)
    images = rng.integers(0, 256, (count, height, width), dtype=np.uint8)
    images[:, 0, 0] = np.arange(count)
    labels = (np.arange(count) % classes).astype(np.uint8)
    suffix = ".gz" if gz else ""
    paths = folder / f"images{suffix}", folder / f"labels{suffix}"
    for path, array in zip(paths, (images, labels)):
        payload = idx_bytes(array)
        path.write_bytes(gzip.compress(payload) if gz else payload)
    return images, labels, paths


def read_all(path, backend):
    with open_reader(path, backend) as reader:
        return [reader.next() for _ in range(len(reader))]


def entries(folder):
    return sorted(os.listdir(folder))


@pytest.mark.parametrize("backend", ["leveldb", "lmdb"])
def test_records_are_caffes_pair_datums(tmp_path, backend, capsys):
    images, labels, (image_path, label_path) = make_inputs(tmp_path)
    target = tmp_path / "pairs"
    assert create_pair_db(image_path, label_path, target, seed=7, backend=backend) == 60
    records = read_all(target, backend)
    assert [key for key, _ in records] == [b"%08d" % k for k in range(60)]
    first, second = draw_pairs(labels, np.random.default_rng(7))
    for k, (key, value) in enumerate(records):
        datum = caffe_pb2.Datum.FromString(value)
        assert (datum.channels, datum.height, datum.width) == (2, 4, 3)
        assert not datum.float_data and not datum.encoded
        pixels = np.frombuffer(datum.data, np.uint8).reshape(2, 4, 3)
        i, j = pixels[0, 0, 0], pixels[1, 0, 0]
        assert (i, j) == (first[k], second[k])
        np.testing.assert_array_equal(pixels[0], images[i])
        np.testing.assert_array_equal(pixels[1], images[j])
        assert datum.label == int(labels[i] == labels[j])
        # byte for byte what protobuf writes for the same message (label 0 included: proto2 field set)
        expected = caffe_pb2.Datum(channels=2, height=4, width=3, data=datum.data, label=datum.label)
        assert value == expected.SerializeToString()
    line = capsys.readouterr().out.strip()
    similar = np.mean(labels[first] == labels[second])
    assert line.startswith(f"{target}: 60 records, {similar:.2%} similar, {backend}, seed 7, ")
    assert line.endswith(" s")


def test_datum_header_matches_protobuf_for_multibyte_varints():
    for shape in [(2, 28, 28), (3, 300, 227), (1, 1, 1), (200, 1, 1)]:
        data = bytes(int(np.prod(shape)))
        serialized = caffe_pb2.Datum(channels=shape[0], height=shape[1], width=shape[2], data=data).SerializeToString()
        assert serialized == datum_header(*shape) + data


def test_same_seed_same_db_other_seed_differs(tmp_path):
    _, _, (images, labels) = make_inputs(tmp_path, gz=False)
    for name, seed in (("a", 3), ("b", 3), ("c", 4)):
        create_pair_db(images, labels, tmp_path / name, seed=seed)
    a, b, c = (read_all(tmp_path / name, "leveldb") for name in "abc")
    assert a == b
    assert a != c


def test_uniform_draw_is_about_a_tenth_similar_and_balanced_is_half():
    labels = np.repeat(np.arange(10, dtype=np.uint8), 600)
    first, second = draw_pairs(labels, np.random.default_rng(0))
    assert 0.09 < np.mean(labels[first] == labels[second]) < 0.11
    assert len(np.unique(first)) > 3500 and len(np.unique(second)) > 3500  # with replacement, all over
    first, second = draw_pairs(labels, np.random.default_rng(0), balanced=True)
    same = labels[first] == labels[second]
    assert same.sum() == 3000
    assert np.bincount(labels[second[~same]], minlength=10).min() > 200  # dissimilar partners from every digit
    with pytest.raises(SiameseError, match="at least two different labels"):
        draw_pairs(np.zeros(10, np.uint8), np.random.default_rng(0), balanced=True)


def test_balanced_db(tmp_path):
    _, labels, (images, label_path) = make_inputs(tmp_path)
    create_pair_db(images, label_path, tmp_path / "db", balanced=True)
    similar = [caffe_pb2.Datum.FromString(v).label for _, v in read_all(tmp_path / "db", "leveldb")]
    assert sum(similar) == 30


def bad_input_cases(tmp_path):
    images, labels, (image_path, label_path) = make_inputs(tmp_path, gz=False)
    (tmp_path / "short").write_bytes(idx_bytes(labels)[:-5])
    (tmp_path / "fewer").write_bytes(idx_bytes(labels[:50]))
    return [
        ((label_path, label_path), r"labels: magic number 2049, expected 2051"),
        ((image_path, image_path), r"images: magic number 2051, expected 2049"),
        ((image_path, tmp_path / "fewer"), r"fewer: 50 labels but .*images holds 60 images"),
        ((image_path, tmp_path / "short"), r"short: truncated: header promises 60 = 60 bytes of data, file holds 55"),
    ]


def test_bad_inputs_raise_and_leave_nothing(tmp_path):
    for (images, labels), message in bad_input_cases(tmp_path):
        before = entries(tmp_path)
        with pytest.raises(SiameseError, match=message):
            create_pair_db(images, labels, tmp_path / "out" / "deeper" / "db")
        assert entries(tmp_path) == before


def test_failure_while_writing_leaves_nothing(tmp_path, monkeypatch):
    _, _, (images, labels) = make_inputs(tmp_path, count=3000)
    calls = []

    def failing_put(self, records):
        calls.append(1)
        if len(calls) == 2:
            raise OSError("disk full")
        real_put(self, records)

    real_put = dbmod.Writer.put_batch
    monkeypatch.setattr(dbmod.Writer, "put_batch", failing_put)
    before = entries(tmp_path)
    with pytest.raises(SiameseError, match=r"new/db: cannot write the database: disk full"):
        create_pair_db(images, labels, tmp_path / "new" / "db")
    assert len(calls) == 2
    assert entries(tmp_path) == before


def test_existing_db_needs_force(tmp_path, capsys):
    _, _, (images, labels) = make_inputs(tmp_path)
    target = tmp_path / "db"
    create_pair_db(images, labels, target, seed=1)
    original = read_all(target, "leveldb")
    before = entries(tmp_path)
    with pytest.raises(SiameseError, match=r"db: already exists; pass --force to replace it"):
        create_pair_db(images, labels, target, seed=2)
    assert read_all(target, "leveldb") == original and entries(tmp_path) == before
    create_pair_db(images, labels, target, seed=2, backend="lmdb", force=True)
    assert entries(tmp_path) == before
    replaced = read_all(target, "lmdb")
    assert len(replaced) == 60 and replaced != original
    with pytest.raises(SiameseError, match="is an LMDB database, but LevelDB was asked for"):
        open_reader(target, "leveldb")


def test_force_never_replaces_a_folder_that_is_not_a_db(tmp_path):
    _, _, (images, labels) = make_inputs(tmp_path)
    precious = tmp_path / "precious"
    precious.mkdir()
    (precious / "thesis.tex").write_text("keep me")
    with pytest.raises(SiameseError, match="is not a LevelDB/LMDB database; refusing to replace it, even with --force"):
        create_pair_db(images, labels, precious, force=True)
    assert (precious / "thesis.tex").read_text() == "keep me"
    with pytest.raises(SiameseError, match="not a database folder"):
        create_pair_db(images, labels, images, force=True)


def test_cli_create_db(tmp_path, capsys):
    _, _, (images, labels) = make_inputs(tmp_path)
    target = tmp_path / "cli_db"
    assert main(["create-db", str(images), str(labels), str(target), "--seed", "5", "--backend", "lmdb"]) == 0
    assert capsys.readouterr().out.startswith(f"{target}: 60 records, ")
    assert main(["create-db", str(images), str(labels), str(target)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "already exists; pass --force" in err
    assert main(["create-db", str(labels), str(images), str(tmp_path / "x")]) == 2
    assert "magic number 2049, expected 2051" in capsys.readouterr().err
    assert not (tmp_path / "x").exists()


def test_example_dbs_from_bundled_mnist(tmp_path, monkeypatch, capsys):
    from siamese_cli.data import load_mnist

    monkeypatch.chdir(tmp_path)
    assert create_example_dbs(seed=0) == {"train": 60000, "test": 10000}
    lines = capsys.readouterr().out.splitlines()
    assert [line.split(":")[0] for line in lines] == [
        os.path.join("examples", "siamese", "mnist_siamese_train_leveldb"),
        os.path.join("examples", "siamese", "mnist_siamese_test_leveldb"),
    ]
    assert "seed 0" in lines[0] and "seed 1" in lines[1]
    assert entries(tmp_path / "examples" / "siamese") == ["mnist_siamese_test_leveldb", "mnist_siamese_train_leveldb"]
    images, labels = load_mnist("test")
    first, second = draw_pairs(labels, np.random.default_rng(1))
    with open_reader("examples/siamese/mnist_siamese_test_leveldb") as reader:
        assert len(reader) == 10000
        for k in range(3):
            key, value = reader.next()
            datum = caffe_pb2.Datum.FromString(value)
            assert key == b"%08d" % k and (datum.channels, datum.height, datum.width) == (2, 28, 28)
            np.testing.assert_array_equal(np.frombuffer(datum.data, np.uint8)[:784], images[first[k]].ravel())
            np.testing.assert_array_equal(np.frombuffer(datum.data, np.uint8)[784:], images[second[k]].ravel())
            assert datum.label == int(labels[first[k]] == labels[second[k]])
    with pytest.raises(SiameseError, match="mnist_siamese_train_leveldb: already exists"):
        create_example_dbs(seed=0)
    assert capsys.readouterr().out == ""


@pytest.mark.parametrize("backend", ["leveldb", "lmdb"])
def test_single_image_db_is_convert_mnist_data(tmp_path, backend, capsys):
    """--single: Caffe's convert_mnist_data layout, one 1-channel Datum per image, label = the digit."""
    from siamese_cli.tools.create_db import create_image_db

    image_array, label_array, (images, labels) = make_inputs(tmp_path, count=9)
    assert create_image_db(images, labels, tmp_path / "single", backend=backend) == 9
    records = read_all(tmp_path / "single", backend)
    assert [key for key, _ in records] == [b"%08d" % k for k in range(9)]
    for k, (_, value) in enumerate(records):
        datum = caffe_pb2.Datum()
        datum.ParseFromString(value)
        assert (datum.channels, datum.height, datum.width, datum.label) == (1, 4, 3, label_array[k])
        assert datum.data == image_array[k].tobytes()
        assert value == caffe_pb2.Datum(channels=1, height=4, width=3, data=image_array[k].tobytes(),
                                        label=int(label_array[k])).SerializeToString()


def test_lmdb_write_error_is_one_line(tmp_path, monkeypatch):
    import lmdb

    _, _, (images, labels) = make_inputs(tmp_path)

    def failing_put(self, records):
        raise lmdb.DiskError("mdb_put: No space left on device")

    monkeypatch.setattr(dbmod.Writer, "put_batch", failing_put)
    with pytest.raises(SiameseError, match=r"db: cannot write the database: mdb_put: No space left on device"):
        create_pair_db(images, labels, tmp_path / "db", backend="lmdb")
    assert not (tmp_path / "db").exists()
