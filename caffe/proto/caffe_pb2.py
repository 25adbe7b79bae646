"""caffe.proto.caffe_pb2 is siamese_cli.proto.caffe_pb2: the same message classes, so either can be used."""
from siamese_cli.proto.caffe_pb2 import *  # noqa: F401,F403
from siamese_cli.proto.caffe_pb2 import DESCRIPTOR  # noqa: F401
