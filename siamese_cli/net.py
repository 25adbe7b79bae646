"""Net: the layers and blobs of one phase of a Caffe net definition, wired in prototxt order."""
import contextlib
from collections import OrderedDict
from pathlib import Path

import numpy as np

from .blob import Blob
from .errors import SiameseError
from .io.files import write_bytes_atomic
from .fillers import KINDS as FILLER_KINDS
from .handover import allow_hand_over
from .io.prototxt import field_line, read_net
from .io.upgrade import read_weights
from .layers import layer_class
from .log import CaffeLog
from .net_state import filter_net, layer_included, phase_value
from .proto import caffe_pb2
from .schedule import branch_schedule
from .splits import insert_splits
from .weights import copy_layers


class LearnableParam:
    """One unique parameter storage and the multipliers the solver applies to it."""

    __slots__ = ("blob", "name", "lr_mult", "decay_mult")

    def __init__(self, blob, name, lr_mult, decay_mult):
        self.blob, self.name, self.lr_mult, self.decay_mult = blob, name, lr_mult, decay_mult

    def __repr__(self):
        return f"LearnableParam({self.name}, {self.blob.shape}, lr_mult={self.lr_mult}, decay_mult={self.decay_mult})"


def _fillers(message, path=()):
    """(field path, occurrence, FillerParameter) for every filler set anywhere inside `message`."""
    for field, value in message.ListFields():
        if field.message_type is None:
            continue
        items = value if field.is_repeated else [value]
        for k, item in enumerate(items):
            if field.message_type.name == "FillerParameter":
                yield path + (field.name,), k, item
            else:
                yield from _fillers(item, path + (field.name,))


def _legacy_input_shapes(net_param):
    """Shapes of the deploy-style `input:` blobs (input_shape, or the older input_dim quadruples)."""
    names = list(net_param.input)
    if net_param.input_shape:
        if len(net_param.input_shape) != len(names):
            raise SiameseError(f"net has {len(names)} input(s) but {len(net_param.input_shape)} input_shape(s)")
        return [tuple(shape.dim) for shape in net_param.input_shape]
    dims = list(net_param.input_dim)
    if len(dims) != 4 * len(names):
        raise SiameseError("each net input needs an input_shape (or four input_dim values)")
    return [tuple(dims[4 * k:4 * k + 4]) for k in range(len(names))]


