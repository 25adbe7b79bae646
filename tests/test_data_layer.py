"""Data layer: key order and wrap-around, Caffe's transform (checked against a per-pixel reference), both backends."""
import gc
import gzip
import subprocess
import sys
from itertools import product
from pathlib import Path

import numpy as np
import pytest

from siamese_cli.blob import Blob
from siamese_cli.errors import SiameseError
from siamese_cli.io.db import open_reader, open_writer
from siamese_cli.layers import layer_class
from siamese_cli.layers.data import Data
from siamese_cli.proto import caffe_pb2

BACKENDS = ["leveldb", "lmdb"]
ENUM = {"leveldb": caffe_pb2.DataParameter.LEVELDB, "lmdb": caffe_pb2.DataParameter.LMDB}


def write_db(path, backend, records):
    """records: list of (key str, Datum); written in the given order (not key order)."""
    with open_writer(path, backend) as writer:
        writer.put_batch([(key.encode(), datum.SerializeToString()) for key, datum in records])
    return path


def uint8_datum(pixels, label):
    c, h, w = pixels.shape
    return caffe_pb2.Datum(channels=c, height=h, width=w, data=pixels.astype(np.uint8).tobytes(), label=label)


def random_images(count, shape, seed=0):
    return np.random.default_rng(seed).integers(0, 256, (count,) + shape, dtype=np.uint8)


def make_layer(source, backend="leveldb", batch_size=2, phase="TEST", seed=0, transform=None, tops=2, **data):
    param = caffe_pb2.LayerParameter(name="pair_data", type="Data")
    param.top.extend(["data", "label"][:tops])
    param.data_param.source = str(source)
    param.data_param.batch_size = batch_size
    param.data_param.backend = ENUM[backend]
    for field, value in data.items():
        setattr(param.data_param, field, value)
    for field, value in (transform or {}).items():
        if field == "mean_value":
            param.transform_param.mean_value.extend(value)
        else:
            setattr(param.transform_param, field, value)
    layer = layer_class("Data")(param, phase=phase, rng=np.random.default_rng(seed))
    top = [Blob() for _ in range(tops)]
    layer.setup([], top)
    layer.reshape([], top)
    return layer, top


def batches(layer, top, count):
    out = []
    for _ in range(count):
        layer.forward([], top)
        out.append(tuple(blob.data.copy() for blob in top))
    return out


def caffe_reference(pixels, h_off, w_off, mirror, crop=0, mean_file=None, mean_values=None, scale=1.0):
    """Caffe's DataTransformer loop, pixel by pixel, in float32."""
    channels, height, width = pixels.shape
    out_h, out_w = (crop, crop) if crop else (height, width)
    out = np.empty((channels, out_h, out_w), np.float32)
    for c, h, w in product(range(channels), range(out_h), range(out_w)):
        value = np.float32(pixels[c, h_off + h, w_off + w])
        if mean_file is not None:
            value = value - np.float32(mean_file[c, h_off + h, w_off + w])
        elif mean_values is not None:
            value = value - np.float32(mean_values[c])
        out[c, h, out_w - 1 - w if mirror else w] = value * np.float32(scale)
    return out


def matching_choices(output, pixels, crop, **kw):
    """The (h_off, w_off, mirror) choices whose reference equals `output` exactly."""
    _, height, width = pixels.shape
    return [(h, w, m) for h, w, m in product(range(height - crop + 1), range(width - crop + 1), (False, True))
            if np.array_equal(output, caffe_reference(pixels, h, w, m, crop=crop, **kw))]


@pytest.fixture
def close_later():
    layers = []
    yield layers.append
    for layer in layers:
        layer.close()


def test_registered_as_data():
    assert layer_class("Data") is Data


@pytest.mark.parametrize("backend", BACKENDS)
def test_key_order_and_wrap_around(tmp_path, backend, close_later):
    images = random_images(5, (2, 3, 4))
    order = [3, 0, 4, 1, 2]  # insertion order differs from key order
    source = write_db(tmp_path / "db", backend, [(f"{k:08d}", uint8_datum(images[k], 10 + k)) for k in order])
    layer, top = make_layer(source, backend, batch_size=2)
    close_later(layer)
    assert top[0].shape == (2, 2, 3, 4) and top[1].shape == (2,)
    got = batches(layer, top, 4)
    expected_index = [[0, 1], [2, 3], [4, 0], [1, 2]]
    for (data, label), index in zip(got, expected_index):
        assert data.dtype == np.float32 and label.dtype == np.float32
        np.testing.assert_array_equal(label, [10 + k for k in index])
        np.testing.assert_array_equal(data, images[index].astype(np.float32))


