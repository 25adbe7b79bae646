"""The MNIST files shipped with the package (see mnist/README.md for attribution and license).

They make the example work offline: `siamese create-db` and `siamese plot-features`
default to them, and `siamese verify-data` checks them against mnist/SHA256SUMS.
"""
import hashlib
from pathlib import Path

from ..errors import SiameseError

MNIST_DIR = Path(__file__).resolve().parent / "mnist"

_SPLITS = {
    "train": ("train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz"),
    "test": ("t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz"),
}


def mnist_path(name):
    """The bundled file `name` (e.g. "t10k-images-idx3-ubyte.gz")."""
    return MNIST_DIR / name


def mnist_files(split):
    """(images_path, labels_path) of the bundled "train" (60,000) or "test" (10,000) split."""
    try:
        images, labels = _SPLITS[split]
    except KeyError:
        raise SiameseError(f'unknown MNIST split "{split}"; use "train" or "test"') from None
    return mnist_path(images), mnist_path(labels)


def load_mnist(split):
    """(images N x 28 x 28, labels N) uint8 arrays of a bundled split."""
    from ..io.idx import read_images_labels

    return read_images_labels(*mnist_files(split))


def _sha256(path):
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def verify_mnist(directory=None, out=print):
    """Check every file listed in SHA256SUMS; `out` gets one "OK name" line per good file.

    Raises SiameseError naming the first missing or damaged file.
    """
    directory = Path(directory) if directory is not None else MNIST_DIR
    sums = directory / "SHA256SUMS"
    try:
        lines = sums.read_text(encoding="ascii").splitlines()
    except FileNotFoundError:
        raise SiameseError(f"{sums}: no such file; the bundled data is incomplete, reinstall the package") from None
    checked = []
    for number, line in enumerate(lines, 1):
        if not line.strip():
            continue
        parts = line.split()
        if len(parts) != 2 or len(parts[0]) != 64:
            raise SiameseError(f"{sums}:{number}: expected '<sha256>  <file name>', got {line.strip()!r}")
        expected, name = parts[0].lower(), parts[1].lstrip("*")
        path = directory / name
        if not path.is_file():
            raise SiameseError(f"{path}: missing; the bundled data is incomplete, reinstall the package")
        found = _sha256(path)
        if found != expected:
            raise SiameseError(
                f"{path}: SHA-256 is {found}, SHA256SUMS says {expected}; the file is damaged, reinstall the package"
            )
        out(f"OK {name}")
        checked.append(name)
    if not checked:
        raise SiameseError(f"{sums}: lists no files")
    return checked
