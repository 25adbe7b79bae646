"""caffe.io: the Transformer against preprocessing worked by hand, conversions, images; caffe.Classifier."""
import numpy as np
import pytest

import caffe
from caffe.proto import caffe_pb2
from siamese_cli.errors import SiameseError


def test_transformer_preprocess_matches_hand_computation():
    rng = np.random.default_rng(0)
    image = rng.uniform(0, 1, (4, 5, 3)).astype(np.float32)  # H x W x RGB in [0, 1]
    t = caffe.io.Transformer({"data": (1, 3, 4, 5)})
    t.set_transpose("data", (2, 0, 1))
    t.set_channel_swap("data", (2, 1, 0))
    t.set_raw_scale("data", 255)
    t.set_mean("data", np.array([104.0, 117.0, 123.0]))
    t.set_input_scale("data", 0.5)
    got = t.preprocess("data", image)

    want = np.empty((3, 4, 5), np.float32)
    means = (104.0, 117.0, 123.0)
    for c in range(3):  # blob channel c is BGR: image channel 2 - c
        for y in range(4):
            for x in range(5):
                want[c, y, x] = (image[y, x, 2 - c] * 255 - means[c]) * 0.5
    assert got.dtype == np.float32 and got.shape == (3, 4, 5)
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-4)
    np.testing.assert_allclose(t.deprocess("data", got), image, atol=1e-5)


def test_transformer_resizes_and_takes_a_mean_image():
    t = caffe.io.Transformer({"data": (1, 1, 2, 2)})
    t.set_transpose("data", (2, 0, 1))
    t.set_mean("data", np.full((1, 2, 2), 0.25, np.float32))
    image = np.array([[0, 0, 1, 1], [0, 0, 1, 1], [2, 2, 3, 3], [2, 2, 3, 3]], np.float32)[:, :, None]
    np.testing.assert_allclose(t.preprocess("data", image), [[[-0.25, 0.75], [1.75, 2.75]]])
    with pytest.raises(SiameseError, match="channels"):
        t.set_mean("data", np.zeros(3))
    with pytest.raises(SiameseError, match="not one of"):
        t.preprocess("label", image)


def test_resize_image_bilinear_and_nearest():
    im = np.array([[0.0, 1.0], [2.0, 3.0]], np.float32)[:, :, None]
    up = caffe.io.resize_image(im, (4, 4))[:, :, 0]
    # half-pixel centres: output x at 0.25 steps of the 2-pixel input, edges clamped
    np.testing.assert_allclose(up[0], [0, 0.25, 0.75, 1.0])
    np.testing.assert_allclose(up[:, 0], [0, 0.5, 1.5, 2.0])
    np.testing.assert_array_equal(caffe.io.resize_image(im, (4, 4), interp_order=0)[:, :, 0],
                                  [[0, 0, 1, 1], [0, 0, 1, 1], [2, 2, 3, 3], [2, 2, 3, 3]])


def test_oversample_corners_centre_and_mirrors():
    image = np.arange(5 * 6, dtype=np.float32).reshape(5, 6, 1)
    crops = caffe.io.oversample([image], (3, 4))
    assert crops.shape == (10, 3, 4, 1)
    np.testing.assert_array_equal(crops[0, :, :, 0], image[0:3, 0:4, 0])
    np.testing.assert_array_equal(crops[3, :, :, 0], image[2:5, 2:6, 0])
    np.testing.assert_array_equal(crops[4, :, :, 0], image[1:4, 1:5, 0])  # centre: int(2.5 - 1.5), int(3 - 2)
    np.testing.assert_array_equal(crops[5:], crops[:5, :, ::-1])


def test_datum_and_blobproto_round_trips():
    pixels = np.arange(24, dtype=np.uint8).reshape(2, 3, 4)
    datum = caffe.io.array_to_datum(pixels, label=7)
    assert (datum.channels, datum.height, datum.width, datum.label) == (2, 3, 4, 7)
    assert datum.data == pixels.tobytes()
    np.testing.assert_array_equal(caffe.io.datum_to_array(datum), pixels)
    floats = caffe.io.array_to_datum(pixels.astype(np.float32) / 2)
    assert not floats.data and len(floats.float_data) == 24
    np.testing.assert_allclose(caffe.io.datum_to_array(floats), pixels / 2)

    arr = np.arange(6, dtype=np.float32).reshape(2, 3)
    blob = caffe.io.array_to_blobproto(arr, diff=-arr)
    assert list(blob.shape.dim) == [2, 3]
    np.testing.assert_array_equal(caffe.io.blobproto_to_array(blob), arr)
    np.testing.assert_array_equal(caffe.io.blobproto_to_array(blob, return_diff=True), -arr)
    legacy = caffe_pb2.BlobProto(num=1, channels=2, height=1, width=3, data=list(range(6)))
    assert caffe.io.blobproto_to_array(legacy).shape == (1, 2, 1, 3)
    vec = caffe.io.arraylist_to_blobprotovector_str([arr, arr + 1])
    np.testing.assert_array_equal(caffe.io.blobprotovector_str_to_arraylist(vec)[1], arr + 1)


