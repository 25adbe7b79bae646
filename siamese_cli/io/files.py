"""Writes that never leave half a file: a temporary path beside the target, then a rename.

Every failure to write (no such folder, no permission, a full disk) comes out as one
SiameseError naming the file, which the CLI turns into `error: FILE: ...` and exit status 2.
"""
import os
import tempfile
from contextlib import contextmanager
from pathlib import Path

from ..errors import SiameseError


def write_error(path, exc):
    """The one-line error for an OSError met while writing `path`."""
    reason = exc.strerror or str(exc)
    blocker = next((f for f in Path(path).parents if f.exists()), None)
    if blocker is not None and not blocker.is_dir():
        reason = f"{blocker} is a file, not a folder"
    hint = "free some space" if exc.errno == 28 else "check that the folder exists and is writable"
    return SiameseError(f"{path}: cannot write: {reason}; {hint}")


@contextmanager
def atomic_path(path):
    """Yield a temporary path beside `path`; on success it is renamed onto `path`, on error removed."""
    path = Path(path)
    tmp = None
    try:
        if path.exists() and not path.is_file() and not path.is_dir():
            yield path  # a device or pipe (/dev/stdout, /dev/full): written in place, nothing to rename
            return
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
        os.close(fd)
        os.chmod(tmp, 0o666 & ~_umask())  # mkstemp makes 0600; the result should look like any new file
        yield Path(tmp)
        os.replace(tmp, path)
    except OSError as exc:
        raise write_error(path, exc) from exc
    finally:
        if tmp is not None and os.path.exists(tmp):
            os.unlink(tmp)


def check_writable(path):
    """Fail now, not after an hour of training, if `path` could not be written later.

    Creates the folder as a later write would, then a scratch file in it, removed at once.
    """
    path = Path(path)
    if path.exists() and not path.is_file() and not path.is_dir():
        return  # a device or pipe is written in place (atomic_path); its folder need not be writable
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".check", dir=path.parent)
        os.close(fd)
        os.unlink(tmp)
    except OSError as exc:
        raise write_error(path, exc) from exc


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

    try:
        payload = Path(path).read_bytes()
    except FileNotFoundError:
        raise SiameseError(f"{path}: no such file") from None
    except OSError as exc:
        raise SiameseError(f"{path}: cannot read: {exc.strerror}") from None
    except ValueError:  # a name with a NUL byte, as a corrupt .solverstate's learned_net can hold
        raise SiameseError(f"{path!r}: not a usable file name") from None
    try:
        message.ParseFromString(payload)
    except DecodeError:
        raise SiameseError(
            f"{path}: not a binary {message.DESCRIPTOR.name} file (corrupt, or a text prototxt?)"
        ) from None
    return message
