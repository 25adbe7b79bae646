"""The compiled implicit-GEMM convolution (accel/conv.c): tile edges, several bottoms, and agreement with numpy.

test_convolution.py already runs its stride-1 short-row cases on both paths; these shapes are
chosen to reach every tile remainder of the C side: more than 64 outputs (two output panels,
the second partial), a last panel of 48 to 63 outputs (three full vectors, the rest by positions),
output and weight-column counts that are not multiples of the tile rows, and position runs that
end inside a 16-float vector.
"""
import numpy as np
import pytest

from gradcheck import check_gradients, make_blobs
from siamese_cli import accel
from siamese_cli.blob import Blob
from siamese_cli.layers import _implicit
from test_convolution import FILLERS, make, reference, run

SHAPES = [
    # (param text, input shape, pad, dilation)
    ("num_output: 70 kernel_size: 3", (3, 7, 6, 6), (0, 0), (1, 1)),
    ("num_output: 7 kernel_size: 2 pad: 1", (5, 3, 5, 7), (1, 1), (1, 1)),
    ("num_output: 9 kernel_h: 3 kernel_w: 2 dilation: 2 pad: 2", (2, 4, 6, 5), (2, 2), (2, 2)),
    ("num_output: 4 kernel_size: 3 bias_term: false", (1, 1, 5, 5), (0, 0), (1, 1)),
    # a last output panel of 48 to 63: 48 in full vectors, the rest by positions (53: 5 of them; 112: 64 + 48, none);
    # 15 and 18 weight columns end in tiles of 7 and 2 of the 8 rows
    ("num_output: 53 kernel_h: 3 kernel_w: 5", (3, 1, 6, 7), (0, 0), (1, 1)),
    ("num_output: 112 kernel_size: 3 pad: 1", (2, 2, 4, 4), (1, 1), (1, 1)),
]


@pytest.fixture(params=["by outputs", "by positions"])
def compiled(request, kernel_path, monkeypatch):
    """Both weight-gradient kernels of the compiled path: 64 outputs wide, or 16 positions wide."""
    if kernel_path == "compiled" and not accel.kernels().conv_implicit_available():
        pytest.skip("the implicit-GEMM kernels need AVX-512; this CPU keeps the numpy path")
    if kernel_path == "numpy" and request.param == "by positions":
        pytest.skip("the numpy path has one weight gradient")
    monkeypatch.setattr(_implicit, "POSITIONS_BELOW", 2.0 if request.param == "by positions" else 0.0)
    return kernel_path == "compiled"


@pytest.mark.parametrize("text, shape, pad, dilation", SHAPES)
def test_forward_and_path(text, shape, pad, dilation, compiled):
    x = np.random.default_rng(1).standard_normal(shape).astype(np.float32)
    layer = make(f"{text} {FILLERS}")
    _, (top,) = run(layer, x)
    assert (layer._plan.implicit is not None) == compiled
    bias = layer.blobs[1].data if len(layer.blobs) > 1 else None
    expected = reference(x, layer.blobs[0].data, bias, (1, 1), pad, dilation, 1)
    np.testing.assert_allclose(top.data, expected, rtol=1e-5, atol=2e-5)


@pytest.mark.parametrize("text, shape, pad, dilation", SHAPES)
def test_gradients(text, shape, pad, dilation, compiled):
    x = np.random.default_rng(2).standard_normal(shape).astype(np.float32)
    check_gradients(make(f"{text} {FILLERS}"), make_blobs(x))


def test_two_bottoms_add_their_weight_gradients(compiled):
    rng = np.random.default_rng(3)
    xs = [rng.standard_normal((2, 3, 6, 6)).astype(np.float32) for _ in range(2)]
    check_gradients(make(f"num_output: 5 kernel_size: 3 {FILLERS}"), make_blobs(*xs), top=[Blob(), Blob()])


@pytest.mark.parametrize("outputs, bottom_shape, tolerance", [(50, (16, 20, 12, 12), 2e-6), (20, (16, 1, 28, 28), 1e-5)],
                         ids=["conv2", "conv1"])
