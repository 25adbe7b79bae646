"""caffe.NetSpec, caffe.layers (L) and caffe.params (P): nets written as Python calls.

`L.Convolution(n.data, num_output=20, weight_filler=dict(type='xavier'))` makes a layer whose
keyword arguments go, by name, into the layer's own `*_param` message (found from the proto
descriptors: type "Convolution" -> ConvolutionParameter -> convolution_param), or else into the
LayerParameter itself (loss_weight, include, param, transform_param ...). Dicts fill messages,
lists fill repeated fields, a single value fills a one-element repeated field. Tops not named on
a NetSpec get pycaffe's automatic names (Convolution1, ...).
"""
from collections import Counter, OrderedDict
from functools import lru_cache

import numpy as np
from google.protobuf.descriptor import FieldDescriptor

from siamese_cli.proto import caffe_pb2


@lru_cache(maxsize=None)
def param_field_names():
    """{layer type: LayerParameter field} from the descriptors, e.g. {"Pooling": "pooling_param", ...}."""
    names = {}
    for field in caffe_pb2.LayerParameter.DESCRIPTOR.fields:
        if field.name.endswith("_param") and field.message_type is not None:
            names[field.message_type.name.removesuffix("Parameter")] = field.name
    return names


def _scalar(field, value):
    if isinstance(value, np.generic):
        value = value.item()
    if field.enum_type is not None and isinstance(value, str):
        try:
            return field.enum_type.values_by_name[value].number
        except KeyError:
            known = ", ".join(field.enum_type.values_by_name)
            raise ValueError(f"{field.full_name}: no value {value!r}; use one of {known}") from None
    return value


def _fill_message(message, value):
    if isinstance(value, dict):
        for key, item in value.items():
            assign_proto(message, key, item)
    else:
        message.CopyFrom(value)


def assign_proto(message, name, value):
    """Set field `name` of `message` from a Python value (dicts for messages, lists for repeated fields)."""
    field = message.DESCRIPTOR.fields_by_name.get(name)
    if field is None:
        raise AttributeError(f"{message.DESCRIPTOR.name} has no field {name!r}")
    is_message = field.type == FieldDescriptor.TYPE_MESSAGE
    if field.is_repeated:
        values = list(value) if isinstance(value, (list, tuple)) else [value]
        target = getattr(message, name)
        for item in values:
            if is_message:
                _fill_message(target.add(), item)
            else:
                target.append(_scalar(field, item))
    elif is_message:
        _fill_message(getattr(message, name), value)
    else:
        setattr(message, name, _scalar(field, value))


class Top:
    """One output blob of a layer being specified (the `n`-th top of `fn`)."""

    def __init__(self, fn, n):
        self.fn, self.n = fn, n

    def to_proto(self):
        """A NetParameter with every layer needed to compute this top."""
        return to_proto(self)

    def _to_proto(self, layers, names, autonames):
        self.fn._to_proto(layers, names, autonames)


