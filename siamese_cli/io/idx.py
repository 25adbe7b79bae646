"""IDX files (the MNIST format), raw or gzip-compressed, read into uint8 arrays.

An IDX file is a big-endian header (magic: two zero bytes, a type code, the number
of dimensions; then one uint32 per dimension) followed by the items. MNIST uses
type 0x08 (uint8): magic 2051 for images (N x rows x cols), 2049 for labels (N).
Every check here names the file, because a wrong file is the usual mistake.
"""
import gzip
import zlib
from pathlib import Path

import numpy as np

from ..errors import SiameseError

IMAGES_MAGIC = 2051
LABELS_MAGIC = 2049
_UINT8 = 0x08
_GZIP_MAGIC = b"\x1f\x8b"
_KIND = {IMAGES_MAGIC: "an image file (magic 2051)", LABELS_MAGIC: "a label file (magic 2049)"}


def _read_payload(path):
    """The file's bytes, decompressed when they start with gzip's magic (whatever the name says)."""
    try:
        raw = Path(path).read_bytes()
    except FileNotFoundError:
        raise SiameseError(f"{path}: no such file") from None
    except IsADirectoryError:
        raise SiameseError(f"{path}: is a folder, not an IDX file") from None
    except OSError as exc:
        raise SiameseError(f"{path}: cannot read: {exc.strerror}") from None
    if raw[:2] != _GZIP_MAGIC:
        return raw
    try:
        return gzip.decompress(raw)
    except EOFError:
        raise SiameseError(f"{path}: gzip stream is cut short (truncated download?); fetch the file again") from None
    except (gzip.BadGzipFile, zlib.error) as exc:
        raise SiameseError(f"{path}: corrupt gzip data ({exc}); fetch the file again") from None


def read_idx(path, magic=None):
    """The items of an IDX file as a uint8 array shaped by its header.

    `magic`, when given, is the magic number the caller needs (IMAGES_MAGIC or
    LABELS_MAGIC). Raises SiameseError for a wrong magic, a non-uint8 type, or a
    file whose size does not match what its header promises.
    """
    payload = _read_payload(path)
    if len(payload) < 4:
        raise SiameseError(f"{path}: only {len(payload)} bytes, too short for an IDX header")
    found = int.from_bytes(payload[:4], "big")
    if payload[:2] != b"\0\0" or payload[2] != _UINT8 or not 1 <= payload[3] <= 4:
        raise SiameseError(f"{path}: magic number {found} is not an IDX uint8 file (expected 2051 images or 2049 labels)")
    if magic is not None and found != magic:
        what = _KIND.get(found, f"magic {found}")
        raise SiameseError(f"{path}: magic number {found}, expected {magic}: this is {what}; check the argument order")
    ndim = payload[3]
    header_len = 4 + 4 * ndim
    if len(payload) < header_len:
        raise SiameseError(f"{path}: header cut short ({len(payload)} of {header_len} bytes); the file is truncated")
    shape = tuple(int.from_bytes(payload[4 + 4 * k:8 + 4 * k], "big") for k in range(ndim))
    expected = int(np.prod(shape, dtype=np.int64))
    have = len(payload) - header_len
    if have < expected:
        raise SiameseError(
            f"{path}: truncated: header promises {'x'.join(map(str, shape))} = {expected} bytes of data, "
            f"file holds {have}; fetch the file again"
        )
    if have > expected:
        raise SiameseError(
            f"{path}: {have - expected} bytes after the {'x'.join(map(str, shape))} items its header promises; "
            "not a valid IDX file"
        )
    return np.frombuffer(payload, np.uint8, count=expected, offset=header_len).reshape(shape)


def read_images_labels(images_path, labels_path):
    """MNIST-style (images N x H x W, labels N) uint8 arrays, checked to belong together."""
    images = read_idx(images_path, IMAGES_MAGIC)
    labels = read_idx(labels_path, LABELS_MAGIC)
    if images.ndim != 3:
        raise SiameseError(f"{images_path}: images must have 3 dimensions (N x rows x cols), header has {images.ndim}")
    if labels.ndim != 1:
        raise SiameseError(f"{labels_path}: labels must have 1 dimension, header has {labels.ndim}")
    if len(images) != len(labels):
        raise SiameseError(
            f"{labels_path}: {len(labels)} labels but {images_path} holds {len(images)} images; "
            "the counts must agree (mixed up train and test files?)"
        )
    if len(images) == 0:
        raise SiameseError(f"{images_path}: holds no images")
    return images, labels
