"""caffe.Detector: class scores for windows of images (R-CNN style), over caffe.Net."""
import numpy as np

from siamese_cli.proto.caffe_pb2 import TEST

from siamese_cli.errors import SiameseError

from . import io
from .pycaffe import Net


class Detector(Net):
    """Detector(model, weights, mean=None, input_scale=None, raw_scale=None, channel_swap=None,
    context_pad=None). Each window (ymin, xmin, ymax, xmax) is cropped, resized to the net input
    and scored. context_pad and selective search are not supported here."""

    def __init__(self, model_file, pretrained_file, mean=None, input_scale=None, raw_scale=None,
                 channel_swap=None, context_pad=None):
        if context_pad:
            raise SiameseError("caffe.Detector: context_pad is not supported by this toolkit; crop with "
                               "context yourself and pass the enlarged windows")
        super().__init__(model_file, pretrained_file, TEST)
        name = self.inputs[0]
        self.transformer = io.Transformer({name: self.blobs[name].data.shape})
        self.transformer.set_transpose(name, (2, 0, 1))
        for setter, value in ((self.transformer.set_mean, mean), (self.transformer.set_input_scale, input_scale),
                              (self.transformer.set_raw_scale, raw_scale),
                              (self.transformer.set_channel_swap, channel_swap)):
            if value is not None:
                setter(name, value)
        self.context_pad = None

    def detect_windows(self, images_windows):
        """[(image file, [windows])] -> [{'window': w, 'prediction': scores, 'filename': f}]."""
        name = self.inputs[0]
        crops, where = [], []
        for filename, windows in images_windows:
            image = io.load_image(filename).astype(np.float32)
            for window in windows:
                ymin, xmin, ymax, xmax = (int(v) for v in window)
                crops.append(self.transformer.preprocess(name, image[ymin:ymax, xmin:xmax]))
                where.append((filename, window))
        scores = self.forward_all(**{name: np.stack(crops)})[self.outputs[0]]
        return [{"window": window, "prediction": score.ravel(), "filename": filename}
                for (filename, window), score in zip(where, scores)]

    def detect_selective_search(self, image_fnames):
        raise SiameseError("caffe.Detector.detect_selective_search needs the external selective_search_ijcv_with_python "
                           "package and is not supported here; compute the windows yourself and call detect_windows")
