"""IDX reading: raw and gzip, every validation error names the file, the bundled MNIST."""
import gzip
import hashlib
import shutil

import numpy as np
import pytest

from siamese_cli.data import MNIST_DIR, load_mnist, mnist_files, verify_mnist
from siamese_cli.errors import SiameseError
from siamese_cli.io.idx import IMAGES_MAGIC, LABELS_MAGIC, read_idx, read_images_labels


def idx_bytes(array, magic=None):
    array = np.asarray(array, np.uint8)
    magic = magic if magic is not None else 0x0800 + array.ndim
    header = magic.to_bytes(4, "big") + b"".join(int(d).to_bytes(4, "big") for d in array.shape)
    return header + array.tobytes()


def write(path, payload, gz=False):
    path.write_bytes(gzip.compress(payload) if gz else payload)
    return path


IMAGES = np.arange(5 * 3 * 4, dtype=np.uint8).reshape(5, 3, 4)
LABELS = np.array([3, 1, 4, 1, 5], np.uint8)


@pytest.mark.parametrize("gz", [False, True])
def test_round_trip_raw_and_gzip(tmp_path, gz):
    images = read_idx(write(tmp_path / "im", idx_bytes(IMAGES), gz), IMAGES_MAGIC)
    labels = read_idx(write(tmp_path / "lb", idx_bytes(LABELS), gz), LABELS_MAGIC)
    assert images.dtype == np.uint8 and images.shape == (5, 3, 4)
    np.testing.assert_array_equal(images, IMAGES)
    np.testing.assert_array_equal(labels, LABELS)


def test_gzip_is_recognised_by_content_not_name(tmp_path):
    path = write(tmp_path / "labels.idx", idx_bytes(LABELS), gz=True)
    np.testing.assert_array_equal(read_idx(path), LABELS)


def test_wrong_magic_names_file_and_both_numbers(tmp_path):
    path = write(tmp_path / "labels.gz", idx_bytes(LABELS), gz=True)
    with pytest.raises(SiameseError, match=r"labels\.gz: magic number 2049, expected 2051"):
        read_idx(path, IMAGES_MAGIC)


def test_not_an_idx_file(tmp_path):
    path = write(tmp_path / "notes.txt", b"hello world, not IDX")
    with pytest.raises(SiameseError, match=r"notes\.txt: magic number \d+ is not an IDX uint8 file"):
        read_idx(path)


@pytest.mark.parametrize("gz", [False, True])
def test_truncated_data(tmp_path, gz):
    path = write(tmp_path / "im", idx_bytes(IMAGES)[:-7], gz)
    with pytest.raises(SiameseError, match=r"im: truncated: header promises 5x3x4 = 60 bytes of data, file holds 53"):
        read_idx(path)


def test_truncated_header(tmp_path):
    path = write(tmp_path / "im", idx_bytes(IMAGES)[:10])
    with pytest.raises(SiameseError, match=r"header cut short \(10 of 16 bytes\)"):
        read_idx(path)


def test_cut_gzip_stream(tmp_path):
    packed = gzip.compress(idx_bytes(IMAGES))
    path = tmp_path / "im.gz"
    path.write_bytes(packed[: len(packed) // 2])
    with pytest.raises(SiameseError, match=r"im\.gz: gzip stream is cut short"):
        read_idx(path)


def test_trailing_bytes(tmp_path):
    path = write(tmp_path / "lb", idx_bytes(LABELS) + b"\0\0")
    with pytest.raises(SiameseError, match=r"lb: 2 bytes after the 5 items"):
        read_idx(path)


def test_missing_file(tmp_path):
    with pytest.raises(SiameseError, match=r"nothere: no such file"):
        read_idx(tmp_path / "nothere")


def test_images_and_labels_must_agree(tmp_path):
    images = write(tmp_path / "im", idx_bytes(IMAGES))
    labels = write(tmp_path / "lb", idx_bytes(LABELS[:4]))
    with pytest.raises(SiameseError, match=r"lb: 4 labels but .*im holds 5 images"):
        read_images_labels(images, labels)
    good = write(tmp_path / "lb5", idx_bytes(LABELS))
    with pytest.raises(SiameseError, match="magic number 2051, expected 2049"):
        read_images_labels(images, images)
    got_images, got_labels = read_images_labels(images, good)
    np.testing.assert_array_equal(got_labels, LABELS)


def test_bundled_mnist_test_split():
    images, labels = load_mnist("test")
    assert images.shape == (10000, 28, 28) and labels.shape == (10000,)
    assert labels[:10].tolist() == [7, 2, 1, 0, 4, 1, 4, 9, 5, 9]
    assert np.bincount(labels).tolist() == [980, 1135, 1032, 1010, 982, 892, 958, 1028, 974, 1009]
    # the well-known MD5 of the uncompressed files (mnist/README.md): the arrays are the files' items exactly
    assert hashlib.md5(idx_bytes(images)).hexdigest() == "2646ac647ad5339dbf082846283269ea"
    assert hashlib.md5(idx_bytes(labels)).hexdigest() == "27ae3e4e09519cfbb04c329615203637"
    assert mnist_files("train")[0].name == "train-images-idx3-ubyte.gz"
    with pytest.raises(SiameseError, match='unknown MNIST split "val"'):
        mnist_files("val")


def test_verify_mnist_ok_lines_and_damage(tmp_path):
    lines = []
    assert verify_mnist(out=lines.append) == [line[3:] for line in lines]
    assert lines == ["OK t10k-images-idx3-ubyte.gz", "OK t10k-labels-idx1-ubyte.gz",
                     "OK train-images-idx3-ubyte.gz", "OK train-labels-idx1-ubyte.gz"]
    copy = tmp_path / "mnist"
    copy.mkdir()
    shutil.copy(MNIST_DIR / "SHA256SUMS", copy)
    for name in ("t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz", "train-images-idx3-ubyte.gz"):
        shutil.copy(MNIST_DIR / name, copy)
    with pytest.raises(SiameseError, match=r"train-labels-idx1-ubyte\.gz: missing"):
        verify_mnist(copy, out=lambda line: None)
    (copy / "train-labels-idx1-ubyte.gz").write_bytes(b"damaged")
    with pytest.raises(SiameseError, match=r"train-labels-idx1-ubyte\.gz: SHA-256 is [0-9a-f]{64}, SHA256SUMS says"):
        verify_mnist(copy, out=lambda line: None)