def test_single_top_and_float_data_records(tmp_path, close_later):
    values = np.arange(3 * 1 * 2 * 2, dtype=np.float32).reshape(3, 1, 2, 2) / 7
    records = [(f"{k:08d}", caffe_pb2.Datum(channels=1, height=2, width=2, float_data=values[k].ravel(), label=k))
               for k in range(3)]
    layer, top = make_layer(write_db(tmp_path / "db", "lmdb", records), "lmdb", batch_size=3, tops=1,
                            transform={"scale": 2.0})
    close_later(layer)
    layer.forward([], top)
    np.testing.assert_array_equal(top[0].data, values * np.float32(2))


@pytest.mark.parametrize("backend", BACKENDS)
def test_transform_test_phase_centre_crop_mirror_mean_value_scale(tmp_path, backend, close_later):
    images = random_images(16, (2, 5, 6))
    source = write_db(tmp_path / "db", backend, [(f"{k:08d}", uint8_datum(images[k], k)) for k in range(16)])
    kw = {"mean_values": [10.5, 200.0], "scale": 0.00390625}
    layer, top = make_layer(source, backend, batch_size=16, phase="TEST", seed=3,
                            transform={"crop_size": 3, "mirror": True, "mean_value": [10.5, 200.0],
                                       "scale": 0.00390625})
    close_later(layer)
    assert top[0].shape == (16, 2, 3, 3)
    layer.forward([], top)
    mirrored = []
    for k in range(16):
        choices = matching_choices(top[0].data[k], images[k], 3, **kw)
        assert len(choices) == 1 and choices[0][:2] == (1, 1)  # centre: (5-3)//2, (6-3)//2
        mirrored.append(choices[0][2])
    assert 0 < sum(mirrored) < 16  # a coin flip per image, in TEST too


def test_transform_train_random_crop_and_mean_file_at_source_position(tmp_path, close_later):
    images = random_images(32, (2, 5, 5), seed=1)
    mean = np.random.default_rng(2).uniform(0, 255, (1, 2, 5, 5)).astype(np.float32)
    proto = caffe_pb2.BlobProto()
    proto.shape.dim.extend(mean.shape)
    proto.data.extend(mean.ravel().tolist())
    mean_path = tmp_path / "mean.binaryproto"
    mean_path.write_bytes(proto.SerializeToString())
    source = write_db(tmp_path / "db", "leveldb", [(f"{k:08d}", uint8_datum(images[k], k)) for k in range(32)])
    layer, top = make_layer(source, batch_size=32, phase="TRAIN", seed=4,
                            transform={"crop_size": 3, "mirror": True, "mean_file": str(mean_path), "scale": 0.5})
    close_later(layer)
    layer.forward([], top)
    seen = set()
    for k in range(32):
        choices = matching_choices(top[0].data[k], images[k], 3, mean_file=mean[0], scale=0.5)
        assert len(choices) == 1
        seen.add(choices[0])
    offsets = {choice[:2] for choice in seen}
    assert len(offsets) >= 5 and {choice[2] for choice in seen} == {False, True}


def test_legacy_data_param_transform_fields(tmp_path, close_later):
    images = random_images(2, (1, 2, 2))
    source = write_db(tmp_path / "db", "leveldb", [(f"{k:08d}", uint8_datum(images[k], k)) for k in range(2)])
    layer, top = make_layer(source, batch_size=2, scale=0.25)
    close_later(layer)
    layer.forward([], top)
    np.testing.assert_array_equal(top[0].data, images.astype(np.float32) * np.float32(0.25))


def test_transform_errors(tmp_path):
    images = random_images(2, (2, 4, 4))
    source = write_db(tmp_path / "db", "leveldb", [(f"{k:08d}", uint8_datum(images[k], k)) for k in range(2)])
    with pytest.raises(SiameseError, match="crop_size 5 is larger than the 4x4 records"):
        make_layer(source, transform={"crop_size": 5})
    with pytest.raises(SiameseError, match="3 mean_value entries for 2 channels"):
        make_layer(source, transform={"mean_value": [1, 2, 3]})
    proto = caffe_pb2.BlobProto(num=1, channels=1, height=4, width=4, data=[0.0] * 16)
    (tmp_path / "mean").write_bytes(proto.SerializeToString())
    with pytest.raises(SiameseError, match="mean is 1x4x4, the records are 2x4x4"):
        make_layer(source, transform={"mean_file": str(tmp_path / "mean")})
    with pytest.raises(SiameseError, match="mean_file or mean_value, not both"):
        make_layer(source, transform={"mean_file": str(tmp_path / "mean"), "mean_value": [1]})
    # the failed setups released the database
    open_reader(source).close()


