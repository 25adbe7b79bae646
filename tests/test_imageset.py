"""convert-imageset, compute-image-mean, ImageData and pairs from a list, on a folder of images the test makes."""
import numpy as np
import pytest
from PIL import Image

from siamese_cli.blob import Blob
from siamese_cli.cli import main
from siamese_cli.errors import SiameseError
from siamese_cli.io.db import decode_datum, open_reader
from siamese_cli.io.files import read_binary_proto
from siamese_cli.layers import layer_class
from siamese_cli.proto import caffe_pb2


@pytest.fixture
def photos(tmp_path):
    """8x6 images: PNG colour, PNG grey, JPEG colour, JPEG grey, and a list naming one missing file."""
    rng = np.random.default_rng(5)
    root = tmp_path / "photos"
    (root / "a").mkdir(parents=True)
    (root / "b").mkdir()
    rgb = [rng.integers(0, 256, (6, 8, 3), dtype=np.uint8) for _ in range(4)]
    gray = [rng.integers(0, 256, (6, 8), dtype=np.uint8) for _ in range(2)]
    Image.fromarray(rgb[0], "RGB").save(root / "a" / "c0.png")
    Image.fromarray(gray[0], "L").save(root / "a" / "g0.png")
    Image.fromarray(rgb[1], "RGB").save(root / "b" / "c1.jpg", quality=95)
    Image.fromarray(gray[1], "L").save(root / "b" / "g1.jpeg", quality=95)
    Image.fromarray(rgb[2], "RGB").save(root / "b" / "c2.png")
    lines = ["a/c0.png 0", "a/g0.png 0", "b/c1.jpg 1", "a/missing.png 0", "b/g1.jpeg 1", "b/c2.png 1"]
    (tmp_path / "list.txt").write_text("\n".join(lines) + "\n")
    return {"root": root, "list": tmp_path / "list.txt", "rgb": rgb, "gray": gray}


def records(path, backend="lmdb"):
    with open_reader(path, backend) as reader:
        return reader.take(len(reader))


def test_convert_imageset_raw_records_as_caffe_writes_them(tmp_path, photos, capsys):
    db = tmp_path / "db"
    assert main(["convert-imageset", f"{photos['root']}/", str(photos["list"]), str(db)]) == 0
    out = capsys.readouterr()
    assert "list.txt:4:" in out.err and "missing.png" in out.err and "skipped" in out.err
    assert "5 records, 1 skipped (list lines 4)" in out.out
    found = records(db)
    assert [key for key, _ in found] == [b"00000000_a/c0.png", b"00000001_a/g0.png", b"00000002_b/c1.jpg",
                                         b"00000004_b/g1.jpeg", b"00000005_b/c2.png"]
    datum = caffe_pb2.Datum.FromString(found[0][1])
    assert (datum.channels, datum.height, datum.width, datum.label, datum.encoded) == (3, 6, 8, 0, False)
    bgr = photos["rgb"][0][:, :, ::-1].transpose(2, 0, 1)
    assert datum.data == bgr.tobytes()  # raw BGR, C x H x W
    grey_as_colour = caffe_pb2.Datum.FromString(found[1][1])
    assert grey_as_colour.channels == 3
    np.testing.assert_array_equal(np.frombuffer(grey_as_colour.data, np.uint8).reshape(3, 6, 8)[1], photos["gray"][0])
    assert [caffe_pb2.Datum.FromString(v).label for _, v in found] == [0, 0, 1, 1, 1]


def test_convert_imageset_gray_resize_shuffle(tmp_path, photos):
    db = tmp_path / "db"
    assert main(["convert-imageset", str(photos["root"]), str(photos["list"]), str(db), "--gray",
                 "--resize_height", "3", "--resize_width", "4", "--shuffle", "--seed", "2",
                 "--backend", "leveldb", "--check_size"]) == 0
    found = records(db, "leveldb")
    datum = caffe_pb2.Datum.FromString(found[0][1])
    assert (datum.channels, datum.height, datum.width) == (1, 3, 4)
    names = sorted(key.split(b"_", 1)[1] for key, _ in found)
    assert names == sorted([b"a/c0.png", b"a/g0.png", b"b/c1.jpg", b"b/g1.jpeg", b"b/c2.png"])
    order = [key for key, _ in found]
    assert order != sorted(order, key=lambda k: k.split(b"_", 1)[1])  # shuffled: positions differ from list order
    db2 = tmp_path / "db2"
    main(["convert-imageset", str(photos["root"]), str(photos["list"]), str(db2), "--gray", "--resize_height", "3",
          "--resize_width", "4", "--shuffle", "--seed", "2", "--backend", "leveldb"])
    assert records(db2, "leveldb") == found  # the seed fixes the order


