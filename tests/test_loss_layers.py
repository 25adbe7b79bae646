"""EuclideanLoss, SigmoidCrossEntropyLoss, HingeLoss, InfogainLoss, MultinomialLogisticLoss: values from
Caffe's definitions written out in float64 loops, gradients by central differences."""
import math

import numpy as np
import pytest

import layerkit
from gradcheck import check_gradients, make_blobs
from siamese_cli.blob import array_to_proto
from siamese_cli.errors import SiameseError
RNG = np.random.default_rng(99)

def make(type_name, text="", seed=0):
    return layerkit.make(type_name, text, phase="TRAIN", seed=seed)


def loss_of(layer, bottom, num_top=1):
    top = layerkit.setup_forward(layer, bottom, num_top=num_top)
    assert top[0].shape == ()
    return float(top[0].data), top


# ---------------------------------------------------------------- EuclideanLoss

@pytest.mark.parametrize("shape_a,shape_b", [((4, 3), (4, 3)), ((2, 3, 2, 2), (2, 12)), ((3, 2, 2, 1, 2), (3, 8))])
def test_euclidean(shape_a, shape_b):
    a = RNG.standard_normal(shape_a).astype(np.float32)
    b = RNG.standard_normal(shape_b).astype(np.float32)
    loss, _ = loss_of(make("EuclideanLoss"), make_blobs(a, b))
    expected = sum((x - y) ** 2 for x, y in zip(a.ravel().tolist(), b.ravel().tolist())) / shape_a[0] / 2
    assert loss == pytest.approx(expected, rel=1e-5)
    layer = make("EuclideanLoss")
    assert layer.is_loss and layer.allow_backward(1)
    check_gradients(layer, make_blobs(a, b))


def test_euclidean_refuses_mismatched_items():
    with pytest.raises(SiameseError, match="same number of values"):
        loss_of(make("EuclideanLoss"), make_blobs(np.ones((2, 3)), np.ones((2, 4))))
    with pytest.raises(SiameseError, match="same first dimension"):
        loss_of(make("EuclideanLoss"), make_blobs(np.ones((2, 3)), np.ones((3, 2))))


# ---------------------------------------------------------------- SigmoidCrossEntropyLoss

def sigmoid_ce_reference(x, t, ignore=None):
    total, valid = 0.0, 0
    for xi, ti in zip(x.ravel().tolist(), t.ravel().tolist()):
        if ignore is not None and int(ti) == ignore:
            continue
        s = 1 / (1 + math.exp(-xi))
        total -= ti * math.log(s) + (1 - ti) * math.log(1 - s)
        valid += 1
    return total, valid


@pytest.mark.parametrize("text,divisor", [
    ("", "batch"), ("loss_param { normalization: VALID }", "valid"), ("loss_param { normalization: FULL }", "full"),
    ("loss_param { normalization: NONE }", "none"), ("loss_param { normalize: true }", "valid"),
    ("loss_param { normalize: false }", "batch"),
    ("loss_param { ignore_label: -1 }", "batch"), ("loss_param { ignore_label: -1 normalization: VALID }", "valid"),
])
def test_sigmoid_cross_entropy(text, divisor):
    x = (RNG.standard_normal((3, 2, 2)) * 3).astype(np.float32)
    t = RNG.uniform(0, 1, (3, 2, 2)).astype(np.float32)
    ignore = -1 if "ignore_label" in text else None
    if ignore is not None:
        t[0, 1, 0] = t[2, 0, 1] = -1
    total, valid = sigmoid_ce_reference(x, t, ignore)
    expected = total / {"batch": 3, "valid": valid, "full": 12, "none": 1}[divisor]
    loss, _ = loss_of(make("SigmoidCrossEntropyLoss", text), make_blobs(x, t))
    assert loss == pytest.approx(expected, rel=1e-5)
    layer = make("SigmoidCrossEntropyLoss", text)
    check_gradients(layer, make_blobs(x, t), check_bottom=[0], step=1e-3)
    assert not layer.allow_backward(1)


def test_sigmoid_cross_entropy_is_stable_for_large_inputs():
    x = np.array([[200.0, -200.0, 50.0]], np.float32)
    t = np.array([[0.0, 1.0, 1.0]], np.float32)
    loss, _ = loss_of(make("SigmoidCrossEntropyLoss"), make_blobs(x, t))
    assert loss == pytest.approx(400.0, rel=1e-6)


# ---------------------------------------------------------------- HingeLoss

def hinge_reference(x, labels, power):
    num = x.shape[0]
    rows = x.reshape(num, -1)
    total = 0.0
    for n in range(num):
        for k in range(rows.shape[1]):
            t = -1.0 if k == labels[n] else 1.0
            total += max(0.0, 1 + t * float(rows[n, k])) ** power
    return total / num


@pytest.mark.parametrize("norm,power", [("L1", 1), ("L2", 2)])
def test_hinge(norm, power):
    x = RNG.uniform(-2, 2, (4, 5)).astype(np.float32)
    # keep every 1 + t x away from the hinge
    x[np.abs(np.abs(x) - 1) < 0.05] = 0.5
    labels = np.array([0, 4, 2, 2], np.float32)
    text = f"hinge_loss_param {{ norm: {norm} }}"
    loss, _ = loss_of(make("HingeLoss", text), make_blobs(x, labels))
    assert loss == pytest.approx(hinge_reference(x, labels.astype(int), power), rel=1e-5)
    check_gradients(make("HingeLoss", text), make_blobs(x, labels), check_bottom=[0], step=1e-3)
    x4 = x.reshape(4, 5, 1, 1)
    loss4, _ = loss_of(make("HingeLoss", text), make_blobs(x4, labels))
    assert loss4 == loss


