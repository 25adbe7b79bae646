"""`siamese convert-imageset`: a list of image files to a LevelDB/LMDB of Datum records (Caffe's convert_imageset).

Records are what Caffe writes: key `%08d_PATH` (the line's position after any shuffle,
then the path as the list gives it); value a Datum with channels/height/width, the label
and the raw pixels (BGR, C x H x W), or, with --encoded, the image file's bytes (the file
itself when neither resizing nor a different --encode_type asks for re-encoding) and
`encoded` set. A missing or unreadable image is reported with its line and skipped.
"""
import os
import time
from pathlib import Path

import numpy as np

from ..errors import SiameseError
from ..io.db import backend_name
from ..io.images import ImageError, encode_format, encode_image, read_image, read_list, same_extension
from ..log import CaffeLog
from ..progress import Progress
from ..proto import caffe_pb2
from .create_db import building_db

_BATCH = 1000  # records per transaction, as Caffe's tool commits


def _datum(path, label, height, width, is_color, encoding):
    """The Datum for one image (Caffe's ReadImageToDatum); ImageError when it cannot be read."""
    pixels = read_image(path, height, width, is_color)
    datum = caffe_pb2.Datum(label=label)
    if encoding:
        if not height and not width and same_extension(path, encoding):
            try:
                datum.data = Path(path).read_bytes()
            except OSError as exc:
                raise ImageError(f"cannot read: {exc.strerror}") from None
        else:
            datum.data = encode_image(pixels, encoding)
        datum.encoded = True
    else:
        datum.channels, datum.height, datum.width = pixels.shape
        datum.data = pixels.tobytes()
    return datum, pixels.shape


def convert_imageset(root, list_file, db_path, resize_height=0, resize_width=0, gray=False, shuffle=False,
                     seed=0, encoded=False, encode_type="", backend="lmdb", check_size=False, force=False, log=None):
    """Write one Datum per line of `list_file` (`PATH LABEL`, PATH relative to `root`) to a new database.

    Returns (records written, images skipped). The database is built beside `db_path` and
    renamed into place when complete; an existing one is replaced only with `force`.
    """
    log = log or CaffeLog()
    start = time.perf_counter()
    backend = backend_name(backend)
    if encode_type:
        encode_format(encode_type)
        if not encoded:
            log("encode_type specified, assuming encoded=true.")
    entries = read_list(list_file)
    if shuffle:
        log("Shuffling data")
        order = np.random.default_rng(seed).permutation(len(entries))
        entries = [entries[k] for k in order]
    log(f"A total of {len(entries)} images.")
    height, width = max(0, int(resize_height)), max(0, int(resize_width))
    target = Path(db_path)
    written, skipped, first_shape = 0, [], None
    with building_db(target, backend, force) as writer, Progress(len(entries), f"convert-imageset {target.name}") as bar:
        batch = []
        for position, (line, name, label) in enumerate(entries):
            encoding = encode_type or (os.path.splitext(name)[1].lstrip(".").lower() if encoded else "")
            try:
                if encoding:
                    encode_format(encoding)
                datum, shape = _datum(os.path.join(root, name), label, height, width, not gray, encoding)
            except (ImageError, SiameseError) as exc:
                skipped.append(line)
                bar.clear()
                log.warning(f"{list_file}:{line}: {os.path.join(root, name)}: {exc}; skipped")
                bar.update(1)
                continue
            if check_size:
                if first_shape is None:
                    first_shape = shape
                elif shape != first_shape:
                    raise SiameseError(
                        f"{list_file}:{line}: {name} is {'x'.join(map(str, shape))}, the first image is "
                        f"{'x'.join(map(str, first_shape))} (--check_size); resize with --resize_height/--resize_width")
            batch.append((b"%08d_" % position + name.encode(), datum.SerializeToString()))
            written += 1
            if len(batch) == _BATCH:
                writer.put_batch(batch)
                batch = []
            bar.update(1)
        if not written:
            raise SiameseError(f"{list_file}: none of the {len(entries)} images could be read; nothing written")
        writer.put_batch(batch)
    seconds = time.perf_counter() - start
    kind = "encoded" if encoded or encode_type else ("grey" if gray else "colour")
    note = f", {len(skipped)} skipped (list lines {_lines(skipped)})" if skipped else ""
    print(f"{target}: {written} records{note}, {kind}, {backend}, {seconds:.2f} s")
    return written, len(skipped)


def _lines(numbers, limit=10):
    text = ", ".join(map(str, numbers[:limit]))
    return text + (f" and {len(numbers) - limit} more" if len(numbers) > limit else "")