class Function:
    """One layer being specified: its type, its bottoms (Tops) and its keyword parameters."""

    def __init__(self, type_name, inputs, params):
        for index, bottom in enumerate(inputs):
            if not isinstance(bottom, Top):
                raise TypeError(f"{type_name} input {index} is not a top (got {type(bottom).__name__}); "
                                f"pass the result of another layer call")
        self.type_name = type_name
        self.inputs = inputs
        params = dict(params)
        self.ntop = params.pop("ntop", 1)
        self.in_place = params.pop("in_place", False)
        self.params = params
        self.tops = tuple(Top(self, n) for n in range(self.ntop))

    def _top_name(self, top, names, autonames):
        if top not in names:
            autonames[self.type_name] += 1
            names[top] = f"{self.type_name}{autonames[self.type_name]}"
        return names[top]

    def _layer_name(self, names, autonames):
        if self.ntop > 0:
            return self._top_name(self.tops[0], names, autonames)
        if self not in names:
            autonames[self.type_name] += 1
            names[self] = f"{self.type_name}{autonames[self.type_name]}"
        return names[self]

    def _to_proto(self, layers, names, autonames):
        if self in layers:
            return
        bottoms = []
        for bottom in self.inputs:
            bottom.fn._to_proto(layers, names, autonames)
            bottoms.append(layers[bottom.fn].top[bottom.n])
        layer = caffe_pb2.LayerParameter(type=self.type_name)
        layer.bottom.extend(bottoms)
        if self.in_place:
            layer.top.extend(bottoms)
        else:
            layer.top.extend(self._top_name(top, names, autonames) for top in self.tops)
        layer.name = self._layer_name(names, autonames)
        own = param_field_names().get(self.type_name)
        for key, value in self.params.items():
            self._assign(layer, own, key, value)
        layers[self] = layer

    def _assign(self, layer, own, key, value):
        if not key.endswith("param") and own and key in getattr(layer, own).DESCRIPTOR.fields_by_name:
            assign_proto(getattr(layer, own), key, value)
        elif key in layer.DESCRIPTOR.fields_by_name:
            assign_proto(layer, key, value)
        else:
            where = f"{own} or LayerParameter" if own else f"LayerParameter (type {self.type_name} has no *_param)"
            raise AttributeError(f"{self.type_name}: keyword {key!r} is a field of neither {where}")


class NetSpec:
    """Tops assigned as attributes (`n.conv1 = L.Convolution(...)`) name their blobs and layers;
    `to_proto()` gives the NetParameter of every layer they need."""

    def __init__(self):
        super().__setattr__("tops", OrderedDict())

    def __setattr__(self, name, value):
        self.tops[name] = value

    def __getattr__(self, name):
        try:
            return self.tops[name]
        except KeyError:
            raise AttributeError(f"NetSpec has no top {name!r}") from None

    __setitem__ = __setattr__

    def __getitem__(self, name):
        return self.tops[name]

    def to_proto(self):
        names = {top: name for name, top in self.tops.items()}
        autonames, layers = Counter(), OrderedDict()
        for top in self.tops.values():
            top._to_proto(layers, names, autonames)  # a Top, or a layer of no tops (ntop=0)
        return caffe_pb2.NetParameter(layer=list(layers.values()))


def to_proto(*tops):
    """A NetParameter with every layer needed to compute `tops` (blob names made automatically)."""
    layers, autonames = OrderedDict(), Counter()
    for top in tops:
        top._to_proto(layers, {}, autonames)
    return caffe_pb2.NetParameter(layer=list(layers.values()))


class Layers:
    """`L.AnyType(*bottoms, **params)`: one top, a tuple of tops (ntop > 1) or the layer itself (ntop=0)."""

    def __getattr__(self, type_name):
        if type_name.startswith("__"):
            raise AttributeError(type_name)

        def make(*bottoms, **params):
            fn = Function(type_name, bottoms, params)
            if fn.ntop == 0:
                return fn
            return fn.tops[0] if fn.ntop == 1 else fn.tops

        make.__name__ = type_name
        return make


class _EnumValues:
    def __init__(self, message):
        self._message = message

    def __getattr__(self, name):
        try:
            return self._message.DESCRIPTOR.enum_values_by_name[name].number
        except KeyError:
            known = ", ".join(self._message.DESCRIPTOR.enum_values_by_name)
            raise AttributeError(f"{self._message.DESCRIPTOR.name} has no value {name!r}; it has {known}") from None


class Parameters:
    """`P.Pooling.MAX`, `P.Data.LMDB`, `P.Eltwise.SUM`: enum values of each XxxParameter message."""

    def __getattr__(self, name):
        message = getattr(caffe_pb2, name + "Parameter", None)
        if message is None:
            raise AttributeError(f"caffe.params has no {name!r} (no message {name}Parameter in caffe.proto)")
        return _EnumValues(message)


layers = Layers()
params = Parameters()
