"""The zoo section of scripts/bench.py: forward time of model-zoo deploy nets beside PyTorch CPU.

`python scripts/bench.py --zoo` times a batch-1 and a batch-10 forward pass of ResNet-50,
GoogLeNet and MobileNet v1 (examples/zoo), as `siamese time` runs them (the net's forward,
layer by layer), and the same architecture in PyTorch, built from the same prototxt with the
same random weights, in the same process, alternating round by round. The two outputs are
compared (the largest logit difference over the largest logit), so the ratio is between two
computations of the same numbers.
"""
import statistics
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
ZOO_NETS = ("resnet50", "googlenet", "mobilenet")


def randomise(net, seed=0):
    """He-scaled weights, BatchNorm statistics near mean 0 / variance 1, Scale factors near 1."""
    import numpy as np

    rng = np.random.default_rng(seed)
    for name, blobs in net.params.items():
        kind = net.layer_dict[name].type
        if kind == "BatchNorm":
            blobs[0].data[...] = rng.normal(0, 0.1, blobs[0].shape)
            blobs[1].data[...] = rng.uniform(0.5, 1.5, blobs[1].shape)
            blobs[2].data[...] = 1
            continue
        for k, blob in enumerate(blobs):
            fan_in = blob.count // blob.shape[0] if blob.data.ndim > 1 else 1
            scale = np.sqrt(2.0 / fan_in) if k == 0 and kind != "Scale" else 0.1
            blob.data[...] = rng.normal(1.0 if kind == "Scale" and k == 0 else 0.0, scale, blob.shape)


def torch_model(net):
    """A torch.nn.Module computing `net` (TEST phase) layer by layer, holding copies of its weights."""
    import torch
    from torch import nn

    F = nn.functional

    def pair(values, default):
        values = list(values)
        return tuple(values * 2 if len(values) == 1 else values) if values else (default, default)

    def tensor(blob):
        return torch.from_numpy(blob.data.copy())

    steps = []  # (function, bottom names, top names)
    for layer, lp in zip(net.layers, net.param.layer):
        kind, blobs = lp.type, layer.blobs
        if kind == "Input":
            continue
        if kind == "Convolution":
            p = lp.convolution_param
            weight, bias = tensor(blobs[0]), tensor(blobs[1]) if p.bias_term else None
            args = dict(stride=pair(p.stride, 1), padding=pair(p.pad, 0), dilation=pair(p.dilation, 1), groups=p.group)
            fn = (lambda w, b, a: lambda x: F.conv2d(x, w, b, **a))(weight, bias, args)
        elif kind == "BatchNorm":
            factor = float(blobs[2].data[0])
            factor = 0.0 if factor == 0 else 1.0 / factor
            mean, var = tensor(blobs[0]) * factor, tensor(blobs[1]) * factor
            eps = lp.batch_norm_param.eps
            fn = (lambda m, v, e: lambda x: F.batch_norm(x, m, v, training=False, eps=e))(mean, var, eps)
        elif kind == "Scale":
            gamma = tensor(blobs[0]).view(1, -1, 1, 1)
            beta = tensor(blobs[1]).view(1, -1, 1, 1) if len(blobs) > 1 else None
            fn = (lambda g, b: (lambda x: torch.addcmul(b, x, g)) if b is not None else (lambda x: x * g))(gamma, beta)
        elif kind == "ReLU":
            fn = F.relu
        elif kind == "Pooling":
            p = lp.pooling_param
            if p.global_pooling:
                fn = (lambda x: F.adaptive_max_pool2d(x, 1)) if p.pool == p.MAX else (lambda x: F.adaptive_avg_pool2d(x, 1))
            else:
                args = dict(kernel_size=p.kernel_size, stride=p.stride, padding=p.pad, ceil_mode=True)
                fn = ((lambda a: lambda x: F.max_pool2d(x, **a)) if p.pool == p.MAX else
                      (lambda a: lambda x: F.avg_pool2d(x, **a)))(args)
        elif kind == "LRN":
            p = lp.lrn_param
            fn = (lambda n, a, b, k: lambda x: F.local_response_norm(x, n, a, b, k))(p.local_size, p.alpha, p.beta, p.k)
        elif kind == "InnerProduct":
            weight = tensor(blobs[0])
            bias = tensor(blobs[1]) if len(blobs) > 1 else None
            fn = (lambda w, b: lambda x: F.linear(x.flatten(1), w, b))(weight, bias)
        elif kind == "Eltwise":
            fn = lambda *xs: sum(xs[1:], xs[0])  # noqa: E731 (SUM, the only operation the zoo nets use)
        elif kind == "Concat":
            fn = lambda *xs: torch.cat(xs, dim=1)  # noqa: E731
        elif kind in ("Dropout", "Split"):
            fn = (lambda *xs: xs if len(xs) > 1 else xs[0]) if kind == "Dropout" else None
        elif kind == "Softmax":
            fn = lambda x: F.softmax(x, dim=1)  # noqa: E731
        else:
            raise ValueError(f"bench: no PyTorch form for layer type {kind}")
        steps.append((fn, list(lp.bottom), list(lp.top)))

    class Model(nn.Module):
        def forward(self, data):
            blobs = {"data": data}
            for fn, bottoms, tops in steps:
                if fn is None:  # Split: every top is its bottom
                    for top in tops:
                        blobs[top] = blobs[bottoms[0]]
                    continue
                blobs[tops[0]] = fn(*[blobs[b] for b in bottoms])
            return blobs[logits]

    logits = net.param.layer[-1].bottom[0]  # the Softmax's input: compared before it saturates
    return Model().eval()