# ---------------------------------------------------------------- MultinomialLogisticLoss

def test_multinomial_logistic():
    p = RNG.uniform(0.05, 1, (4, 3)).astype(np.float32)
    p /= p.sum(1, keepdims=True)
    p[3, 1] = 0  # clipped at 1e-20
    labels = np.array([2, 0, 1, 1], np.float32)
    loss, _ = loss_of(make("MultinomialLogisticLoss"), make_blobs(p, labels.reshape(4, 1, 1, 1)))
    picked = [max(float(p[n, int(labels[n])]), 1e-20) for n in range(4)]
    assert loss == pytest.approx(-sum(math.log(v) for v in picked) / 4, rel=1e-5)

    q = p[:3].copy()
    check_gradients(make("MultinomialLogisticLoss"), make_blobs(q, labels[:3]), check_bottom=[0], step=1e-4)
    with pytest.raises(SiameseError, match="N x 1 x 1 x 1"):
        loss_of(make("MultinomialLogisticLoss"), make_blobs(p, np.zeros((4, 2), np.float32)))
    with pytest.raises(SiameseError, match="label 3 out of range"):
        loss_of(make("MultinomialLogisticLoss"), make_blobs(p, np.array([3, 0, 0, 0], np.float32)))


# ---------------------------------------------------------------- InfogainLoss

def infogain_reference(x, labels, h, axis, ignore=None):
    x = np.moveaxis(x.astype(np.float64), axis, -1)
    flat = x.reshape(-1, x.shape[-1])
    labels = labels.ravel()
    total, valid = 0.0, 0
    for row, label in zip(flat, labels.tolist()):
        if ignore is not None and int(label) == ignore:
            continue
        e = np.exp(row - row.max())
        p = e / e.sum()
        total -= sum(h[int(label), l] * math.log(max(p[l], 1e-20)) for l in range(len(row)))
        valid += 1
    return total, valid


def test_infogain_from_bottom_and_axis():
    x = RNG.standard_normal((2, 3, 4)).astype(np.float32)  # 3 classes on axis 1, 4 positions
    labels = RNG.integers(0, 3, (2, 4)).astype(np.float32)
    h = RNG.uniform(0, 1, (3, 3)).astype(np.float32)
    loss, tops = loss_of(make("InfogainLoss"), make_blobs(x, labels, h), num_top=2)
    total, valid = infogain_reference(x, labels, h, 1)
    assert loss == pytest.approx(total / valid, rel=1e-5)
    e = np.exp(x - x.max(1, keepdims=True))
    np.testing.assert_allclose(tops[1].data, e / e.sum(1, keepdims=True), rtol=1e-5)
    layer = make("InfogainLoss")
    check_gradients(layer, make_blobs(x, labels, h), check_bottom=[0], step=1e-3)
    assert not layer.allow_backward(1) and not layer.allow_backward(2)

    # axis 2 over the same numbers moved, BATCH_SIZE normalization and an ignored label
    xt = np.ascontiguousarray(np.moveaxis(x, 1, 2))  # (2, 4, 3)
    labels[1, 2] = 7
    text = "infogain_loss_param { axis: 2 } loss_param { ignore_label: 7 normalization: BATCH_SIZE }"
    loss, _ = loss_of(make("InfogainLoss", text), make_blobs(xt, labels, h))
    total, valid = infogain_reference(xt, labels, h, 2, ignore=7)
    assert valid == 7 and loss == pytest.approx(total / 8, rel=1e-5)  # BATCH_SIZE is the count before axis: 2 x 4
    check_gradients(make("InfogainLoss", text), make_blobs(xt, labels, h), check_bottom=[0], step=1e-3)


def test_infogain_identity_is_softmax_loss_and_h_from_file(tmp_path):
    x = RNG.standard_normal((5, 4)).astype(np.float32)
    labels = np.array([0, 3, 1, 1, 2], np.float32)
    source = tmp_path / "H.binaryproto"
    source.write_bytes(array_to_proto(np.eye(4, dtype=np.float32).reshape(1, 1, 4, 4)).SerializeToString())
    loss, _ = loss_of(make("InfogainLoss", f'infogain_loss_param {{ source: "{source}" }}'), make_blobs(x, labels))
    softmax_loss, _ = loss_of(make("SoftmaxWithLoss"), make_blobs(x, labels))
    assert loss == pytest.approx(softmax_loss, rel=1e-6)
    check_gradients(make("InfogainLoss", f'infogain_loss_param {{ source: "{source}" }}'), make_blobs(x, labels),
                    check_bottom=[0], step=1e-3)

    with pytest.raises(SiameseError, match="needs infogain_loss_param.source"):
        loss_of(make("InfogainLoss"), make_blobs(x, labels))
    with pytest.raises(SiameseError, match="no such file"):
        loss_of(make("InfogainLoss", 'infogain_loss_param { source: "/nonexistent/H.binaryproto" }'),
                make_blobs(x, labels))
    with pytest.raises(SiameseError, match="4 classes need 4"):
        loss_of(make("InfogainLoss"), make_blobs(x, labels, np.eye(3, dtype=np.float32)))
    with pytest.raises(SiameseError, match="normalize is deprecated"):
        loss_of(make("InfogainLoss", "loss_param { normalize: true }"), make_blobs(x, labels, np.eye(4)))
