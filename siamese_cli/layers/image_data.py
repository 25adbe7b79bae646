"""Caffe's ImageData layer: images named in a list file (`PATH LABEL` per line), read and prefetched in a thread.

image_data_param: source (the list file), root_folder (joined before each path), batch_size,
new_height/new_width (resize, both or neither), is_color, shuffle (a new seeded order each
pass over the list), rand_skip (skip rng-chosen [0, rand_skip) images at the start).
transform_param as for Data. All images (after resizing) must have one shape.
"""
import os

import numpy as np

from ..errors import SiameseError
from ..io.images import ImageError, read_image, read_list
from ..io.transform import Transformer
from ._prefetch import PrefetchLayer


class _ListSource:
    """Batches of images in list order (or a per-pass permutation), from position `first` on."""

    def __init__(self, layer, entries, batch_size, first, shuffle_seed):
        p = layer.param.image_data_param
        self.list_file = p.source
        self.root = p.root_folder
        self.height, self.width, self.is_color = int(p.new_height), int(p.new_width), bool(p.is_color)
        self.entries = entries
        self.batch_size = batch_size
        self.first = first
        self.shuffle_seed = shuffle_seed
        self.name = self.list_file
        self.shape = None
        self._orders = {}
        self.position = first

    def _order(self, epoch):
        if self.shuffle_seed is None:
            return None
        if epoch not in self._orders:
            self._orders = {epoch: np.random.default_rng([self.shuffle_seed, epoch]).permutation(len(self.entries))}
        return self._orders[epoch]

    def entry(self, position):
        epoch, index = divmod(position, len(self.entries))
        order = self._order(epoch)
        return self.entries[index if order is None else int(order[index])]

    def read(self, position):
        line, name, label = self.entry(position)
        path = os.path.join(self.root, name)
        try:
            pixels = read_image(path, self.height, self.width, self.is_color)
        except ImageError as exc:
            raise SiameseError(f"{self.list_file}:{line}: {path}: {exc}") from None
        if self.shape is not None and pixels.shape != self.shape:
            raise SiameseError(f"{self.list_file}:{line}: {path} is {'x'.join(map(str, pixels.shape))}, the first "
                               f"image is {'x'.join(map(str, self.shape))}; set new_height/new_width to resize them")
        return pixels, label

    def seek(self, batch):
        self.position = self.first + batch * self.batch_size

    def load(self):
        images, labels = [], np.empty(self.batch_size, np.float32)
        for k in range(self.batch_size):
            pixels, labels[k] = self.read(self.position)
            images.append(pixels)
            self.position += 1
        return np.stack(images), labels

    def close(self):
        self._orders = {}


class ImageData(PrefetchLayer):
    """Type "ImageData": tops data (N, C, H, W) float32 and, optionally, label (N,) float32."""

    type = "ImageData"

    def setup(self, bottom, top):
        p = self.param.image_data_param
        if not p.source:
            raise self.error("image_data_param.source is not set; give the list file (PATH LABEL per line)")
        if p.batch_size < 1:
            raise self.error("image_data_param.batch_size must be at least 1")
        if (p.new_height > 0) != (p.new_width > 0):
            raise self.error("set new_height and new_width together (or neither)")
        transform_param = self.param.transform_param
        if transform_param.force_color or transform_param.force_gray:
            raise self.error("force_color/force_gray are for encoded Datums; use image_data_param.is_color")
        entries = read_list(p.source)
        rng = self.rng if self.rng is not None else np.random.default_rng(0)
        shuffle_seed = int(rng.integers(2**63)) if p.shuffle else None
        skip = int(rng.integers(p.rand_skip)) if p.rand_skip else 0
        seed = int(rng.integers(2**63))
        batch_size = int(p.batch_size)
        source = _ListSource(self, entries, batch_size, skip, shuffle_seed)
        source.shape = source.read(skip)[0].shape
        transformer = Transformer(transform_param, self.phase, source.shape)
        self.start_prefetch(source, transformer, batch_size, int(self.param.data_param.prefetch) or 2, seed)