def _median_ms(step, iterations, settle=0.3):
    """Median milliseconds of one call, after `settle` seconds idle (spinning BLAS/OpenMP threads calm down)."""
    time.sleep(settle)
    times = []
    for _ in range(iterations):
        start = time.perf_counter()
        step()
        times.append((time.perf_counter() - start) * 1e3)
    return statistics.median(times)


def run_zoo(names, batches, iterations, rounds, threads, with_torch=True):
    """{net: {batch: figures}}: toolkit and PyTorch forward milliseconds and their ratio."""
    import numpy as np
    from siamese_cli.net import Net

    torch = None
    if with_torch:
        try:
            import torch
            torch.set_num_threads(threads)
        except ImportError:
            torch = None
    results = {}
    for name in names:
        net = Net(ROOT / "examples" / "zoo" / f"{name}_deploy.prototxt", seed=0)
        randomise(net)
        model = torch_model(net) if torch is not None else None
        results[name] = {}
        for batch in batches:
            shape = (batch,) + net.blobs["data"].shape[1:]
            x = np.random.default_rng(1).standard_normal(shape).astype(np.float32)
            net.forward(data=x)
            logits = net.blobs[net.param.layer[-1].bottom[0]].data
            figures = {}
            step_ours = lambda: net.forward(data=x)  # noqa: E731
            step_theirs = None
            if model is not None:
                tx = torch.from_numpy(x)
                with torch.inference_mode():
                    theirs = model(tx).numpy()
                error = np.abs(theirs.reshape(logits.shape) - logits).max() / np.abs(logits).max()
                figures["logit_difference"] = float(error)

                def step_theirs():
                    with torch.inference_mode():
                        model(tx)
                step_theirs()
            mine, other = [], []
            for _ in range(rounds):
                mine.append(_median_ms(step_ours, iterations))
                if step_theirs is not None:
                    other.append(_median_ms(step_theirs, iterations))
            figures["toolkit_ms"] = statistics.median(mine)
            if other:
                figures["torch_ms"] = statistics.median(other)
                figures["ratio"] = figures["toolkit_ms"] / figures["torch_ms"]
                figures["ratio_rounds"] = [a / b for a, b in zip(mine, other)]
            results[name][batch] = figures
    return results


def report_zoo(results, out):
    out.write("zoo forward (ms per pass; ratio toolkit/torch):\n")
    for name, per_batch in results.items():
        for batch, f in per_batch.items():
            line = f"  {name:>10} batch {batch:>3}: toolkit {f['toolkit_ms']:8.1f}"
            if "torch_ms" in f:
                rounds = f["ratio_rounds"]
                line += (f"  torch {f['torch_ms']:8.1f}  ratio {f['ratio']:.2f} (rounds {min(rounds):.2f}-"
                         f"{max(rounds):.2f})  logits differ by {f['logit_difference']:.1e} of their max")
            out.write(line + "\n")