class Net:
    """A Caffe net for one phase, built from a prototxt path or a NetParameter.

    In the spirit of pycaffe: `net.blobs[name].data`, `net.params[layer][i].data`,
    `net.forward(data=x)` returns the output blobs, `net.backward()`.
    Parameters named in `param { name: ... }` are one Blob shared by every layer
    that names them; `learnable_params` lists each storage once.
    """

    def __init__(self, model, weights=None, phase="TEST", level=0, stages=(), seed=None, source=None):
        """`source`: the prototxt file a NetParameter `model` was read from, for file:line in errors."""
        net_param = read_net(model) if isinstance(model, (str, Path)) else model
        self.source = str(model) if isinstance(model, (str, Path)) else net_param.name
        self._definition = (str(model) if isinstance(model, (str, Path)) else source, net_param)
        state = caffe_pb2.NetState()
        state.MergeFrom(net_param.state)
        state.phase = phase_value(phase)
        state.level = level
        state.stage.extend(stages)
        self.phase = "TRAIN" if state.phase == caffe_pb2.TRAIN else "TEST"
        self._state = state
        self.name = net_param.name
        self.force_backward = net_param.force_backward
        self.param = insert_splits(filter_net(net_param, state))
        self.blobs = OrderedDict()
        self.layers = []
        self.layer_dict = OrderedDict()
        self.bottoms, self.tops = [], []
        self.inputs = []
        self.params = OrderedDict()
        self.learnable_params = []
        self._loss_weights = []  # per layer: [(top blob, weight)]
        seeds = np.random.SeedSequence(seed).spawn(len(self.param.layer) + 1)
        self._build(seeds)
        self.schedule = branch_schedule(self)  # None: the plain pass, one layer at a time
        if weights:
            for path in str(weights).split(","):
                self.copy_from(path)

    # ---- construction -------------------------------------------------------------
    def _build(self, seeds):
        for name, shape in zip(self.param.input, _legacy_input_shapes(self.param)):
            self.blobs[name] = Blob(shape)
            self.inputs.append(name)

        owners = {}  # shared param name -> (LearnableParam, ParamSpec, layer name)
        producing_layer = {}
        for index, lp in enumerate(self.param.layer):
            cls = self._checked_class(lp)
            layer = cls(lp, phase=self.phase, rng=np.random.default_rng(seeds[index]))
            bottoms = [self.blobs[name] for name in lp.bottom]
            tops = []
            for j, name in enumerate(lp.top):
                in_place = j < len(lp.bottom) and lp.bottom[j] == name
                if name in self.blobs and not in_place:
                    raise SiameseError(f'layer "{lp.name}": top blob "{name}" is already produced by layer '
                                       f'"{producing_layer.get(name, "input")}"; rename it or make the layer in-place')
                if not in_place:
                    self.blobs[name] = Blob()
                producing_layer[name] = lp.name
                tops.append(self.blobs[name])
            layer.check_counts(bottoms, tops)
            layer.setup(bottoms, tops)
            layer.reshape(bottoms, tops)
            if lp.type == "Input":
                self.inputs.extend(lp.top)
            self._share_params(layer, lp, owners)
            self.layers.append(layer)
            self.layer_dict[lp.name] = layer
            self.bottoms.append(bottoms)
            self.tops.append(tops)
            if layer.blobs:
                self.params[lp.name] = layer.blobs
            self._loss_weights.append(self._layer_loss_weights(layer, lp, tops))
        self._plan_backward()
        self.keep_batch_last = False
        self._deferrable = allow_hand_over(self.layers, self.bottoms, self.tops)
        available = dict.fromkeys(self.param.input)
        for lp in self.param.layer:
            for name in lp.bottom:
                available.pop(name, None)
            available.update(dict.fromkeys(lp.top))
        self.outputs = list(available)

    def _where(self, lp, field=("type",), occurrence=0):
        """`FILE:LINE: ` of a field of layer `lp` in the prototxt the net came from ("" when there is none)."""
        path, definition = self._definition
        if not path:
            return ""
        same_name = [layer for layer in definition.layer if layer.name == lp.name]
        nth = next((k for k, layer in enumerate(same_name) if layer_included(layer, self._state)), 0)
        line = field_line(path, lp.name, field, occurrence, nth)
        return f"{path}:{line}: " if line else f"{path}: "

    def _checked_class(self, lp):
        """The layer class of `lp`, once its type and every filler in it are known to this toolkit."""
        try:
            cls = layer_class(lp.type)
        except SiameseError as exc:
            raise SiameseError(f'{self._where(lp)}layer "{lp.name}": {exc}') from None
        for path, occurrence, filler in _fillers(lp):
            if filler.type not in FILLER_KINDS:
                raise SiameseError(f'{self._where(lp, path + ("type",), occurrence)}layer "{lp.name}": unknown filler '
                                   f'type "{filler.type}" in {".".join(path)}; use one of {", ".join(FILLER_KINDS)}')
        return cls

    @staticmethod
    def _layer_loss_weights(layer, lp, tops):
        if lp.loss_weight:
            if len(lp.loss_weight) != len(tops):
                raise SiameseError(f'layer "{lp.name}": {len(lp.loss_weight)} loss_weight values for {len(tops)} tops')
            weights = list(lp.loss_weight)
        else:
            weights = [1.0 if (layer.is_loss and j == 0) else 0.0 for j in range(len(tops))]
        return [(top, w) for top, w in zip(tops, weights) if w != 0]

    def _share_params(self, layer, lp, owners):
        for k, blob in enumerate(layer.blobs):
            spec = lp.param[k] if k < len(lp.param) else caffe_pb2.ParamSpec()
            lr_mult, decay_mult = (0.0 if layer.frozen_params else spec.lr_mult), spec.decay_mult
            if not spec.name or spec.name not in owners:
                learnable = LearnableParam(blob, spec.name or f"{lp.name}[{k}]", lr_mult, decay_mult)
                self.learnable_params.append(learnable)
                if spec.name:
                    owners[spec.name] = (learnable, spec, lp.name)
                continue
            owner, owner_spec, owner_layer = owners[spec.name]
            where = f'layer "{lp.name}": shared param "{spec.name}" (owned by layer "{owner_layer}")'
            if blob.shape != owner.blob.shape:
                permissive = spec.share_mode == caffe_pb2.ParamSpec.PERMISSIVE
                if not (permissive and blob.count == owner.blob.count):
                    raise SiameseError(f"{where} has shape {list(blob.shape)} here but {list(owner.blob.shape)} "
                                       f"there; shared params must have the same shape")
            for field in ("lr_mult", "decay_mult"):
                if spec.HasField(field) and owner_spec.HasField(field):
                    if getattr(spec, field) != getattr(owner_spec, field):
                        raise SiameseError(f"{where}: {field} {getattr(spec, field):g} differs from the owner's "
                                           f"{getattr(owner_spec, field):g}; give both the same value")
                elif spec.HasField(field):
                    setattr(owner, field, getattr(spec, field))
            layer.blobs[k] = owner.blob

    def _plan_backward(self):
        """Decide, as Caffe does, which layers run backward and to which bottoms they propagate."""
        trainable = {id(p.blob) for p in self.learnable_params if p.lr_mult != 0}
        needs_grad = set()
        layer_needs = []
        self.propagate_down = []
        for layer, lp, bottoms, tops in zip(self.layers, self.param.layer, self.bottoms, self.tops):
            propagate = [self.force_backward or name in needs_grad for name in lp.bottom]
            if lp.propagate_down:
                if len(lp.propagate_down) != len(bottoms):
                    raise SiameseError(f'layer "{lp.name}": propagate_down needs one value per bottom')
                propagate = [want and p for want, p in zip(lp.propagate_down, propagate)]
            propagate = [p and layer.allow_backward(j) for j, p in enumerate(propagate)]
            has_params = any(id(b) in trainable for b in layer.blobs)
            need = any(propagate) or has_params or (self.force_backward and bool(bottoms))
            layer_needs.append(need)
            self.propagate_down.append(propagate)
            if need:
                needs_grad.update(lp.top)

        # Layers that feed no loss need no backward pass (Caffe's blobs_under_loss).
        under_loss = set()
        for i in reversed(range(len(self.layers))):
            lp = self.param.layer[i]
            contributes = bool(self._loss_weights[i]) or any(name in under_loss for name in lp.top)
            if not contributes and not self.force_backward:
                layer_needs[i] = False
                self.propagate_down[i] = [False] * len(lp.bottom)
            if layer_needs[i]:
                under_loss.update(name for name, p in zip(lp.bottom, self.propagate_down[i]) if p)
        self.layer_needs_backward = layer_needs
        for layer, need in zip(self.layers, layer_needs):
            layer.needs_backward = bool(need)

    def settle(self):
        """Write every blob handed over batch-last out in (N, C, H, W): arrays a caller holds are current again."""
        for blob in self._deferrable:
            blob.settle()

    @contextlib.contextmanager
    def batch_last_between_passes(self):
        """Within this block, passes leave handed-over blobs batch-last (the solver's loop: nobody holds their arrays);
        outside it every public pass ends settled, as Caffe's blobs are always current in memory."""
        self.keep_batch_last = True
        try:
            yield self
        finally:
            self.keep_batch_last = False
            self.settle()

    def end_pass(self):
        """What every public pass ends with: settled blobs, unless inside batch_last_between_passes."""
        if not self.keep_batch_last:
            self.settle()

    # ---- running ------------------------------------------------------------------
    def forward_layer(self, i):
        """Run layer i forward; its weighted loss contribution."""
        bottoms, tops = self.bottoms[i], self.tops[i]
        layer = self.layers[i]
        layer.reshape(bottoms, tops)
        layer.forward(bottoms, tops)
        return sum(weight * float(top.data.sum()) for top, weight in self._loss_weights[i])

    def backward_layer(self, i):
        """Run layer i backward, seeding its loss tops with their loss weights."""
        for top, weight in self._loss_weights[i]:
            top.diff[...] = weight
        self.layers[i].backward(self.tops[i], self.propagate_down[i], self.bottoms[i])

    def _forward(self):
        if self.schedule is not None:
            return self.schedule.forward()
        return sum(self.forward_layer(i) for i in range(len(self.layers)))

    def forward(self, **inputs):
        """Fill the named input blobs (reshaping them), run forward, return {output: array copy}."""
        for name, array in inputs.items():
            if name not in self.blobs:
                raise SiameseError(f'net "{self.name}" has no blob "{name}"; its inputs are {self.inputs}')
            array = np.asarray(array, dtype=np.float32)
            self.blobs[name].reshape(array.shape)
            self.blobs[name].data[...] = array
        self._forward()
        self.end_pass()
        return {name: self.blobs[name].data.copy() for name in self.outputs}

    def forward_loss(self):
        """One forward pass over whatever the inputs hold; the weighted loss."""
        loss = self._forward()
        self.end_pass()
        return loss

    def backward(self):
        """Backpropagate from the loss tops; parameter gradients ADD into their diffs."""
        if self.schedule is not None:
            self.schedule.backward()
        else:
            for i in reversed(range(len(self.layers))):
                if self.layer_needs_backward[i]:
                    self.backward_layer(i)
        self.end_pass()

    def forward_backward(self):
        loss = self._forward()
        self.backward()
        return loss

    def clear_param_diffs(self):
        for param in self.learnable_params:
            param.blob.diff[...] = 0

    def output_values(self):
        """(name, values as a flat array, loss weight) for each output blob, in order."""
        weight_of = {id(top): w for weights in self._loss_weights for top, w in weights}
        return [(name, self.blobs[name].data.ravel(), weight_of.get(id(self.blobs[name]), 0.0))
                for name in self.outputs]

    def mean_outputs(self, iterations, after_batch=None):
        """Run `iterations` forward passes: (total loss, {output name: float32 mean per element}).

        The sums are float32, as Caffe's test loops keep them. `after_batch(i)` runs after each
        pass; when it returns True the loop stops early (the means still divide by `iterations`).
        """
        sums, loss = {}, np.float32(0)
        for i in range(iterations):
            loss += np.float32(self.forward_loss())
            for name, data, _ in self.output_values():
                sums[name] = sums[name] + data if name in sums else data.astype(np.float32).copy()
            if after_batch is not None and after_batch(i):
                break
        return loss, {name: total / np.float32(iterations) for name, total in sums.items()}

    def close(self):
        if self.schedule is not None:
            self.schedule.close()
        for layer in self.layers:
            close = getattr(layer, "close", None)
            if close:
                close()

    # ---- weights ------------------------------------------------------------------
    def share_weights_from(self, other):
        """Use `other`'s parameter Blobs for every layer of the same name (a test net and its train net)."""
        replaced = {}
        for name, layer in self.layer_dict.items():
            source = other.layer_dict.get(name)
            if source is None or not layer.blobs:
                continue
            if len(source.blobs) != len(layer.blobs):
                raise SiameseError(f'layer "{name}" has {len(layer.blobs)} param blobs here, {len(source.blobs)} there')
            for k, blob in enumerate(source.blobs):
                if blob.shape != layer.blobs[k].shape:
                    raise SiameseError(f'layer "{name}" param {k}: shape {list(layer.blobs[k].shape)} here, '
                                       f"{list(blob.shape)} in the train net")
                replaced[id(layer.blobs[k])] = blob
                layer.blobs[k] = blob
        for param in self.learnable_params:
            param.blob = replaced.get(id(param.blob), param.blob)

    def copy_from(self, path, log=None):
        """Load weights from a Caffe .caffemodel (V0/V1 files upgraded): layers matched by name."""
        proto = read_weights(path)
        return self.copy_from_proto(proto, source=str(path), log=log)

    def copy_from_proto(self, proto, source="weights", log=None):
        """Copy the layers of NetParameter `proto` that match by name and shape; the names copied.

        Logs what was copied and warns about layers ignored or left at their initial values.
        """
        return copy_layers(self, proto, source, log or CaffeLog())

    def to_proto(self, write_diff=False):
        """The NetParameter Caffe writes as a .caffemodel: every layer with its blobs."""
        proto = caffe_pb2.NetParameter()
        proto.name = self.name
        for layer, lp in zip(self.layers, self.param.layer):
            if lp.type == "Split":
                continue
            entry = proto.layer.add()
            entry.CopyFrom(lp)
            del entry.blobs[:]
            for blob in layer.blobs:
                entry.blobs.append(blob.to_proto(write_diff))
        return proto

    def save(self, path):
        """Write the weights as a Caffe binary .caffemodel (atomically)."""
        write_bytes_atomic(path, self.to_proto().SerializeToString())

    def __repr__(self):
        return f"Net({self.name!r}, phase={self.phase}, layers={len(self.layers)})"