def test_convert_imageset_encoded_keeps_or_reencodes(tmp_path, photos):
    db = tmp_path / "enc"
    assert main(["convert-imageset", str(photos["root"]), str(photos["list"]), str(db), "--encoded"]) == 0
    found = dict(records(db))
    datum = caffe_pb2.Datum.FromString(found[b"00000002_b/c1.jpg"])
    assert datum.encoded and datum.data == (photos["root"] / "b" / "c1.jpg").read_bytes()
    assert datum.channels == 0 and datum.label == 1
    db2 = tmp_path / "png"
    assert main(["convert-imageset", str(photos["root"]), str(photos["list"]), str(db2), "--encode_type", "png"]) == 0
    again = caffe_pb2.Datum.FromString(dict(records(db2))[b"00000000_a/c0.png"])
    assert again.data[:8] == b"\x89PNG\r\n\x1a\n"
    pixels, _ = decode_datum(again.SerializeToString(), b"k", "db")
    np.testing.assert_array_equal(pixels, photos["rgb"][0][:, :, ::-1].transpose(2, 0, 1))


def test_check_size_refuses_a_different_size(tmp_path, photos):
    Image.fromarray(np.zeros((5, 5, 3), np.uint8), "RGB").save(photos["root"] / "odd.png")
    photos["list"].write_text("a/c0.png 0\nodd.png 1\n")
    with pytest.raises(SiameseError, match=r"list.txt:2: odd.png is 3x5x5, the first image is 3x6x8"):
        from siamese_cli.tools.convert_imageset import convert_imageset

        convert_imageset(photos["root"], photos["list"], tmp_path / "db", check_size=True)
    assert not (tmp_path / "db").exists()


def test_compute_image_mean_values_and_mean_file(tmp_path, photos):
    photos["list"].write_text("a/c0.png 0\nb/c2.png 1\na/g0.png 0\n")
    db = tmp_path / "db"
    main(["convert-imageset", str(photos["root"]), str(photos["list"]), str(db)])
    mean_path = tmp_path / "mean.binaryproto"
    assert main(["compute-image-mean", str(db), str(mean_path)]) == 0
    blob = read_binary_proto(mean_path, caffe_pb2.BlobProto())
    assert (blob.num, blob.channels, blob.height, blob.width) == (1, 3, 6, 8)
    stack = [photos["rgb"][0][:, :, ::-1], photos["rgb"][2][:, :, ::-1], np.repeat(photos["gray"][0][..., None], 3, 2)]
    expected = np.mean([s.transpose(2, 0, 1).astype(np.float64) for s in stack], axis=0)
    np.testing.assert_allclose(np.array(blob.data).reshape(3, 6, 8), expected, rtol=1e-6)
    # transform_param.mean_file takes it: a Data layer over the same DB gives record - mean
    param = caffe_pb2.LayerParameter(name="d", type="Data", top=["data", "label"])
    param.data_param.source, param.data_param.batch_size = str(db), 3
    param.data_param.backend = caffe_pb2.DataParameter.LMDB
    param.transform_param.mean_file = str(mean_path)
    layer = layer_class("Data")(param, phase="TEST", rng=np.random.default_rng(0))
    top = [Blob(), Blob()]
    layer.setup([], top)
    layer.forward([], top)
    layer.close()
    np.testing.assert_allclose(top[0].data.sum(axis=0), 0, atol=1e-3)


def test_image_data_layer_reads_resizes_and_shuffles(tmp_path, photos):
    photos["list"].write_text("a/c0.png 0\na/g0.png 1\nb/c2.png 2\n")
    param = caffe_pb2.LayerParameter(name="img", type="ImageData", top=["data", "label"])
    p = param.image_data_param
    p.source, p.root_folder, p.batch_size, p.is_color = str(photos["list"]), str(photos["root"]), 2, False
    param.transform_param.scale = 0.5
    layer = layer_class("ImageData")(param, phase="TEST", rng=np.random.default_rng(0))
    top = [Blob(), Blob()]
    layer.setup([], top)
    layer.forward([], top)
    assert top[0].shape == (2, 1, 6, 8)
    np.testing.assert_array_equal(top[1].data, [0, 1])
    np.testing.assert_array_equal(top[0].data[1, 0], photos["gray"][0] * np.float32(0.5))
    layer.forward([], top)
    np.testing.assert_array_equal(top[1].data, [2, 0])  # wraps around the list
    layer.close()
    p.shuffle, p.new_height, p.new_width = True, 3, 4
    seen = []
    for seed in (0, 0, 1):
        layer = layer_class("ImageData")(param, phase="TEST", rng=np.random.default_rng(seed))
        layer.setup([], top)
        labels = []
        for _ in range(6):
            layer.forward([], top)
            labels.extend(top[1].data.astype(int))
        layer.close()
        assert top[0].shape == (2, 1, 3, 4)
        assert all(sorted(labels[k:k + 3]) == [0, 1, 2] for k in range(0, 12, 3))  # each pass is a permutation
        seen.append(labels)
    assert seen[0] == seen[1] and seen[0] != seen[2]


