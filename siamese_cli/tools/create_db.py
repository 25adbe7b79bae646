"""`siamese create-db`: MNIST IDX files to a database of image pairs, as Caffe's siamese example makes them.

Caffe's converter writes one record per input image: key = the record number as eight
zero-padded digits, value = a serialized Datum with channels 2 (image i, then image j),
the IDX header's height and width, and label 1 when both images show the same digit.
i and j are drawn uniformly, with replacement, for every record, so about a tenth of
the MNIST pairs are similar. The draw here is numpy's (seeded), not Caffe's, so the
pairs differ from a Caffe-built DB while every record keeps Caffe's exact layout.
"""
import os
import shutil
import secrets
import time
from contextlib import contextmanager
from pathlib import Path

import numpy as np

from ..errors import SiameseError
from ..io.datum_layout import LABEL_TAG, datum_header
from ..io.db import Writer, backend_name, detect_backend
from ..io.idx import read_images_labels
from ..progress import Progress

EXAMPLE_DIR = Path("examples") / "siamese"
_BATCH = 1024
def draw_pairs(labels, rng, balanced=False):
    """Indices (i, j) of one pair per image.

    Uniform with replacement, as Caffe draws them; with `balanced`, exactly half the
    records (shuffled) take j from i's digit and the rest from the other digits.
    """
    n = len(labels)
    if not balanced:
        pairs = rng.integers(0, n, size=(n, 2))
        return pairs[:, 0], pairs[:, 1]
    counts = np.bincount(labels, minlength=256).astype(np.int64)
    if np.count_nonzero(counts) < 2:
        raise SiameseError("--balanced needs images of at least two different labels")
    first = rng.integers(0, n, size=n)
    similar = np.zeros(n, bool)
    similar[: n // 2] = True
    rng.shuffle(similar)
    order = np.argsort(labels, kind="stable")
    starts = np.cumsum(counts) - counts
    digit = labels[first]
    same = starts[digit] + rng.integers(0, counts[digit])
    other = rng.integers(0, n - counts[digit])
    other = np.where(other < starts[digit], other, other + counts[digit])
    second = order[np.where(similar, same, other)]
    return first, second


def _encode(channels, labels, header):
    """Serialized Datum records: the header, each record's channels' pixels in order, then its label."""
    count = len(labels)
    head = len(header)
    pixels = sum(c.shape[1] for c in channels)
    width = head + pixels + 2
    rows = np.empty((count, width), np.uint8)
    rows[:, :head] = np.frombuffer(header, np.uint8)
    offset = head
    for channel in channels:
        rows[:, offset:offset + channel.shape[1]] = channel
        offset += channel.shape[1]
    rows[:, -2] = LABEL_TAG
    rows[:, -1] = labels
    joined = rows.tobytes()
    return [joined[k:k + width] for k in range(0, len(joined), width)]


def _check_target(target, force):
    if not os.path.lexists(target):
        return
    if not force:
        raise SiameseError(f"{target}: already exists; pass --force to replace it")
    if target.is_symlink() or not target.is_dir():
        raise SiameseError(f"{target}: exists and is not a database folder; refusing to replace it, even with --force")
    if detect_backend(target) is None and any(target.iterdir()):
        raise SiameseError(
            f"{target}: exists and is not a LevelDB/LMDB database; refusing to replace it, even with --force"
        )


def _move_into_place(built, target, force):
    """Rename the finished `built` folder to `target`; an existing target goes only with `force`."""
    if not os.path.lexists(target):
        os.rename(built, target)
        return
    _check_target(target, force)
    old = _new_folder_beside(target, "old")
    os.rename(target, old / "db")
    try:
        os.rename(built, target)
    except BaseException:
        os.rename(old / "db", target)
        raise
    finally:
        shutil.rmtree(old, ignore_errors=True)


def _new_folder_beside(target, kind):
    """A fresh hidden folder next to `target` (same file system, so renames are atomic), mode per umask."""
    while True:
        folder = target.parent / f".{target.name}.{secrets.token_hex(4)}.{kind}"
        try:
            folder.mkdir()
            return folder
        except FileExistsError:
            continue


def _missing_parents(path):
    missing = []
    for parent in path.parents:
        if parent.exists():
            break
        missing.append(parent)
    return missing


def create_pair_db(images, labels, db_path, seed=0, backend="leveldb", force=False, balanced=False):
    """Write one pair record per image of the IDX files `images`/`labels` to a new database `db_path`.

    seed: seeds numpy's Generator for the pair draw (default 0); the same seed, inputs
    and `balanced` give the same records. backend: "leveldb" (Caffe's default) or "lmdb".
    force: replace an existing database (never a folder that is not one).
    balanced: half the pairs similar instead of Caffe's uniform draw (about 10% for MNIST).
    The database is built in a hidden folder beside `db_path` and renamed into place when
    complete, so a failure leaves nothing behind. Prints one summary line; returns the
    number of records written.
    """
    start = time.perf_counter()
    backend = backend_name(backend)
    seed = _check_seed(seed)
    target = Path(db_path)
    _check_target(target, force)
    image_array, label_array = read_images_labels(images, labels)
    count, height, width = image_array.shape
    first, second = draw_pairs(label_array, np.random.default_rng(seed), balanced)
    same = (label_array[first] == label_array[second]).astype(np.uint8)
    flat = image_array.reshape(count, height * width)
    header = datum_header(2, height, width)
    _write_records(target, backend, force, count, len(header) + 2 * height * width, header,
                   lambda lo, hi: (flat[first[lo:hi]], flat[second[lo:hi]]), same)
    seconds = time.perf_counter() - start
    print(f"{target}: {count} records, {same.mean():.2%} similar, {backend}, seed {seed}, {seconds:.2f} s")
    return count


def create_image_db(images, labels, db_path, backend="leveldb", force=False):
    """One record per image (channels 1, label = the digit), as Caffe's convert_mnist_data writes for LeNet."""
    start = time.perf_counter()
    backend = backend_name(backend)
    target = Path(db_path)
    _check_target(target, force)
    image_array, label_array = read_images_labels(images, labels)
    if label_array.size and label_array.max() > 127:
        raise SiameseError(f"{labels}: labels above 127 are not supported by the single-image writer")
    count, height, width = image_array.shape
    flat = image_array.reshape(count, height * width)
    header = datum_header(1, height, width)
    _write_records(target, backend, force, count, len(header) + height * width, header,
                   lambda lo, hi: (flat[lo:hi],), label_array)
    print(f"{target}: {count} records, single images, {backend}, {time.perf_counter() - start:.2f} s")
    return count


def _write_records(target, backend, force, count, record_size, header, pixels, label_values):
    """Build the database in a hidden folder beside `target` and rename it into place when complete.

    pixels(lo, hi) gives the image arrays of records lo..hi-1, concatenated along the channel
    axis; label_values holds one label byte (0..127) per record.
    """
    with building_db(target, backend, force, size_hint=count * (record_size + 10)) as writer, \
            Progress(count, f"create-db {target.name}") as bar:
        for lo in range(0, count, _BATCH):
            hi = min(lo + _BATCH, count)
            values = _encode(pixels(lo, hi), label_values[lo:hi], header)
            writer.put_batch(zip([b"%08d" % k for k in range(lo, hi)], values))
            bar.update(hi - lo)


@contextmanager
def building_db(target, backend, force=False, size_hint=0):
    """Yield a Writer on a hidden folder beside `target`; renamed onto `target` when the block ends cleanly.

    On any error the half-built folder (and any parent folders made for it) is removed, and a
    failed write (full disk, no permission) becomes one SiameseError naming the database.
    """
    target = Path(target)
    _check_target(target, force)
    created = _missing_parents(target)
    built = None
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        built = _new_folder_beside(target, "tmp")
        with Writer(built, backend, size_hint=size_hint) as writer:
            yield writer
        _move_into_place(built, target, force)
    except BaseException as exc:
        if built is not None:
            shutil.rmtree(built, ignore_errors=True)
        for folder in created:
            try:
                folder.rmdir()
            except OSError:
                break
        reason = _write_failure(exc)
        if reason is not None:
            raise SiameseError(f"{target}: cannot write the database: {reason}") from exc
        raise


def _write_failure(exc):
    """The reason text of a failed database write, or None for an exception that is not one."""
    if isinstance(exc, SiameseError):
        return None
    if isinstance(exc, OSError):
        hint = "free some space" if exc.errno == 28 else "check that the folder exists and is writable"
        return f"{exc.strerror or exc}; {hint}"
    module = type(exc).__module__ or ""
    if module.startswith(("plyvel", "lmdb")):
        detail = exc.args[0].decode(errors="replace") if exc.args and isinstance(exc.args[0], bytes) else str(exc)
        return f"{detail}; check free space and permissions"
    return None


def _check_seed(seed):
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
        raise SiameseError(f"--seed must be a whole number >= 0, got {seed!r}")
    return int(seed)


def example_db_paths(backend="leveldb"):
    """{"train": path, "test": path} of the example's pair databases, relative to the working directory."""
    backend = backend_name(backend)
    return {split: EXAMPLE_DIR / f"mnist_siamese_{split}_{backend}" for split in ("train", "test")}


def create_example_dbs(seed=0, backend="leveldb", force=False, balanced=False):
    """Build both example DBs from the bundled MNIST: train (60,000 records) and test (10,000).

    The train DB is drawn with seed 2*seed and the test DB with 2*seed + 1, so the two
    draws are independent and each can be rebuilt alone with create_pair_db.
    Both targets are checked before anything is written. Returns {split: records}.
    """
    from ..data import mnist_files

    seed = _check_seed(seed)
    paths = example_db_paths(backend)
    for path in paths.values():
        _check_target(path, force)
    written = {}
    for offset, (split, path) in enumerate(paths.items()):
        images, labels = mnist_files(split)
        written[split] = create_pair_db(images, labels, path, seed=2 * seed + offset, backend=backend,
                                        force=force, balanced=balanced)
    return written


def create_example_image_dbs(backend="lmdb", force=False):
    """Caffe's LeNet example DBs (examples/mnist/mnist_{train,test}_BACKEND): one record per bundled MNIST image."""
    from ..data import mnist_files

    backend = backend_name(backend)
    paths = {split: Path("examples") / "mnist" / f"mnist_{split}_{backend}" for split in ("train", "test")}
    for path in paths.values():
        _check_target(path, force)
    return {split: create_image_db(*mnist_files(split), path, backend=backend, force=force)
            for split, path in paths.items()}


def load_list_images(list_file, root="", height=0, width=0, color=False, log=None):
    """(images N x C x H x W uint8, labels, skipped list lines) of the images a Caffe list file names.

    Missing or unreadable images are reported with their line and left out; the rest must
    share one shape (give height and width to resize them).
    """
    from ..io.images import ImageError, read_image, read_list
    from ..log import CaffeLog

    log = log or CaffeLog()
    entries = read_list(list_file)
    images, labels, skipped = [], [], []
    with Progress(len(entries), f"reading {Path(list_file).name}") as bar:
        for line, name, label in entries:
            path = os.path.join(root, name)
            try:
                pixels = read_image(path, height, width, color)
            except ImageError as exc:
                bar.clear()
                log.warning(f"{list_file}:{line}: {path}: {exc}; skipped")
                skipped.append(line)
                bar.update(1)
                continue
            if not 0 <= label <= 255:
                raise SiameseError(f"{list_file}:{line}: label {label}; pair DBs take labels 0..255")
            if images and pixels.shape != images[0].shape:
                raise SiameseError(f"{list_file}:{line}: {name} is {'x'.join(map(str, pixels.shape))}, the first image "
                                   f"is {'x'.join(map(str, images[0].shape))}; give --resize HEIGHT WIDTH")
            images.append(pixels)
            labels.append(label)
            bar.update(1)
    if not images:
        raise SiameseError(f"{list_file}: none of the {len(entries)} images could be read")
    return np.stack(images), np.array(labels, np.int64), skipped


def write_idx(prefix, images, labels):
    """images (N x H x W uint8) and labels as IDX files PREFIX-images-idx3-ubyte / PREFIX-labels-idx1-ubyte."""
    from ..io.files import write_bytes_atomic

    count, height, width = images.shape
    image_path, label_path = Path(f"{prefix}-images-idx3-ubyte"), Path(f"{prefix}-labels-idx1-ubyte")
    header = np.array([2051, count, height, width], ">u4").tobytes()
    write_bytes_atomic(image_path, header + images.astype(np.uint8).tobytes())
    write_bytes_atomic(label_path, np.array([2049, count], ">u4").tobytes() + labels.astype(np.uint8).tobytes())
    return image_path, label_path


def create_pair_db_from_list(list_file, db_path, root="", resize=(0, 0), color=False, seed=0, backend="leveldb",
                             force=False, balanced=False, save_idx=None):
    """Pair records, as create_pair_db draws them, from the labelled images of a Caffe list file (`PATH LABEL`).

    Images are read grey (one channel, as MNIST; `color` keeps three, BGR) and resized to
    `resize` (height, width) when given; record channels are the two images' channels in turn.
    `save_idx` PREFIX also writes the (grey) images and labels, shuffled, as IDX files for plot-features.
    """
    start = time.perf_counter()
    backend = backend_name(backend)
    seed = _check_seed(seed)
    target = Path(db_path)
    _check_target(target, force)
    if save_idx and color:
        raise SiameseError("--save-idx writes grey IDX images; drop --color or --save-idx")
    images, labels, skipped = load_list_images(list_file, root, resize[0], resize[1], color)
    count, channels, height, width = images.shape
    first, second = draw_pairs(labels, np.random.default_rng(seed), balanced)
    same = (labels[first] == labels[second]).astype(np.uint8)
    flat = images.reshape(count, -1)
    header = datum_header(2 * channels, height, width)
    _write_records(target, backend, force, count, len(header) + 2 * flat.shape[1], header,
                   lambda lo, hi: (flat[first[lo:hi]], flat[second[lo:hi]]), same)
    note = f", {len(skipped)} images skipped" if skipped else ""
    print(f"{target}: {count} records of {channels * 2}x{height}x{width}, {len(np.unique(labels))} classes, "
          f"{same.mean():.2%} similar{note}, {backend}, seed {seed}, {time.perf_counter() - start:.2f} s")
    if save_idx:  # in a seeded random order, so that any half of the file holds every class
        order = np.random.default_rng([seed, 1]).permutation(count)
        for path in write_idx(save_idx, images[order, 0], labels[order]):
            print(f"wrote {path}")
    return count
