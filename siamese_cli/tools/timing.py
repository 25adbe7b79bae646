"""`siamese time`: per-layer forward and backward milliseconds (Caffe's `caffe time`)."""
import sys
import time

from ..errors import SiameseError
from ..log import CaffeLog, fmt
from ..net import Net


def time_layers(net, iterations):
    """Average milliseconds per layer: (names, forward_ms, backward_ms, total forward-backward ms)."""
    count = len(net.layers)
    forward, backward = [0.0] * count, [0.0] * count
    clock = time.perf_counter
    start = clock()
    for _ in range(iterations):
        for i in range(count):
            t = clock()
            net.forward_layer(i)
            forward[i] += clock() - t
        for i in reversed(range(count)):
            if net.layer_needs_backward[i]:
                t = clock()
                net.backward_layer(i)
                backward[i] += clock() - t
    total = clock() - start
    scale = 1000.0 / iterations
    names = [layer.name for layer in net.layers]
    return names, [f * scale for f in forward], [b * scale for b in backward], total * scale


def time_net(model, weights=None, iterations=50, phase="TRAIN", log=None, out=None):
    if iterations < 1:
        raise SiameseError(f"time: iterations must be at least 1, got {iterations}")
    log = log or CaffeLog()
    out = out or sys.stdout
    net = Net(model, weights=weights, phase=phase, seed=0)
    try:
        log("Performing Forward")
        log(f"Initial loss: {fmt(net.forward_loss())}")
        log("Performing Backward")
        net.backward()
        log(f"Testing for {iterations} iterations.")
        names, forward, backward, total = time_layers(net, iterations)
        width = max(10, max((len(n) for n in names), default=0))
        out.write("Average time per layer:\n")
        for name, f, b in zip(names, forward, backward):
            out.write(f"{name:>{width}}\tforward: {fmt(f)} ms.\n")
            out.write(f"{name:>{width}}\tbackward: {fmt(b)} ms.\n")
        out.write(f"Average Forward pass: {fmt(sum(forward))} ms.\n")
        out.write(f"Average Backward pass: {fmt(sum(backward))} ms.\n")
        out.write(f"Average Forward-Backward: {fmt(total)} ms.\n")
        out.write(f"Total Time: {fmt(total * iterations)} ms.\n")
        out.write("*** Benchmark ends ***\n")
        return names, forward, backward, total
    finally:
        net.close()