def test_lenet_convolutions_agree_with_the_numpy_path(monkeypatch, compiled, outputs, bottom_shape, tolerance):
    """The example's conv2 and conv1 shapes, batch 16: both paths give the same top and gradients to float32 summation
    order (conv1's weight gradient sums 9,216 products, conv2's 1,024). conv1's 24-wide rows are batch-first on the
    numpy path and batch-last on the compiled one."""
    rng = np.random.default_rng(4)
    x = rng.standard_normal(bottom_shape).astype(np.float32)
    n, _, h, w = bottom_shape
    dy = rng.standard_normal((n, outputs, h - 4, w - 4)).astype(np.float32)
    results = []
    for setting in ("1", "0"):
        monkeypatch.setenv(accel.ENV, setting)
        layer = make(f"num_output: {outputs} kernel_size: 5 {FILLERS}")
        bottom, (top,) = run(layer, x)
        top.diff[...] = dy
        layer.backward([top], [True], bottom)
        results.append((top.data.copy(), bottom[0].diff.copy(), layer.blobs[0].diff.copy(), layer.blobs[1].diff.copy()))
    for mine, theirs in zip(*results):
        scale = np.abs(theirs).max()
        np.testing.assert_allclose(mine, theirs, rtol=0, atol=tolerance * scale)


def test_backward_without_propagate_down_leaves_the_bottom_alone(compiled):
    x = np.random.default_rng(5).standard_normal((2, 3, 6, 6)).astype(np.float32)
    layer = make(f"num_output: 4 kernel_size: 3 {FILLERS}")
    bottom, (top,) = run(layer, x)
    bottom[0].diff[...] = 7.0
    top.diff[...] = 1.0
    layer.backward([top], [False], bottom)
    assert np.all(bottom[0].diff == 7.0)
    patches = np.lib.stride_tricks.sliding_window_view(x, (3, 3), axis=(2, 3)).sum(axis=(0, 2, 3))
    np.testing.assert_allclose(layer.blobs[0].diff, np.broadcast_to(patches, (4, 3, 3, 3)), rtol=1e-5, atol=1e-5)


def test_short_or_badly_filling_position_runs_keep_the_numpy_path(monkeypatch, compiled):
    """A deploy net at batch 1 would fill an eighth of each tile, ResNet's 7x7 maps at batch 10 (a run of 70) 55%
    of two: those keep numpy; conv2 at batch 16 (128) and a 7x7 map at batch 16 (112, 88%) do not."""
    monkeypatch.setattr(_implicit, "MIN_RUN", 64)
    monkeypatch.setattr(_implicit, "MIN_FILL", 0.75)
    for text, shape, expected in ((f"num_output: 50 kernel_size: 5 {FILLERS}", (1, 20, 12, 12), False),
                                  (f"num_output: 50 kernel_size: 5 {FILLERS}", (16, 20, 12, 12), compiled),
                                  (f"num_output: 8 kernel_size: 3 pad: 1 {FILLERS}", (10, 4, 7, 7), False),
                                  (f"num_output: 8 kernel_size: 3 pad: 1 {FILLERS}", (16, 4, 7, 7), compiled)):
        layer = make(text)
        run(layer, np.zeros(shape, np.float32))
        assert (layer._plan.implicit is not None) == expected, shape


@pytest.mark.parametrize("outer, rows, cols", [((1, 1), 5, 7), ((1, 1), 16, 16), ((1, 1), 17, 33), ((2, 3), 12, 64),
                                               ((3, 2), 50, 100)])
def test_transpose_copy_moves_every_value_and_nothing_else(outer, rows, cols):
    """The blocked transpose (accel/transpose.c), full and partial 16 x 16 blocks, under two batch levels."""
    kernels = accel.kernels()
    if kernels is None:
        pytest.skip(accel.status())
    a, b = outer
    source = np.random.default_rng(6).standard_normal((a, b, rows, cols)).astype(np.float32)
    target = np.full((a, b, cols + 1, rows), -7.0, np.float32)  # one spare row: nothing may be written past cols
    sb, db = rows * cols, (cols + 1) * rows
    kernels.transpose_copy(kernels.ptr(source), kernels.ptr(target), a, b, rows, cols, b * sb, sb, cols,
                           b * db, db, rows)
    np.testing.assert_array_equal(target[:, :, :cols], source.transpose(0, 1, 3, 2))
    assert np.all(target[:, :, cols] == -7.0)
