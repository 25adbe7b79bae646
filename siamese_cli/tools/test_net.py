"""`siamese test`: the mean of every output of a net over N batches (Caffe's `caffe test`)."""
import sys

import numpy as np

from ..errors import SiameseError
from ..log import CaffeLog, fmt, output_line
from ..net import Net


def test_net(model, weights, iterations=50, phase="TEST", log=None, out=None):
    """Run `iterations` forward passes; print and return {output name: mean value(s)}."""
    if iterations < 1:
        raise SiameseError(f"test: iterations must be at least 1, got {iterations}")
    log = log or CaffeLog()
    out = out or sys.stdout
    net = Net(model, weights=weights, phase=phase)
    try:
        log(f"Running for {iterations} iterations.")

        def log_batch(i):
            for name, data, _ in net.output_values():
                for value in data:
                    log(f"Batch {i}, {name} = {fmt(value)}")

        loss, means = net.mean_outputs(iterations, after_batch=log_batch)
        log(f"Loss: {fmt(loss / iterations)}")
        for name, _, weight in net.output_values():
            for value in np.ravel(means[name]):
                out.write(output_line(name, value, weight) + "\n")
        return means
    finally:
        net.close()
