"""export-onnx on the model-zoo deploy nets of examples/zoo: ONNX Runtime equals the engine, batch 1.

Random weights (tests/test_zoo.py's randomise: He-scaled, BatchNorm statistics near 0 and 1). Besides
the softmax output, the logits before it are compared: near-uniform probabilities would hide errors.
Each net runs at its full input size; ResNet-50, the slowest, takes about 5 s of the suite.
"""
import numpy as np
import pytest

onnx = pytest.importorskip("onnx")
ort = pytest.importorskip("onnxruntime")

from test_zoo import ZOO, randomise  # noqa: E402

from siamese_cli.export.onnx import net_to_onnx  # noqa: E402
from siamese_cli.net import Net  # noqa: E402

# file stem: the blob the final Softmax reads
NETS = {"squeezenet_v1.1": "pool10", "mobilenet": "fc7", "googlenet": "loss3/classifier", "resnet50": "fc1000"}


@pytest.mark.parametrize("name", list(NETS))
def test_zoo_net_matches_onnx_runtime(name):
    net = Net(ZOO / f"{name}_deploy.prototxt")
    randomise(net)
    image = np.random.default_rng(1).standard_normal(net.blobs["data"].shape).astype(np.float32)
    want = net.forward(data=image)
    logits = NETS[name]
    want[logits] = net.blobs[logits].data.copy()
    model = net_to_onnx(net, dynamic=True)
    model.graph.output.append(onnx.helper.make_tensor_value_info(logits, onnx.TensorProto.FLOAT, None))
    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    got = dict(zip([o.name for o in session.get_outputs()], session.run(None, {"data": image})))
    assert list(got) == ["prob", logits]
    for blob, value in want.items():
        np.testing.assert_allclose(got[blob], value, rtol=1e-5, atol=1e-5 * float(np.abs(value).max()), err_msg=blob)
    assert np.abs(want[logits]).max() > 1e-2  # a live net: the logits carry signal