def test_load_image_colour_and_grey(tmp_path):
    from PIL import Image

    rgb = np.zeros((3, 4, 3), np.uint8)
    rgb[0, 0] = (255, 0, 51)
    Image.fromarray(rgb).save(tmp_path / "a.png")
    image = caffe.io.load_image(str(tmp_path / "a.png"))
    assert image.shape == (3, 4, 3) and image.dtype == np.float32
    np.testing.assert_allclose(image[0, 0], [1.0, 0.0, 0.2], atol=1e-6)
    grey = caffe.io.load_image(str(tmp_path / "a.png"), color=False)
    assert grey.shape == (3, 4, 1)
    with pytest.raises(SiameseError, match="cannot read"):
        caffe.io.load_image(str(tmp_path / "missing.png"))


def test_classifier_predicts_with_ten_crops(tmp_path):
    model = tmp_path / "classify.prototxt"
    model.write_text("""
name: "tiny"
input: "data"
input_shape { dim: 10 dim: 3 dim: 4 dim: 4 }
layer { name: "ip" type: "InnerProduct" bottom: "data" top: "ip"
        inner_product_param { num_output: 3 weight_filler { type: "gaussian" std: 0.5 } } }
layer { name: "prob" type: "Softmax" bottom: "ip" top: "prob" }
""")
    caffe.set_random_seed(0)
    net = caffe.Net(str(model), caffe.TEST)
    weights = str(tmp_path / "tiny.caffemodel")
    net.save(weights)
    classifier = caffe.Classifier(str(model), weights, image_dims=(6, 6), raw_scale=255,
                                  mean=np.array([100.0, 110.0, 120.0]), channel_swap=(2, 1, 0))
    rng = np.random.default_rng(3)
    images = [rng.uniform(0, 1, (8, 7, 3)).astype(np.float32) for _ in range(2)]
    scores = classifier.predict(images)
    assert scores.shape == (2, 3)
    np.testing.assert_allclose(scores.sum(1), 1, rtol=1e-5)

    # by hand: resize, ten crops, preprocess each, forward, average
    weight, bias = net.params["ip"][0].data, net.params["ip"][1].data
    for k, image in enumerate(images):
        crops = caffe.io.oversample([caffe.io.resize_image(image, (6, 6))], (4, 4))
        blobs = (crops[..., ::-1] * 255 - np.array([100.0, 110.0, 120.0])).transpose(0, 3, 1, 2)
        logits = blobs.reshape(10, -1) @ weight.T + bias
        prob = np.exp(logits - logits.max(1, keepdims=True))
        prob /= prob.sum(1, keepdims=True)
        np.testing.assert_allclose(scores[k], prob.mean(0), rtol=1e-4, atol=1e-6)
    centre = classifier.predict(images, oversample=False)
    assert centre.shape == (2, 3) and not np.allclose(centre, scores)


def test_detector_scores_windows_and_refuses_what_it_lacks(tmp_path):
    from PIL import Image

    model = tmp_path / "detect.prototxt"
    model.write_text('input: "data"\ninput_shape { dim: 2 dim: 3 dim: 2 dim: 2 }\n'
                     'layer { name: "mean" type: "Pooling" bottom: "data" top: "mean" '
                     'pooling_param { pool: AVE global_pooling: true } }\n')
    weights = tmp_path / "none.caffemodel"
    caffe.Net(str(model), caffe.TEST).save(str(weights))
    pixels = np.zeros((4, 6, 3), np.uint8)
    pixels[:, 3:] = 255  # right half white
    Image.fromarray(pixels).save(tmp_path / "im.png")
    detector = caffe.Detector(str(model), str(weights), raw_scale=255)
    found = detector.detect_windows([(str(tmp_path / "im.png"), [(0, 0, 4, 3), (0, 3, 4, 6), (0, 0, 4, 6)])])
    assert [d["window"] for d in found] == [(0, 0, 4, 3), (0, 3, 4, 6), (0, 0, 4, 6)]
    np.testing.assert_allclose([d["prediction"] for d in found],
                               [[0, 0, 0], [255, 255, 255], [127.5, 127.5, 127.5]], atol=1e-3)
    with pytest.raises(SiameseError, match="context_pad"):
        caffe.Detector(str(model), str(weights), context_pad=16)
    with pytest.raises(SiameseError, match="not supported"):
        detector.detect_selective_search([str(tmp_path / "im.png")])
