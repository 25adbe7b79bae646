"""The example notebook runs top to bottom and computes the same features as plot-features."""
import re
from pathlib import Path

import numpy as np
import pytest

nbformat = pytest.importorskip("nbformat", reason="the notebook test needs the test extra (nbformat)")
nbclient = pytest.importorskip("nbclient", reason="the notebook test needs the test extra (nbclient)")
pytest.importorskip("ipykernel", reason="the notebook test needs the test extra (ipykernel)")

from siamese_cli.tools import plot_features as pf  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
NOTEBOOK = ROOT / "examples/siamese/mnist_siamese.ipynb"
DEPLOY = ROOT / "examples/siamese/mnist_siamese.prototxt"
N_IMAGES = 300


def small_weights(path):
    """Seeded random weights for the deploy net, small enough that the features stay O(1)."""
    rng = np.random.default_rng(11)
    net = pf.deploy_net(DEPLOY, batch_size=1)
    for blobs in net.params.values():
        weight = blobs[0].data
        fan_in = weight[0].size
        weight[...] = rng.uniform(-1, 1, weight.shape).astype(np.float32) * np.float32(np.sqrt(3 / fan_in))
        blobs[1].data[...] = rng.uniform(-0.1, 0.1, blobs[1].shape).astype(np.float32)
    net.save(path)
    return net


def test_notebook_runs_and_matches_plot_features(tmp_path):
    weights = tmp_path / "small.caffemodel"
    small_weights(weights)
    nb = nbformat.read(NOTEBOOK, as_version=4)
    nbformat.validate(nb)
    params = [cell for cell in nb.cells if "parameters" in cell.metadata.get("tags", [])]
    assert len(params) == 1 and "WEIGHTS = None" in params[0].source
    params[0].source = (f"MODEL = {str(DEPLOY)!r}\nWEIGHTS = {str(weights)!r}\nN_IMAGES = {N_IMAGES}\nBATCH = 128")

    client = nbclient.NotebookClient(nb, timeout=120, kernel_name="python3",
                                     resources={"metadata": {"path": str(NOTEBOOK.parent)}})
    client.execute()  # raises CellExecutionError, naming the cell, on any failure

    text = "".join(out.get("text", "") for cell in nb.cells if cell.cell_type == "code" for out in cell.outputs)
    assert f"({N_IMAGES}, 2) float32" in text
    images = [out for cell in nb.cells if cell.cell_type == "code" for out in cell.outputs
              if "image/png" in out.get("data", {})]
    assert len(images) == 2  # the digit strip and the feature scatter

    pixels, _ = pf.load_images()
    want = pf.compute_features(pf.deploy_net(DEPLOY, weights, batch_size=100), pixels[:3], batch_size=100)
    printed = re.search(r"float32\n(\[\[.*?\]\])", text, re.S).group(1)
    got = np.array([[float(v) for v in row.split()] for row in re.findall(r"\[\s*([^\[\]]+)\]", printed)])
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)
