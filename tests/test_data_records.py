"""Data layer: every record checked on its own (DB and key named), encoded (PNG/JPEG) Datums decoded."""
import io

import numpy as np
import pytest
from test_data_layer import close_later, make_layer, random_images, uint8_datum, write_db  # noqa: F401

from siamese_cli.cli import main
from siamese_cli.errors import SiameseError
from siamese_cli.io.db import decode_datum
from siamese_cli.proto import caffe_pb2




def test_each_bad_record_names_db_and_key(tmp_path, close_later):
    good = uint8_datum(random_images(1, (1, 2, 2))[0], 0)
    short = caffe_pb2.Datum(channels=1, height=2, width=2, data=b"abc", label=1)
    long = caffe_pb2.Datum(channels=1, height=2, width=2, data=b"abcde", label=2)
    source = write_db(tmp_path / "db", "lmdb", [("a", good), ("b", short), ("c", long)])
    layer, top = make_layer(source, "lmdb", batch_size=3)
    close_later(layer)
    with pytest.raises(SiameseError, match=r"db: record b holds 3 data bytes and 0 float_data values, not the 4"):
        layer.forward([], top)


def test_corrupt_datum_is_a_clear_error(tmp_path, close_later, capsys):
    good = uint8_datum(random_images(1, (1, 2, 2))[0], 0).SerializeToString()
    path = tmp_path / "db"
    from siamese_cli.io.db import open_writer

    with open_writer(path, "leveldb") as writer:
        writer.put_batch([(b"00000000", good), (b"00000001", b"\xff\xff\xff\xff")])
    layer, top = make_layer(path, batch_size=2)
    close_later(layer)
    with pytest.raises(SiameseError, match=r"db: record 00000001: not a Datum \("):
        layer.forward([], top)
    net = tmp_path / "net.prototxt"
    net.write_text(f'layer {{ name: "d" type: "Data" top: "x" top: "y" data_param {{ source: "{path}" '
                   'batch_size: 2 } }\n')
    layer.close()
    assert main(["time", "--model", str(net), "--iterations", "1"]) == 2
    err = capsys.readouterr().err
    assert "error: " in err and "record 00000001: not a Datum (" in err and "internal error" not in err


