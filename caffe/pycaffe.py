"""caffe.Net: pycaffe's Net interface over siamese_cli.net.Net (the engine does the work)."""
import os
from collections import OrderedDict

import numpy as np

from siamese_cli.errors import SiameseError
from siamese_cli.layers.python import BlobView, LayerBlobs, PythonLayer, module_dirs
from siamese_cli.net import Net as EngineNet
from siamese_cli.proto import caffe_pb2

from . import _mode


def _net_arguments(args, kwargs):
    """pycaffe's constructor forms: (model, phase), (model, weights, phase), and the keyword forms."""
    args = list(args)
    weights, phase = kwargs.pop("weights", None), kwargs.pop("phase", None)
    if args and (args[0] is None or isinstance(args[0], (str, bytes, os.PathLike))):
        weights = args.pop(0) if weights is None else weights
    if args:
        phase = args.pop(0) if phase is None else phase
    if args:
        raise TypeError("caffe.Net(model, [weights,] phase, level=0, stages=None, weights=None): too many arguments")
    if phase is None:
        raise TypeError("caffe.Net needs a phase: caffe.TRAIN or caffe.TEST")
    return weights, phase, kwargs.pop("level", 0), kwargs.pop("stages", None) or (), kwargs


class Layer:
    """A layer as pycaffe shows it: `.type`, `.blobs`, and `reshape`/`setup`-free access to the engine layer."""

    def __init__(self, engine_layer):
        self._layer = engine_layer

    @property
    def type(self):
        return self._layer.type

    @property
    def blobs(self):
        return LayerBlobs(self._layer.blobs)

    def __repr__(self):
        return f"<caffe Layer {self._layer.name} ({self.type})>"


