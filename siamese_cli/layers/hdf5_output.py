"""Caffe's HDF5Output layer: writes its two bottoms to datasets "data" and "label" of an .h5 file.

hdf5_output_param.file_name is created (replaced) at setup. Caffe writes the datasets once
and fails at a second forward pass; here every forward pass appends its rows, so the file
holds all batches in order. Needs h5py (the `hdf5` extra).
"""
import numpy as np

from ..io.files import write_error
from ..io.hdf5 import h5py_module
from .base import Layer

DATASETS = ("data", "label")


class HDF5Output(Layer):
    """Type "HDF5Output": bottoms data and label, no tops; the file is closed by close() (or at exit)."""

    type = "HDF5Output"
    num_bottom = 2
    num_top = 0
    no_gradient_bottoms = (0, 1)

    def setup(self, bottom, top):
        h5py = h5py_module("HDF5Output layers")
        self.file_name = self.param.hdf5_output_param.file_name
        if not self.file_name:
            raise self.error("hdf5_output_param.file_name is not set")
        try:
            self._file = h5py.File(self.file_name, "w")
        except OSError as exc:
            raise write_error(self.file_name, exc) from None
        self._datasets = {}

    def reshape(self, bottom, top):
        if len(bottom[0].shape) < 1 or bottom[0].shape[0] != bottom[1].shape[0]:
            raise self.error(f"data and label need the same number of rows, got {list(bottom[0].shape)} and "
                             f"{list(bottom[1].shape)}")

    def forward(self, bottom, top):
        if self._file is None:
            raise self.error("the layer was closed")
        try:
            for name, blob in zip(DATASETS, bottom):
                dataset = self._datasets.get(name)
                if dataset is None:
                    dataset = self._datasets[name] = self._file.create_dataset(
                        name, shape=(0,) + blob.shape[1:], maxshape=(None,) + blob.shape[1:], dtype=np.float32)
                elif dataset.shape[1:] != blob.shape[1:]:
                    raise self.error(f'{self.file_name}: "{name}" rows are {list(blob.shape[1:])} now, '
                                     f"{list(dataset.shape[1:])} before")
                start = dataset.shape[0]
                dataset.resize(start + blob.shape[0], axis=0)
                dataset[start:] = blob.data
            self._file.flush()
        except OSError as exc:
            raise write_error(self.file_name, exc) from None

    def backward(self, top, propagate_down, bottom):
        """Writes only; nothing to propagate."""

    def close(self):
        handle = getattr(self, "_file", None)
        if handle is not None:
            self._file = None
            handle.close()