def test_seeded_runs_repeat_and_seek_resumes_exactly(tmp_path, close_later):
    images = random_images(7, (1, 6, 6))
    source = write_db(tmp_path / "db", "lmdb", [(f"{k:08d}", uint8_datum(images[k], k)) for k in range(7)])
    transform = {"crop_size": 4, "mirror": True, "scale": 0.1}
    runs = []
    for _ in range(2):
        layer, top = make_layer(source, "lmdb", batch_size=3, phase="TRAIN", seed=9, transform=transform)
        close_later(layer)
        runs.append((layer, top, batches(layer, top, 4)))
    for (first_data, first_label), (second_data, second_label) in zip(runs[0][2], runs[1][2]):
        np.testing.assert_array_equal(first_data, second_data)
        np.testing.assert_array_equal(first_label, second_label)
    layer, top = make_layer(source, "lmdb", batch_size=3, phase="TRAIN", seed=9, transform=transform)
    close_later(layer)
    layer.seek(2)
    for data, label in runs[0][2][2:]:
        layer.forward([], top)
        np.testing.assert_array_equal(top[0].data, data)
        np.testing.assert_array_equal(top[1].data, label)
    assert layer.batches_served == 4
    resumed, resumed_top = make_layer(source, "lmdb", batch_size=3, phase="TRAIN", seed=9, transform=transform)
    close_later(resumed)
    resumed.skip_batches(1)
    resumed.skip_batches(2)
    resumed.forward([], resumed_top)
    np.testing.assert_array_equal(resumed_top[0].data, runs[0][2][3][0])
    other, other_top = make_layer(source, "lmdb", batch_size=3, phase="TRAIN", seed=10, transform=transform)
    close_later(other)
    other.forward([], other_top)
    assert not np.array_equal(other_top[0].data, runs[0][2][0][0])


def test_rand_skip_starts_at_a_record_before_rand_skip(tmp_path, close_later):
    images = random_images(6, (1, 2, 2))
    source = write_db(tmp_path / "db", "lmdb", [(f"{k:08d}", uint8_datum(images[k], k)) for k in range(6)])
    starts = set()
    for seed in range(20):
        layer, top = make_layer(source, "lmdb", batch_size=4, seed=seed, rand_skip=3)
        close_later(layer)
        layer.forward([], top)
        first = int(top[1].data[0])
        np.testing.assert_array_equal(top[1].data, [(first + k) % 6 for k in range(4)])
        starts.add(first)
    assert starts == {0, 1, 2}


def test_prefetch_depth(tmp_path, close_later):
    images = random_images(2, (1, 2, 2))
    source = write_db(tmp_path / "db", "leveldb", [(f"{k:08d}", uint8_datum(images[k], k)) for k in range(2)])
    layer, _ = make_layer(source)
    close_later(layer)
    assert layer._feed._queue.maxsize == 4  # Caffe's default prefetch
    layer.close()
    layer, _ = make_layer(source, prefetch=1)
    close_later(layer)
    assert layer._feed._queue.maxsize == 1


def leveldb_is_free(path):
    import plyvel

    try:
        plyvel.DB(str(path)).close()
        return True
    except plyvel.IOError:
        return False


def test_close_and_collection_release_leveldb(tmp_path):
    images = random_images(3, (1, 2, 2))
    source = write_db(tmp_path / "db", "leveldb", [(f"{k:08d}", uint8_datum(images[k], k)) for k in range(3)])
    layer, top = make_layer(source)
    assert not leveldb_is_free(source)
    thread = layer._feed._thread
    layer.close()
    layer.close()
    assert not thread.is_alive()
    assert leveldb_is_free(source)
    with pytest.raises(SiameseError, match="was closed"):
        layer.forward([], top)
    layer, top = make_layer(source)
    del layer
    gc.collect()
    assert leveldb_is_free(source)


@pytest.mark.parametrize("backend", BACKENDS)
def test_two_layers_share_one_source_with_own_cursors(tmp_path, backend, close_later):
    images = random_images(5, (1, 2, 2))
    source = write_db(tmp_path / "db", backend, [(f"{k:08d}", uint8_datum(images[k], k)) for k in range(5)])
    train, train_top = make_layer(source, backend, batch_size=3, phase="TRAIN")
    test, test_top = make_layer(source, backend, batch_size=2)
    close_later(test)
    assert [list(label) for _, label in batches(train, train_top, 2)] == [[0, 1, 2], [3, 4, 0]]
    train.close()
    assert [list(label) for _, label in batches(test, test_top, 2)] == [[0, 1], [2, 3]]


