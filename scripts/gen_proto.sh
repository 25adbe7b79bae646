#!/usr/bin/env bash
# Regenerate siamese_cli/proto/caffe_pb2.py from protos/caffe.proto.
# Needs the pinned grpcio-tools of the test extra (its protoc fixes the generated code's version).
set -euo pipefail
cd "$(dirname "$0")/.."
python -m grpc_tools.protoc -Iprotos --python_out=siamese_cli/proto protos/caffe.proto
