"""Writes that never leave half a file: a temporary path beside the target, then a rename."""
import os
import tempfile
from contextlib import contextmanager
from pathlib import Path


@contextmanager
def atomic_path(path):
    """Yield a temporary path beside `path`; on success it is renamed onto `path`, on error removed."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    os.chmod(tmp, 0o666 & ~_umask())  # mkstemp makes 0600; the result should look like any new file
    try:
        yield Path(tmp)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def _umask():
    mask = os.umask(0)
    os.umask(mask)
    return mask


def write_bytes_atomic(path, payload):
    with atomic_path(path) as tmp:
        tmp.write_bytes(payload)


def read_binary_proto(path, message):
    """Parse a binary protobuf file (.caffemodel, .solverstate, .binaryproto) into `message`."""
    from google.protobuf.message import DecodeError

    from ..errors import SiameseError

    try:
        payload = Path(path).read_bytes()
    except FileNotFoundError:
        raise SiameseError(f"{path}: no such file") from None
    try:
        message.ParseFromString(payload)
    except DecodeError:
        raise SiameseError(
            f"{path}: not a binary {message.DESCRIPTOR.name} file (corrupt, or a text prototxt?)"
        ) from None
    return message
