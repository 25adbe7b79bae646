"""Type "Python": a layer written in Python against pycaffe's interface (`caffe.Layer`).

`python_param { module layer param_str }` names a module importable from sys.path (and,
failing that, from the working directory and the folders of the prototxt files being
read; see `module_dirs`) and the class in it. The class derives from `CaffeLayer`,
exported as `caffe.Layer`; it sees bottoms and tops as `BlobView`s, pycaffe's Blob
interface over this toolkit's Blobs. A `loss_weight` on a top makes it a loss, as in Caffe.
"""
import contextlib
import importlib
import os
import sys
from pathlib import Path

from ..blob import Blob
from ..proto import caffe_pb2
from .base import Layer


class BlobView:
    """pycaffe's Blob: `.data`, `.diff`, `.shape`, `.count`, the legacy num/channels/height/width,
    `.reshape(*dims)`. A view: it always shows the Blob's current arrays."""

    __slots__ = ("_blob",)

    def __init__(self, blob):
        self._blob = blob

    @property
    def data(self):
        return self._blob.data

    @data.setter
    def data(self, values):
        self._blob.data[...] = values

    @property
    def diff(self):
        return self._blob.diff

    @diff.setter
    def diff(self, values):
        self._blob.diff[...] = values

    @property
    def shape(self):
        return self._blob.shape

    @property
    def count(self):
        return self._blob.count

    def _legacy(self, index):
        shape = self._blob.shape
        if len(shape) > 4:
            raise ValueError(f"num/channels/height/width need a blob of at most 4 axes, this one is {list(shape)}")
        return shape[index] if index < len(shape) else 1

    num = property(lambda self: self._legacy(0))
    channels = property(lambda self: self._legacy(1))
    height = property(lambda self: self._legacy(2))
    width = property(lambda self: self._legacy(3))

    def reshape(self, *dims):
        """`blob.reshape(1, 3, 28, 28)`, or one tuple; data and diff are zeroed when the shape changes."""
        if len(dims) == 1 and not isinstance(dims[0], (int,)) and hasattr(dims[0], "__len__"):
            dims = tuple(dims[0])
        self._blob.reshape(dims)

    def __eq__(self, other):
        return isinstance(other, BlobView) and other._blob is self._blob

    def __hash__(self):
        return id(self._blob)

    def __repr__(self):
        return f"<caffe Blob {tuple(self.shape)}>"


def views(blobs):
    return [BlobView(blob) for blob in blobs]


class LayerBlobs(list):
    """A layer's parameter blobs as pycaffe shows them; `add_blob(*shape)` adds one to the layer."""

    def __init__(self, blobs):
        super().__init__(views(blobs))
        self._blobs = blobs

    def add_blob(self, *shape):
        blob = Blob(shape)
        self._blobs.append(blob)
        self.append(BlobView(blob))


class CaffeLayer:
    """The base of Python layers (`caffe.Layer`). Define setup, reshape, forward, backward.

    Attributes set before `setup`: `param_str` (python_param.param_str) and `phase`
    (caffe.TRAIN or caffe.TEST). `self.blobs` holds learnable blobs added with
    `self.blobs.add_blob(*shape)` in setup; the solver updates them like any weights.
    """

    type = "Python"

    def __init__(self, param=None):
        self.layer_param = param
        self._blob_list = []

    @property
    def blobs(self):
        return LayerBlobs(self._blob_list)

    def setup(self, bottom, top):
        """Check the parameters and bottoms; add learnable blobs."""

    def reshape(self, bottom, top):
        """Shape the tops: top[k].reshape(*dims)."""

    def forward(self, bottom, top):
        raise NotImplementedError(f"{type(self).__name__} defines no forward(bottom, top)")

    def backward(self, top, propagate_down, bottom):
        """Write bottom[i].diff where propagate_down[i] (a no-op for layers without gradients)."""


@contextlib.contextmanager
def module_dirs(*files):
    """Let Python layer modules be found next to these prototxt files and in the working directory.

    The folders go at the end of sys.path, so anything already on it wins, and come off again on exit.
    """
    wanted = [str(Path(f).resolve().parent) for f in files if f] + [os.getcwd()]
    added = [d for d in dict.fromkeys(wanted) if d not in sys.path]
    sys.path.extend(added)
    try:
        yield added
    finally:
        for folder in added:
            if folder in sys.path:
                sys.path.remove(folder)


def solver_files(solver_path):
    """The solver prototxt and the net prototxt files it names (for `module_dirs`)."""
    from ..io.prototxt import read_text
    from ..proto import caffe_pb2

    param = read_text(solver_path, caffe_pb2.SolverParameter())  # names only: no upgrade, no second upgrade log
    return [solver_path, *(getattr(param, f) for f in ("net", "train_net") if param.HasField(f)), *param.test_net]


class PythonLayer(Layer):
    """Runs the user's `caffe.Layer` subclass named by python_param."""

    type = "Python"

    def __init__(self, param, phase="TEST", rng=None):
        super().__init__(param, phase=phase, rng=rng)
        self.user = self._instantiate(param)
        self.user._blob_list = self.blobs

    def _instantiate(self, param):
        module_name, class_name = param.python_param.module, param.python_param.layer
        if not module_name or not class_name:
            raise self.error("python_param needs both module and layer (the module name and the class in it)")
        try:
            with module_dirs():
                module = importlib.import_module(module_name)
        except ModuleNotFoundError as exc:
            if exc.name and module_name.split(".")[0] != exc.name.split(".")[0]:
                raise self.error(f'importing module "{module_name}" failed: {exc}') from exc
            raise self.error(f'no module "{module_name}" on sys.path, in the working directory or next to the '
                             f"prototxt; add its folder to PYTHONPATH") from None
        except Exception as exc:
            raise self.error(f'importing module "{module_name}" failed: {type(exc).__name__}: {exc}') from exc
        cls = getattr(module, class_name, None)
        if cls is None:
            raise self.error(f'module "{module_name}" ({getattr(module, "__file__", "?")}) has no class "{class_name}"')
        user = cls(param)
        if not isinstance(user, CaffeLayer):
            raise self.error(f'{module_name}.{class_name} must derive from caffe.Layer')
        return user

    def setup(self, bottom, top):
        self.user.param_str = self.param.python_param.param_str
        self.user.phase = caffe_pb2.TRAIN if self.phase == "TRAIN" else caffe_pb2.TEST
        self.user.setup(views(bottom), views(top))

    def reshape(self, bottom, top):
        self.user.reshape(views(bottom), views(top))

    def forward(self, bottom, top):
        self.user.forward(views(bottom), views(top))

    def backward(self, top, propagate_down, bottom):
        self.user.backward(views(top), list(propagate_down), views(bottom))
