"""Caffe's HDF5Data layer: rows of the datasets named like its tops, from the .h5 files a list file names.

hdf5_data_param: source (a text file, one .h5 path per line), batch_size, shuffle (file
order and row order, drawn again at each pass, from the layer's seeded rng). Each file
holds one dataset per top (N x ...); a batch takes batch_size rows, moving on to the next
file when one runs out. No transform_param, as in Caffe. Needs h5py (the `hdf5` extra).
"""
import numpy as np

from ..io.hdf5 import h5py_module, load_datasets, read_source_list
from .base import Layer


class HDF5Data(Layer):
    """Type "HDF5Data": one top per dataset name, each (batch_size,) + the dataset's row shape, float32."""

    type = "HDF5Data"
    num_bottom = 0
    min_top = 1

    def setup(self, bottom, top):
        p = self.param.hdf5_data_param
        h5py_module("HDF5Data layers")
        if not p.source:
            raise self.error("hdf5_data_param.source is not set; give a text file listing .h5 files")
        if p.batch_size < 1:
            raise self.error("hdf5_data_param.batch_size must be at least 1")
        self.batch_size = int(p.batch_size)
        self.shuffle = bool(p.shuffle)
        self.names = list(self.param.top)
        self.files = read_source_list(p.source)
        self._rng = self.rng if self.rng is not None else np.random.default_rng(0)
        self.file_order = self._rng.permutation(len(self.files)) if self.shuffle else np.arange(len(self.files))
        self.current_file = 0
        self._load(0)

    def _load(self, index):
        self.arrays = load_datasets(self.files[self.file_order[index]], self.names)
        rows = next(iter(self.arrays.values())).shape[0]
        self.row_order = self._rng.permutation(rows) if self.shuffle else np.arange(rows)
        self.current_row = 0

    def reshape(self, bottom, top):
        for blob, name in zip(top, self.names):
            blob.reshape((self.batch_size,) + self.arrays[name].shape[1:])

    def forward(self, bottom, top):
        for k in range(self.batch_size):
            if self.current_row == len(self.row_order):
                if len(self.files) > 1:
                    self.current_file += 1
                    if self.current_file == len(self.files):
                        self.current_file = 0
                        if self.shuffle:
                            self._rng.shuffle(self.file_order)
                    self._load(self.current_file)
                else:
                    self.current_row = 0
                    if self.shuffle:
                        self._rng.shuffle(self.row_order)
            row = self.row_order[self.current_row]
            for blob, name in zip(top, self.names):
                if self.arrays[name].shape[1:] != blob.shape[1:]:
                    raise self.error(f'{self.files[self.file_order[self.current_file]]}: dataset "{name}" rows are '
                                     f"{list(self.arrays[name].shape[1:])}, the first file's are {list(blob.shape[1:])}")
                blob.data[k] = self.arrays[name][row]
            self.current_row += 1

    def backward(self, top, propagate_down, bottom):
        """Data layers propagate nothing."""