def test_missing_db_hint_only_for_the_examples_own_paths(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(SiameseError, match=r"run `siamese create-db` to build the example pair DBs"):
        make_layer("examples/siamese/mnist_siamese_train_leveldb")
    with pytest.raises(SiameseError, match=r"run `siamese create-db --single --backend lmdb`"):
        make_layer("examples/mnist/mnist_test_lmdb", "lmdb")
    with pytest.raises(SiameseError) as error:
        make_layer("my_photos_lmdb", "lmdb")
    assert "create-db" not in str(error.value)


def _png(pixels_hwc, mode):
    from PIL import Image

    out = io.BytesIO()
    Image.fromarray(pixels_hwc, mode).save(out, format="PNG")
    return out.getvalue()


def test_encoded_records_decode_native_color_and_gray(tmp_path, close_later):
    rgb = random_images(2, (3, 4, 5), seed=3).transpose(0, 2, 3, 1)  # H x W x RGB
    records = [(f"{k:08d}", caffe_pb2.Datum(data=_png(rgb[k], "RGB"), encoded=True, label=k)) for k in range(2)]
    source = write_db(tmp_path / "db", "leveldb", records)
    layer, top = make_layer(source, batch_size=2)
    close_later(layer)
    layer.forward([], top)
    bgr = rgb[..., ::-1].transpose(0, 3, 1, 2)
    np.testing.assert_array_equal(top[0].data, bgr.astype(np.float32))
    np.testing.assert_array_equal(top[1].data, [0, 1])
    layer.close()
    gray_layer, gray_top = make_layer(source, batch_size=2, transform={"force_gray": True})
    close_later(gray_layer)
    gray_layer.forward([], gray_top)
    r, g, b = (rgb[..., c].astype(np.float64) for c in range(3))
    luma = (r * 299 + g * 587 + b * 114) / 1000  # ITU-R 601, as OpenCV's grey conversion
    assert gray_top[0].shape == (2, 1, 4, 5)
    assert np.abs(gray_top[0].data[:, 0] - luma).max() <= 1.0


def test_encoded_gray_png_forced_to_color_repeats_the_channel(tmp_path):
    gray = random_images(1, (4, 4), seed=1)[0]
    value = caffe_pb2.Datum(data=_png(gray, "L"), encoded=True, label=3).SerializeToString()
    native, label = decode_datum(value, b"k", "db")
    assert native.shape == (1, 4, 4) and label == 3
    np.testing.assert_array_equal(native[0], gray)
    color, _ = decode_datum(value, b"k", "db", "color")
    assert color.shape == (3, 4, 4) and all(np.array_equal(color[c], gray) for c in range(3))
    bad = caffe_pb2.Datum(data=b"not a png", encoded=True).SerializeToString()
    with pytest.raises(SiameseError, match="db: record k: cannot decode the encoded image"):
        decode_datum(bad, b"k", "db")


def _slow(records, shape):
    """decode_batch's record-by-record path, written out here: each record parsed by protobuf."""
    datums = [caffe_pb2.Datum.FromString(value) for _, value in records]
    pixels = np.stack([np.frombuffer(d.data, np.uint8).reshape(shape) for d in datums])
    return pixels, np.array([d.label for d in datums], np.float32)


def test_uniform_batches_take_the_fast_path_with_the_same_result():
    from siamese_cli.layers.data import _uniform_raw_batch, decode_batch

    images = random_images(6, (2, 3, 4))
    records = [(f"{k:08d}".encode(), uint8_datum(image, k % 2).SerializeToString()) for k, image in enumerate(images)]
    fast = _uniform_raw_batch(records, (2, 3, 4))
    assert fast is not None  # create-db's layout
    data, labels = decode_batch(records, (2, 3, 4), "db")
    expected = _slow(records, (2, 3, 4))
    np.testing.assert_array_equal(data, expected[0])
    np.testing.assert_array_equal(labels, expected[1])
    assert data.dtype == np.uint8 and labels.dtype == np.float32 and data.flags.writeable


@pytest.mark.parametrize("odd", ["label 200", "field order", "float_data", "other shape"])
def test_any_other_layout_decodes_record_by_record(odd):
    """A record that is not byte for byte in create-db's layout sends the batch down the checked path."""
    from siamese_cli.layers.data import _uniform_raw_batch, decode_batch

    images = random_images(4, (1, 2, 2))
    datums = [uint8_datum(image, 1) for image in images]
    if odd == "label 200":
        datums[2].label = 200  # a two-byte varint
        serialized = [d.SerializeToString() for d in datums]
    elif odd == "field order":  # the label written before the pixels: the same Datum, other bytes
        d = datums[1]
        head = caffe_pb2.Datum(channels=1, height=2, width=2, label=1).SerializeToString()
        serialized = [x.SerializeToString() for x in datums]
        serialized[1] = head + caffe_pb2.Datum(data=d.data).SerializeToString()
    elif odd == "float_data":
        datums[3] = caffe_pb2.Datum(channels=1, height=2, width=2, float_data=[1, 2, 3, 4], label=1)
        serialized = [d.SerializeToString() for d in datums]
    else:
        datums[0] = uint8_datum(random_images(1, (1, 1, 4))[0], 1)
        serialized = [d.SerializeToString() for d in datums]
    records = [(f"{k:08d}".encode(), value) for k, value in enumerate(serialized)]
    assert _uniform_raw_batch(records, (1, 2, 2)) is None
    if odd == "other shape":
        with pytest.raises(SiameseError, match="record 00000000 is 1x1x4, the first record is 1x2x2"):
            decode_batch(records, (1, 2, 2), "db")
        return
    data, labels = decode_batch(records, (1, 2, 2), "db")
    parsed = [caffe_pb2.Datum.FromString(value) for value in serialized]
    assert labels.tolist() == [float(d.label) for d in parsed]
    for k, d in enumerate(parsed):
        expected = np.asarray(d.float_data, np.float32) if d.float_data else np.frombuffer(d.data, np.uint8)
        np.testing.assert_array_equal(data[k].ravel(), expected)