def test_image_data_missing_file_names_the_list_line(tmp_path, photos):
    param = caffe_pb2.LayerParameter(name="img", type="ImageData", top=["data", "label"])
    p = param.image_data_param
    p.source, p.root_folder, p.batch_size = str(photos["list"]), str(photos["root"]), 4
    layer = layer_class("ImageData")(param, phase="TEST", rng=np.random.default_rng(0))
    top = [Blob(), Blob()]
    layer.setup([], top)
    with pytest.raises(SiameseError, match=r"list.txt:4: .*missing.png: no such file"):
        layer.forward([], top)
    layer.close()


NET = """
name: "tiny"
layer {{ name: "d" type: "{kind}" top: "data" top: "label" transform_param {{ scale: 0.00390625 }} {param} }}
layer {{ name: "ip" type: "InnerProduct" bottom: "data" top: "ip" inner_product_param {{ num_output: 2
         weight_filler {{ type: "xavier" }} }} }}
layer {{ name: "loss" type: "SoftmaxWithLoss" bottom: "ip" bottom: "label" top: "loss" }}
"""


@pytest.mark.parametrize("kind", ["ImageData", "Data"])
def test_a_few_training_iterations(tmp_path, photos, kind, monkeypatch):
    from siamese_cli.solvers import load_solver

    monkeypatch.chdir(tmp_path)
    if kind == "Data":
        main(["convert-imageset", str(photos["root"]), str(photos["list"]), "db", "--encoded", "--gray",
              "--resize_height", "6", "--resize_width", "8"])
        param = 'data_param { source: "db" backend: LMDB batch_size: 2 }'
    else:
        param = (f'image_data_param {{ source: "{photos["list"]}" root_folder: "{photos["root"]}" batch_size: 2 '
                 'shuffle: true is_color: false }')
        photos["list"].write_text("a/c0.png 0\na/g0.png 0\nb/c1.jpg 1\nb/g1.jpeg 1\n")
    (tmp_path / "net.prototxt").write_text(NET.format(kind=kind, param=param))
    (tmp_path / "solver.prototxt").write_text('net: "net.prototxt" base_lr: 0.1 lr_policy: "fixed" max_iter: 4 '
                                              'display: 1 random_seed: 1 snapshot_after_train: false\n')
    solver = load_solver("solver.prototxt")
    before = solver.net.params["ip"][0].data.copy()
    solver.solve()
    assert solver.iter == 4 and np.isfinite(solver.net.params["ip"][0].data).all()
    assert not np.array_equal(before, solver.net.params["ip"][0].data)
    assert solver.net.blobs["data"].shape == (2, 1, 6, 8)


def test_create_db_pairs_from_a_list(tmp_path, photos):
    db = tmp_path / "pairs"
    prefix = tmp_path / "test"
    assert main(["create-db", "--list", str(photos["list"]), "--root", str(photos["root"]), str(db),
                 "--resize", "4", "4", "--balanced", "--seed", "3", "--save-idx", str(prefix)]) == 0
    found = records(db, "leveldb")
    assert len(found) == 5
    labels = []
    for _, value in found:
        datum = caffe_pb2.Datum.FromString(value)
        assert (datum.channels, datum.height, datum.width) == (2, 4, 4)
        labels.append(datum.label)
    assert sum(labels) == 2  # --balanced: half (rounded down) similar
    from siamese_cli.io.idx import read_images_labels

    images, idx_labels = read_images_labels(f"{prefix}-images-idx3-ubyte", f"{prefix}-labels-idx1-ubyte")
    assert images.shape == (5, 4, 4) and sorted(idx_labels) == [0, 0, 1, 1, 1]
    grey = np.asarray(Image.open(photos["root"] / "a" / "g0.png").resize((4, 4), Image.Resampling.BILINEAR))
    assert any(np.array_equal(image, grey) for image in images)
