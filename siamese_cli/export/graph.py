"""The ONNX graph being built from a Net: tensor names, initializers, nodes.

Caffe reuses a blob name for in-place layers; ONNX wants each tensor written once.
Every write of a blob but the last gets a versioned name (`blob/layer`), so the
graph's outputs carry the net's own blob names.
"""
import numpy as np

from ..errors import SiameseError

#: ONNX's symbolic name for the batch dimension of a dynamic-batch export.
BATCH = "batch"


class Graph:
    """Nodes and initializers of one export; converters add to it through `node` and `const`."""

    def __init__(self, net, dynamic, opset):
        from onnx import helper

        self._helper = helper
        self.net = net
        self.dynamic = dynamic
        self.opset = opset
        self.nodes, self.initializers = [], []
        self._names = set()
        self._current = {}  # Caffe blob name -> ONNX tensor holding its latest value
        self._last_write = {}  # Caffe blob name -> index of the last layer that writes it
        for index, lp in enumerate(net.param.layer):
            for top in lp.top:
                self._last_write[top] = index
        self._reserved = set(self._last_write) | set(net.inputs)  # blob names, kept for the blobs themselves
        for name in net.inputs:
            self._current[name] = self._claim(name, blob=True)

    def _claim(self, name, blob=False):
        base, k = name, 1
        while name in self._names or (not blob and name in self._reserved):
            name, k = f"{base}_{k}", k + 1
        self._names.add(name)
        return name

    # ---- what converters call ----------------------------------------------------
    def shape(self, blob):
        """The Caffe blob's shape at the export's batch size (1 for a dynamic batch)."""
        return tuple(self.net.blobs[blob].shape)

    def const(self, name, array, dtype=np.float32):
        """An initializer holding `array`; its tensor name."""
        from onnx import numpy_helper

        tensor = numpy_helper.from_array(np.asarray(array, dtype), self._claim(name))
        self.initializers.append(tensor)
        return tensor.name

    def ints(self, name, values):
        return self.const(name, np.asarray(values, np.int64), np.int64)

    def temp(self, name):
        """A fresh name for an intermediate tensor."""
        return self._claim(name)

    def node(self, op, inputs, outputs, name, **attrs):
        self.nodes.append(self._helper.make_node(op, list(inputs), list(outputs), name=self._claim(name), **attrs))
        return outputs[0] if len(outputs) == 1 else outputs

    def reduce(self, op, x, axes, outputs, name, keepdims=1):
        """A Reduce* node: ReduceSum takes its axes as an input from opset 13, the others from opset 18."""
        if op == "ReduceSum" or self.opset >= 18:
            return self.node(op, [x, self.ints(f"{name}.axes", axes)], outputs, name, keepdims=keepdims)
        return self.node(op, [x], outputs, name, axes=list(axes), keepdims=keepdims)

    # ---- wiring of one layer ------------------------------------------------------
    def bottoms(self, lp):
        return [self._current[name] for name in lp.bottom]

    def tops(self, index, lp):
        """ONNX names for the layer's tops: the blob's own name at its last write, a versioned one before."""
        names = []
        for top in lp.top:
            final = self._last_write[top] == index and top not in self.net.inputs
            names.append(self._claim(top, blob=True) if final else self._claim(f"{top}/{lp.name}"))
        return names

    def commit(self, lp, tops):
        for blob, tensor in zip(lp.top, tops):
            self._current[blob] = tensor

    # ---- the model ------------------------------------------------------------------
    def _value_info(self, blob, tensor):
        from onnx import TensorProto

        dims = list(self.shape(blob))
        if self.dynamic and dims:
            dims[0] = BATCH
        return self._helper.make_tensor_value_info(tensor, TensorProto.FLOAT, dims)

    def model(self, opset, producer):
        outputs = []
        for blob in self.net.outputs:
            if blob in self.net.inputs:
                raise SiameseError(f'net "{self.net.name}": input "{blob}" is also an output (no layer reads it)')
            outputs.append(self._value_info(blob, self._current[blob]))
        graph = self._helper.make_graph(
            self.nodes, self.net.name or "net",
            [self._value_info(name, name) for name in self.net.inputs], outputs, self.initializers)
        model = self._helper.make_model(graph, producer_name=producer,
                                        opset_imports=[self._helper.make_opsetid("", opset)])
        model.ir_version = min(model.ir_version, _IR_FOR_OPSET.get(opset, model.ir_version))
        return model


def canonical_axis(axis, rank):
    """A Caffe axis counted from the front (negative ones count from the end)."""
    return axis + rank if axis < 0 else axis


#: The IR version each opset first came with, so older runtimes accept the file.
_IR_FOR_OPSET = {13: 7, 14: 7, 15: 8, 16: 8, 17: 8, 18: 8, 19: 9, 20: 9, 21: 10}
