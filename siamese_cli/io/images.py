"""Image files to arrays as Caffe's OpenCV calls give them: uint8, C x H x W, colour in BGR order.

Pillow does the decoding, resizing (bilinear) and encoding. Grey conversion uses the
same ITU-R 601 weights as OpenCV; resized pixels may differ from OpenCV's by a level or
two, since Pillow's bilinear filter widens when it shrinks an image.
"""
import io
import os

import numpy as np

from ..errors import SiameseError

COLOR, GRAY, NATIVE = "color", "gray", "native"


class ImageError(Exception):
    """An image that cannot be read or decoded: the caller reports it (with a list line or DB key) or skips it."""


def _pil():
    from PIL import Image

    return Image


def _to_array(image, mode):
    """A PIL image as a C x H x W uint8 array: 3 channels BGR, 1 grey, or (NATIVE) as stored (BGRA kept)."""
    if mode == NATIVE:
        if image.mode in ("1", "L", "I;16", "I", "F"):
            mode = GRAY
        elif image.mode in ("RGBA", "LA", "PA") or (image.mode == "P" and "transparency" in image.info):
            pixels = np.asarray(image.convert("RGBA"))
            return np.ascontiguousarray(pixels[:, :, [2, 1, 0, 3]].transpose(2, 0, 1))
        else:
            mode = COLOR
    if mode == GRAY:
        if image.mode in ("I;16", "I", "F"):
            image = image.point(lambda v: v / 256) if image.mode != "F" else image
        return np.asarray(image.convert("L"))[None].copy()
    pixels = np.asarray(image.convert("RGB"))
    return np.ascontiguousarray(pixels[:, :, ::-1].transpose(2, 0, 1))


def _resize(image, height, width):
    if height > 0 and width > 0 and image.size != (width, height):
        return image.resize((width, height), _pil().Resampling.BILINEAR)
    return image


def read_image(path, height=0, width=0, is_color=True):
    """The image at `path` as Caffe's ReadImageToCVMat gives it; resized only when both height and width > 0.

    Raises ImageError with the reason when the file is missing or not an image.
    """
    Image = _pil()
    try:
        with Image.open(path) as image:
            image.load()
            image = _resize(image if is_color else image.convert("L"), height, width)
            return _to_array(image, COLOR if is_color else GRAY)
    except FileNotFoundError:
        raise ImageError("no such file") from None
    except IsADirectoryError:
        raise ImageError("is a folder") from None
    except Image.UnidentifiedImageError:
        raise ImageError("not an image Pillow can read") from None
    except (OSError, ValueError, SyntaxError) as exc:
        raise ImageError(f"cannot decode: {exc}") from None


def decode_image(payload, mode=NATIVE):
    """Encoded image bytes (a Datum with `encoded` set) to C x H x W uint8; mode COLOR, GRAY or NATIVE."""
    Image = _pil()
    try:
        with Image.open(io.BytesIO(payload)) as image:
            image.load()
            return _to_array(image, mode)
    except (Image.UnidentifiedImageError, OSError, ValueError, SyntaxError) as exc:
        raise ImageError(f"cannot decode the encoded image ({exc})") from None


_FORMATS = {"jpg": "JPEG", "jpeg": "JPEG", "png": "PNG", "bmp": "BMP", "tif": "TIFF", "tiff": "TIFF",
            "ppm": "PPM", "pgm": "PPM", "webp": "WEBP"}


def encode_format(name):
    """Pillow's format name for an extension or --encode_type (png, jpg, ...); SiameseError when unknown."""
    key = name.lower().lstrip(".")
    if key not in _FORMATS:
        raise SiameseError(f'unknown image encoding "{name}"; use one of {", ".join(sorted(_FORMATS))}')
    return _FORMATS[key]


def encode_image(array, encoding):
    """C x H x W uint8 (BGR or grey) to the bytes of an image file; JPEG at OpenCV's default quality 95."""
    Image = _pil()
    fmt = encode_format(encoding)
    if array.shape[0] == 1:
        image = Image.fromarray(array[0], "L")
    else:
        image = Image.fromarray(np.ascontiguousarray(array[2::-1].transpose(1, 2, 0)), "RGB")
    out = io.BytesIO()
    image.save(out, format=fmt, **({"quality": 95} if fmt == "JPEG" else {}))
    return out.getvalue()


def same_extension(path, encoding):
    """Caffe's matchExt: does the file's extension name `encoding` (jpeg counts as jpg)?"""
    ext = os.path.splitext(str(path))[1].lstrip(".").lower()
    enc = encoding.lower()
    return ext == enc or (enc == "jpg" and ext == "jpeg")


def read_list(path):
    """Caffe's image list: `PATH LABEL` per line (split at the last space). Returns [(line number, path, label)]."""
    try:
        with open(path, encoding="utf-8") as handle:
            lines = handle.read().splitlines()
    except FileNotFoundError:
        raise SiameseError(f"{path}: no such list file") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise SiameseError(f"{path}: cannot read the list file: {exc}") from None
    entries = []
    for number, line in enumerate(lines, 1):
        if not line.strip():
            continue
        name, _, label = line.rstrip().rpartition(" ")
        try:
            value = int(label)
        except ValueError:
            value = None
        if not name or value is None:
            raise SiameseError(f'{path}:{number}: expected "PATH LABEL" (an integer label after the last space), '
                               f"got {line.strip()!r}")
        entries.append((number, name, value))
    if not entries:
        raise SiameseError(f"{path}: the list file has no images")
    return entries
