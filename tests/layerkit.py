"""Building and running one layer outside a net, for the layer tests."""
import numpy as np
from google.protobuf import text_format

from gradcheck import make_blobs
from siamese_cli.blob import Blob
from siamese_cli.layers import layer_class
from siamese_cli.proto import caffe_pb2


def make(type_name, text="", phase="TEST", seed=0):
    param = caffe_pb2.LayerParameter(name="probe", type=type_name)
    text_format.Merge(text, param)
    return layer_class(type_name)(param, phase=phase, rng=np.random.default_rng(seed))


def setup_forward(layer, bottom, top=None, num_top=1):
    """Check counts, set up, reshape and run `layer` forward on Blobs `bottom`; the top Blobs."""
    top = top if top is not None else [Blob() for _ in range(num_top)]
    layer.check_counts(bottom, top)
    layer.setup(bottom, top)
    layer.reshape(bottom, top)
    layer.forward(bottom, top)
    return top


def run(layer, *arrays, num_top=1):
    """Set up `layer` on bottoms holding `arrays`, run forward: (bottom blobs, top blobs)."""
    bottom = make_blobs(*arrays)
    return bottom, setup_forward(layer, bottom, num_top=num_top)


def separate_and_in_place_gradients(new_layer, x, dy):
    """[(bottom diff, param diffs)] of a fresh `new_layer()` run with a separate top, then in place."""
    results = []
    for in_place in (False, True):
        layer = new_layer()
        (bottom,) = make_blobs(x)
        top = setup_forward(layer, [bottom], [bottom] if in_place else None)
        top[0].diff[...] = dy
        layer.backward(top, [True], [bottom])
        results.append((bottom.diff.copy(), [blob.diff.copy() for blob in layer.blobs]))
    return results
