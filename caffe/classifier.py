"""caffe.Classifier: a TEST-phase Net with a Transformer, predicting class probabilities for images."""
import numpy as np

from siamese_cli.proto.caffe_pb2 import TEST

from . import io
from .pycaffe import Net


class Classifier(Net):
    """Classifier(model, weights, image_dims=None, mean=None, input_scale=None, raw_scale=None,
    channel_swap=None): images are resized to image_dims, cropped to the net's input size
    (ten crops averaged, or the centre crop), preprocessed and run forward."""

    def __init__(self, model_file, pretrained_file, image_dims=None, mean=None, input_scale=None,
                 raw_scale=None, channel_swap=None):
        super().__init__(model_file, pretrained_file, TEST)
        name = self.inputs[0]
        self.transformer = io.Transformer({name: self.blobs[name].data.shape})
        self.transformer.set_transpose(name, (2, 0, 1))
        if mean is not None:
            self.transformer.set_mean(name, mean)
        if input_scale is not None:
            self.transformer.set_input_scale(name, input_scale)
        if raw_scale is not None:
            self.transformer.set_raw_scale(name, raw_scale)
        if channel_swap is not None:
            self.transformer.set_channel_swap(name, channel_swap)
        self.crop_dims = np.array(self.blobs[name].data.shape[2:])
        self.image_dims = np.array(image_dims if image_dims is not None else self.crop_dims)

    def predict(self, inputs, oversample=True):
        """(N x C) class scores of the first output for N H x W x K images; oversample averages ten crops."""
        height, width = (int(d) for d in self.image_dims)
        images = np.stack([io.resize_image(im, (height, width)) for im in inputs])
        if oversample:
            images = io.oversample(images, self.crop_dims)
        else:
            top = int(height / 2.0 - self.crop_dims[0] / 2.0)
            left = int(width / 2.0 - self.crop_dims[1] / 2.0)
            images = images[:, top:top + self.crop_dims[0], left:left + self.crop_dims[1], :]
        name = self.inputs[0]
        batch = np.stack([self.transformer.preprocess(name, im) for im in images])
        predictions = self.forward_all(**{name: batch})[self.outputs[0]]
        if oversample:
            predictions = predictions.reshape(len(predictions) // 10, 10, -1).mean(1)
        return predictions