class Net:
    """caffe.Net(model, [weights,] phase, level=0, stages=None, weights=None).

    Blobs and params are live views of the engine's arrays: writing `net.blobs['data'].data[...]`
    or `net.params['conv1'][0].data[...]` changes the net.
    """

    def __init__(self, model, *args, **kwargs):
        weights, phase, level, stages, rest = _net_arguments(args, kwargs)
        if rest:
            raise TypeError(f"caffe.Net got unexpected keyword arguments {sorted(rest)}")
        model = os.fsdecode(model) if isinstance(model, (bytes, os.PathLike)) else model
        with module_dirs(model if isinstance(model, str) else None):
            net = EngineNet(model, phase=phase, level=level, stages=stages, seed=_mode.next_seed())
        if weights:
            net.copy_from(os.fsdecode(weights))
        self._attach(net)

    @classmethod
    def wrap(cls, engine_net):
        """The pycaffe view of a net the toolkit built (a solver's train and test nets)."""
        net = cls.__new__(cls)
        net._attach(engine_net)
        return net

    def _attach(self, net):
        self._net = net
        self.blobs = OrderedDict((name, BlobView(blob)) for name, blob in net.blobs.items())
        self._layer_names = [lp.name for lp in net.param.layer]
        self.top_names = OrderedDict((lp.name, list(lp.top)) for lp in net.param.layer)
        self.bottom_names = OrderedDict((lp.name, list(lp.bottom)) for lp in net.param.layer)
        self._layers = [Layer(layer) for layer in net.layers]

    # ---- structure ------------------------------------------------------------------
    @property
    def layers(self):
        """Python layers are the user's own objects, as in pycaffe; the others are `Layer` views."""
        return [engine.user if isinstance(engine, PythonLayer) else view
                for engine, view in zip(self._net.layers, self._layers)]

    @property
    def layer_dict(self):
        return OrderedDict(zip(self._layer_names, self.layers))

    @property
    def params(self):
        """{layer name: [weights, bias, ...]} for layers with parameters (shared blobs appear under each layer)."""
        return OrderedDict((name, LayerBlobs(layer.blobs))
                           for name, layer in zip(self._layer_names, self._net.layers) if layer.blobs)

    @property
    def inputs(self):
        return list(self._net.inputs)

    @property
    def outputs(self):
        return list(self._net.outputs)

    @property
    def blob_loss_weights(self):
        weights = {id(top): w for pairs in self._net._loss_weights for top, w in pairs}
        return OrderedDict((name, weights.get(id(blob), 0.0)) for name, blob in self._net.blobs.items())

    @property
    def phase(self):
        return caffe_pb2.TRAIN if self._net.phase == "TRAIN" else caffe_pb2.TEST

    def _index(self, name, what):
        try:
            return self._layer_names.index(name)
        except ValueError:
            raise SiameseError(f'{what}="{name}": net "{self._net.name}" has no layer of that name; '
                               f"its layers are {self._layer_names}") from None

    # ---- running --------------------------------------------------------------------
    def _set(self, values, field):
        for name, array in values.items():
            if name not in self.blobs:
                raise SiameseError(f'net "{self._net.name}" has no blob "{name}"; its blobs are {list(self.blobs)}')
            array = np.asarray(array, dtype=np.float32)
            blob = self._net.blobs[name]
            if field == "data" and array.shape != blob.shape and array.ndim == len(blob.shape):
                blob.reshape(array.shape)  # another batch size: the layers reshape as the pass goes
            getattr(blob, field)[...] = array

    def forward(self, blobs=None, start=None, end=None, **inputs):
        """Run layers start..end (names, inclusive) after copying `inputs` into their blobs.

        Returns {blob: data} for the net outputs (the tops of `end` when given) and the extra `blobs`.
        """
        first = self._index(start, "start") if start is not None else 0
        last = self._index(end, "end") if end is not None else len(self._layer_names) - 1
        self._set(inputs, "data")
        for i in range(first, last + 1):
            self._net.forward_layer(i)
        self._net.end_pass()  # arrays taken from net.blobs before the pass are current, as in Caffe
        names = self.top_names[self._layer_names[last]] if end is not None else self.outputs
        return {name: self.blobs[name].data for name in dict.fromkeys(list(names) + list(blobs or []))}

    def backward(self, diffs=None, start=None, end=None, **top_diffs):
        """Backpropagate from layer `start` down to `end` (names, inclusive) after setting `top_diffs`.

        Returns {blob: diff} for the net inputs (the bottoms of `end` when given) and the extra `diffs`.
        """
        first = self._index(start, "start") if start is not None else len(self._layer_names) - 1
        last = self._index(end, "end") if end is not None else 0
        self._set(top_diffs, "diff")
        for i in range(first, last - 1, -1):
            if self._net.layer_needs_backward[i]:
                self._net.backward_layer(i)
        self._net.end_pass()
        names = self.bottom_names[self._layer_names[last]] if end is not None else self.inputs
        return {name: self.blobs[name].diff for name in dict.fromkeys(list(names) + list(diffs or []))}

    def reshape(self):
        """Propagate input shapes (after `net.blobs[name].reshape(...)`) through every layer."""
        for layer, bottoms, tops in zip(self._net.layers, self._net.bottoms, self._net.tops):
            layer.reshape(bottoms, tops)

    def _batches(self, arrays):
        """Slices of the batch size of the first blob; the last one padded with zeros, as pycaffe does."""
        count = len(next(iter(arrays.values())))
        size = next(iter(self._net.blobs.values())).shape[0]
        for lo in range(0, count, size):
            batch = {}
            for name, array in arrays.items():
                part = np.asarray(array[lo:lo + size], np.float32)
                if len(part) < size:
                    part = np.concatenate([part, np.zeros((size - len(part),) + part.shape[1:], np.float32)])
                batch[name] = part
            yield batch

    @staticmethod
    def _gather(chunks, count):
        return {name: np.concatenate([c[name] for c in chunks])[:count] for name in (chunks[0] if chunks else {})}

    def forward_all(self, blobs=None, **inputs):
        """forward() over inputs of any length, in batches; {blob: all rows}."""
        if not inputs:
            return {name: value.copy() for name, value in self.forward(blobs=blobs).items()}
        count = len(next(iter(inputs.values())))
        chunks = [{k: v.copy() for k, v in self.forward(blobs=blobs, **batch).items()}
                  for batch in self._batches(inputs)]
        return self._gather(chunks, count)

    def forward_backward_all(self, blobs=None, diffs=None, **arrays):
        """forward then backward per batch; inputs and output diffs by name. ({blob: data}, {blob: diff})."""
        ins = {k: v for k, v in arrays.items() if k in self.inputs}
        outs = {k: v for k, v in arrays.items() if k in self.outputs}
        count = len(next(iter(arrays.values())))
        in_batches = list(self._batches(ins)) if ins else []
        out_batches = list(self._batches(outs)) if outs else []
        data, grads = [], []
        for k in range(max(len(in_batches), len(out_batches), 1)):
            data.append({n: v.copy() for n, v in self.forward(blobs=blobs, **(in_batches[k] if ins else {})).items()})
            grads.append({n: v.copy() for n, v in self.backward(diffs=diffs, **(out_batches[k] if outs else {})).items()})
        return self._gather(data, count), self._gather(grads, count)

    # ---- weights --------------------------------------------------------------------
    def copy_from(self, path):
        self._net.copy_from(os.fsdecode(path))

    def share_with(self, other):
        """Use `other`'s parameter blobs for layers of the same name (Caffe's ShareTrainedLayersWith)."""
        self._net.share_weights_from(other._net)

    def save(self, path):
        self._net.save(os.fsdecode(path))

    def __repr__(self):
        return f"<caffe.Net {self._net.name!r} {self._net.phase}, {len(self._layer_names)} layers>"
