"""`siamese compute-image-mean`: the mean image of a Datum database (Caffe's compute_image_mean).

Writes a BlobProto of shape 1 x C x H x W in the legacy num/channels/height/width fields,
as Caffe does; `mean_file` in transform_param reads it. Records are summed one after another
in float32, as Caffe's loop does, then divided by the count.
"""
import time

import numpy as np

from ..errors import SiameseError
from ..io.db import backend_name, decode_datum, detect_backend, open_reader
from ..io.files import check_writable, write_bytes_atomic
from ..log import CaffeLog, fmt
from ..progress import Progress
from ..proto import caffe_pb2


def compute_image_mean(db_path, out_path=None, backend=None, log=None):
    """The float32 C x H x W mean of every record of `db_path`; written to `out_path` when given."""
    log = log or CaffeLog()
    start = time.perf_counter()
    backend = backend_name(backend) if backend else (detect_backend(db_path) or "lmdb")
    if out_path is not None:
        check_writable(out_path)
    with open_reader(db_path, backend) as reader:
        count = len(reader)
        total, shape = None, None
        with Progress(count, f"compute-image-mean {reader.path.name}") as bar:
            for _ in range(count):
                key, value = reader.next()
                pixels, _ = decode_datum(value, key, db_path)
                if total is None:
                    shape = pixels.shape
                    total = np.zeros(shape, np.float32)
                elif pixels.shape != shape:
                    raise SiameseError(f"{db_path}: record {key.decode(errors='replace')} is "
                                       f"{'x'.join(map(str, pixels.shape))}, the first is {'x'.join(map(str, shape))}; "
                                       "a mean needs one shape")
                total += pixels
                bar.update(1)
    mean = total / np.float32(count)
    log(f"Processed {count} files.")
    if out_path is not None:
        blob = caffe_pb2.BlobProto(num=1, channels=shape[0], height=shape[1], width=shape[2])
        blob.data.extend(mean.ravel().tolist())
        log(f"Write to {out_path}")
        write_bytes_atomic(out_path, blob.SerializeToString())
    log(f"Number of channels: {shape[0]}")
    for c in range(shape[0]):
        log(f"mean_value channel [{c}]: {fmt(mean[c].mean(dtype=np.float64))}")
    if out_path is not None:
        print(f"wrote {out_path}: mean of {count} records, {'x'.join(map(str, shape))}, "
              f"{time.perf_counter() - start:.2f} s")
    return mean
