"""`siamese test`: the mean of every output of a net over N batches (Caffe's `caffe test`)."""
import sys

import numpy as np

from ..log import CaffeLog, fmt
from ..net import Net


def test_net(model, weights, iterations=50, phase="TEST", log=None, out=None):
    """Run `iterations` forward passes; print and return {output name: mean value(s)}."""
    log = log or CaffeLog()
    out = out or sys.stdout
    net = Net(model, weights=weights, phase=phase)
    try:
        log(f"Running for {iterations} iterations.")
        sums, loss = {}, 0.0
        for i in range(iterations):
            loss += net.forward_loss()
            for name, data, _ in net.output_values():
                sums[name] = sums[name] + data if name in sums else data.astype(np.float32).copy()
                for value in data:
                    log(f"Batch {i}, {name} = {fmt(value)}")
        log(f"Loss: {fmt(loss / iterations)}")
        weights_of = {name: w for name, _, w in net.output_values()}
        means = {name: total / np.float32(iterations) for name, total in sums.items()}
        for name, mean in means.items():
            weight = weights_of[name]
            for value in np.ravel(mean):
                suffix = f" (* {fmt(weight)} = {fmt(weight * value)} loss)" if weight else ""
                out.write(f"{name} = {fmt(value)}{suffix}\n")
        return means
    finally:
        net.close()
