"""caffe.proto: the toolkit's generated protobuf module, under pycaffe's name."""
from . import caffe_pb2  # noqa: F401