def test_no_hang_at_interpreter_exit(tmp_path):
    images = random_images(50, (2, 8, 8))
    source = write_db(tmp_path / "db", "leveldb", [(f"{k:08d}", uint8_datum(images[k], k)) for k in range(50)])
    script = f"""
import numpy as np
from siamese_cli.blob import Blob
from siamese_cli.layers.data import Data
from siamese_cli.proto import caffe_pb2
p = caffe_pb2.LayerParameter(name="d", type="Data", top=["data", "label"])
p.data_param.source = {str(source)!r}
p.data_param.batch_size = 4
p.transform_param.mirror = True
layer = Data(p, phase="TRAIN", rng=np.random.default_rng(0))
top = [Blob(), Blob()]
layer.setup([], top); layer.reshape([], top); layer.forward([], top)
print("done", top[0].shape)
"""
    root = Path(__file__).resolve().parents[1]
    result = subprocess.run([sys.executable, "-c", script], cwd=root, capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "done (4, 2, 8, 8)"


def test_missing_and_wrong_sources(tmp_path):
    with pytest.raises(SiameseError, match=r"nothere: no such database \(relative paths"):
        make_layer(tmp_path / "nothere")
    images = random_images(1, (1, 2, 2))
    source = write_db(tmp_path / "db", "lmdb", [("00000000", uint8_datum(images[0], 0))])
    with pytest.raises(SiameseError, match="is an LMDB database, but LevelDB was asked for; set backend: LMDB"):
        make_layer(source, "leveldb")
    param = caffe_pb2.LayerParameter(name="d", type="Data", top=["data"])
    param.data_param.source = str(source)
    with pytest.raises(SiameseError, match="batch_size must be at least 1"):
        Data(param, rng=np.random.default_rng(0)).setup([], [Blob()])


def test_record_of_another_shape_is_reported(tmp_path, close_later):
    images = random_images(3, (1, 2, 2))
    records = [(f"{k:08d}", uint8_datum(images[k], k)) for k in range(3)]
    records[2] = ("00000002", uint8_datum(random_images(1, (1, 3, 2))[0], 2))
    layer, top = make_layer(write_db(tmp_path / "db", "leveldb", records), batch_size=3)
    close_later(layer)
    with pytest.raises(SiameseError, match="record 00000002 is 1x3x2, the first record is 1x2x2"):
        layer.forward([], top)
    with pytest.raises(SiameseError, match="record 00000002"):
        layer.forward([], top)


@pytest.mark.parametrize("backend", BACKENDS)
def test_reads_create_db_pairs(tmp_path, backend, close_later):
    from siamese_cli.tools.create_db import create_pair_db, draw_pairs

    rng = np.random.default_rng(5)
    images = rng.integers(0, 256, (40, 5, 5), dtype=np.uint8)
    labels = rng.integers(0, 3, 40).astype(np.uint8)
    for name, array in (("im.gz", images), ("lb.gz", labels)):
        header = (0x0800 + array.ndim).to_bytes(4, "big") + b"".join(d.to_bytes(4, "big") for d in array.shape)
        (tmp_path / name).write_bytes(gzip.compress(header + array.tobytes()))
    create_pair_db(tmp_path / "im.gz", tmp_path / "lb.gz", tmp_path / "db", seed=2, backend=backend)
    layer, top = make_layer(tmp_path / "db", backend, batch_size=16, transform={"scale": 0.00390625})
    close_later(layer)
    first, second = draw_pairs(labels, np.random.default_rng(2))
    got = batches(layer, top, 3)
    index = np.arange(48) % 40
    data = np.concatenate([d for d, _ in got])
    label = np.concatenate([lb for _, lb in got])
    np.testing.assert_array_equal(data[:, 0], images[first[index]] * np.float32(0.00390625))
    np.testing.assert_array_equal(data[:, 1], images[second[index]] * np.float32(0.00390625))
    np.testing.assert_array_equal(label, labels[first[index]] == labels[second[index]])


@pytest.mark.parametrize("backend", ["leveldb", "lmdb"])
def test_reader_opened_by_relative_path_closes_after_a_change_of_directory(tmp_path, monkeypatch, backend):
    images = random_images(2, (1, 2, 2))
    write_db(tmp_path / "db", backend, [(f"{k:08d}", uint8_datum(images[k], k)) for k in range(2)])
    monkeypatch.chdir(tmp_path)
    reader = open_reader("db", backend)
    monkeypatch.chdir(tmp_path.parent)
    reader.close()  # released under the key it was opened with
    with open_reader(tmp_path / "db", backend) as again:  # and the DB can be opened afresh
        assert again.next()[0] == b"00000000"
