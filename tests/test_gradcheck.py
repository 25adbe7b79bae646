"""The gradient checker itself must fail on a gradient that is 1% off, at any magnitude."""
import numpy as np
import pytest
from google.protobuf import text_format

from gradcheck import check_gradients, make_blobs
from siamese_cli.layers import layer_class
from siamese_cli.proto import caffe_pb2


def scaled_layer(type_name, text, factor):
    """A layer of `type_name` whose backward multiplies every gradient it writes by `factor`."""
    base = layer_class(type_name)

    class Scaled(base):
        def backward(self, top, propagate_down, bottom):
            for blob in self.blobs:
                blob.diff[...] = 0
            super().backward(top, propagate_down, bottom)
            for blob in list(self.blobs) + list(bottom):
                blob.diff *= np.float32(factor)

    param = caffe_pb2.LayerParameter(name="probe", type=type_name)
    text_format.Merge(text, param)
    return Scaled(param, rng=np.random.default_rng(0))


CASES = [
    ("Softmax", ""),  # gradients below 1, which a max(|g|, 1) scale let through
    ("Power", "power_param { scale: 0.01 power: 2 }"),  # gradients near 1e-2
    ("Power", "power_param { scale: 30 }"),  # gradients of 30
    ("InnerProduct", "inner_product_param { num_output: 3 weight_filler { type: 'gaussian' } }"),
]


def inputs():
    return make_blobs(np.random.default_rng(1).standard_normal((2, 5)).astype(np.float32))


@pytest.mark.parametrize("type_name, text", CASES)
def test_exact_gradients_pass(type_name, text):
    check_gradients(scaled_layer(type_name, text, 1.0), inputs())


@pytest.mark.parametrize("factor", [1.01, 0.99])
@pytest.mark.parametrize("type_name, text", CASES)
def test_one_percent_error_fails(type_name, text, factor):
    with pytest.raises(AssertionError):
        check_gradients(scaled_layer(type_name, text, factor), inputs())
