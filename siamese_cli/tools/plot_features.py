"""`siamese plot-features`: the test digits in the learned feature space, one colour per digit.

The deploy net runs over the images in batches (its input batch is resized to the
batch before the net is built, so memory stays small whatever the prototxt says),
with the images scaled by 1/256 exactly as the example's Data layer scales them.
"""
import io
import re
import sys
from pathlib import Path

import numpy as np

from ..errors import SiameseError
from ..io.files import check_writable, write_bytes_atomic
from ..progress import Progress
from .figures import new_figure, picture_format, save_figure, show_figure

DEFAULT_MODEL = "examples/siamese/mnist_siamese.prototxt"
SNAPSHOT_PATTERN = "examples/siamese/mnist_siamese_iter_*.caffemodel"
SCALE = np.float32(0.00390625)  # the example's transform_param scale: 1/256
BATCH_SIZE = 500
FEATURE_FORMATS = (".npy", ".csv")


def newest_snapshot(pattern=SNAPSHOT_PATTERN):
    """The snapshot matching `pattern` (with `_iter_*`) that has the highest iteration number.

    The iteration in the name decides, not the file time: a copied or re-saved older snapshot
    does not win over a longer run.
    """
    found = []
    for path in Path().glob(pattern):
        match = re.search(r"_iter_(\d+)\.caffemodel$", path.name)
        if match:
            found.append((int(match.group(1)), path))
    if not found:
        raise SiameseError(f"no --weights given and no {pattern} found here; train first (siamese train --solver "
                           "examples/siamese/mnist_siamese_solver.prototxt) or pass --weights")
    return max(found)[1]


def _set_batch(net_param, batch_size):
    """Make the net's inputs take `batch_size` images (a deploy prototxt often says 10,000)."""
    if net_param.input_shape:
        for shape in net_param.input_shape:
            shape.dim[0] = batch_size
    elif net_param.input_dim:
        for k in range(0, len(net_param.input_dim), 4):
            net_param.input_dim[k] = batch_size
    for layer in net_param.layer:
        if layer.type == "Input":
            for shape in layer.input_param.shape:
                shape.dim[0] = batch_size
    return net_param


def deploy_net(model, weights=None, batch_size=BATCH_SIZE):
    """The TEST-phase Net of the deploy prototxt `model`, with its input batch set to `batch_size`."""
    from ..io.prototxt import read_net
    from ..net import Net

    return Net(_set_batch(read_net(model), batch_size), weights=weights, phase="TEST", source=str(model))


def load_images(images=None, labels=None):
    """(float32 N x 1 x H x W images scaled by 1/256, uint8 labels); the bundled test set by default."""
    from ..data import mnist_files
    from ..io.idx import read_images_labels

    if (images is None) != (labels is None):
        raise SiameseError("give --images and --labels together (or neither, for the bundled MNIST test set)")
    if images is None:
        images, labels = mnist_files("test")
    pixels, digits = read_images_labels(images, labels)
    return pixels[:, None].astype(np.float32) * SCALE, digits


def _output_name(net, blob):
    if blob is not None:
        if blob not in net.blobs:
            raise SiameseError(f'net "{net.name}" has no blob "{blob}"; its outputs are {net.outputs}')
        return blob
    if len(net.outputs) != 1:
        raise SiameseError(f'net "{net.name}" has {len(net.outputs)} outputs ({", ".join(net.outputs)}); '
                           "name the feature blob (blob=...)")
    return net.outputs[0]


def compute_features(net, images, batch_size=BATCH_SIZE, blob=None):
    """Run `images` (N x C x H x W, already scaled) through `net` in batches; the N x D features.

    `blob` names the feature blob; by default the net's only output.
    """
    if len(net.inputs) != 1:
        raise SiameseError(f'net "{net.name}" has inputs {net.inputs}; a feature net takes one')
    source = net.inputs[0]
    name = _output_name(net, blob)
    expected = tuple(net.blobs[source].shape[1:])
    if tuple(images.shape[1:]) != expected:
        shown = "x".join(map(str, images.shape[1:]))
        raise SiameseError(f'the images are {shown} but input "{source}" of net "{net.name}" takes '
                           f'{"x".join(map(str, expected))}; is this the right net for these images?')
    count = len(images)
    features = None
    with Progress(count, "features") as bar:
        for start in range(0, count, batch_size):
            batch = images[start:start + batch_size]
            net.forward(**{source: batch})
            values = net.blobs[name].data.reshape(len(batch), -1)
            if features is None:
                features = np.empty((count, values.shape[1]), np.float32)
            features[start:start + len(batch)] = values
            bar.update(len(batch))
    return features


def project_2d(features):
    """(N x 2 points, note): the features as they are when 2-D, else their first two principal components."""
    dims = features.shape[1]
    if dims == 2:
        return features, None
    if dims == 1:
        return features, None
    centred = features.astype(np.float64) - features.mean(axis=0, dtype=np.float64)
    _, singular, components = np.linalg.svd(centred, full_matrices=False)
    explained = float((singular[:2] ** 2).sum() / max((singular ** 2).sum(), 1e-300))
    points = centred @ components[:2].T
    return points.astype(np.float32), f"PCA projection of {dims}-D features ({explained:.0%} of variance)"


def _colours(classes):
    from matplotlib import colormaps

    if len(classes) <= 10:
        return [colormaps["tab10"](k) for k in range(len(classes))]
    if len(classes) <= 20:
        return [colormaps["tab20"](k) for k in range(len(classes))]
    return [colormaps["viridis"](k / (len(classes) - 1)) for k in range(len(classes))]


def features_figure(features, labels, title="Siamese features", show=False, label_name="digit"):
    """A scatter Figure of the features, one colour per label, with a legend and a grid.

    Dots are sized by the point count: 4 pt² suits 10,000 digits, a few dozen images need larger ones.
    """
    points, note = project_2d(features)
    fig = new_figure((8, 7.2), show=show)
    ax = fig.add_subplot()
    classes = np.unique(labels)
    size = float(np.clip(40000 / max(len(labels), 1), 4, 36))
    for label, colour in zip(classes, _colours(classes)):
        mine = points[labels == label]
        y = mine[:, 1] if points.shape[1] > 1 else np.full(len(mine), label)
        ax.scatter(mine[:, 0], y, s=size, color=colour, alpha=0.7, linewidths=0, label=str(label), rasterized=True)
    if points.shape[1] == 1:
        ax.set_xlabel("feature")
        ax.set_ylabel("label")
    elif note:
        ax.set_xlabel("principal component 1")
        ax.set_ylabel("principal component 2")
    else:
        ax.set_xlabel("feature 1")
        ax.set_ylabel("feature 2")
    ax.set_title(title if note is None else f"{title}\n{note}")
    ax.grid(True, alpha=0.4)
    ax.set_axisbelow(True)
    ax.legend(title=label_name if len(classes) <= 10 else "label", markerscale=8 / np.sqrt(size), loc="center left",
              bbox_to_anchor=(1.01, 0.5), frameon=False)
    return fig


def write_features(path, features, labels):
    """Write labels and features: .npy as one float32 N x (1 + D) array (label first), .csv with a header."""
    path = Path(path)
    table = np.column_stack([labels.astype(np.float32), features.astype(np.float32)])
    if path.suffix.lower() == ".npy":
        buffer = io.BytesIO()
        np.save(buffer, table)
        payload = buffer.getvalue()
    else:
        header = ",".join(["label"] + [f"feature_{k + 1}" for k in range(features.shape[1])])
        rows = [",".join([str(int(label))] + [f"{v:.9g}" for v in row]) for label, row in zip(labels, features)]
        payload = (header + "\n" + "\n".join(rows) + "\n").encode("utf-8")
    write_bytes_atomic(path, payload)
    return path


def nearest_neighbour_accuracy(features, labels):
    """1-NN accuracy of the second half of the digits against the first half as reference.

    A plain measure of how well the embedding separates the classes; the README quotes it
    for the example (first 5,000 test digits as reference, last 5,000 as queries).
    """
    half = len(labels) // 2
    reference, queries = features[:half].astype(np.float32), features[half:].astype(np.float32)
    hits = 0
    for lo in range(0, len(queries), 1000):
        block = queries[lo:lo + 1000]
        distance = ((block[:, None, :] - reference[None, :, :]) ** 2).sum(axis=-1)
        hits += int((labels[:half][distance.argmin(axis=1)] == labels[half:][lo:lo + 1000]).sum())
    return hits / max(len(queries), 1)


def default_picture(weights):
    """Where the picture goes without --out: beside the weights, `NAME_features.png`."""
    weights = Path(weights)
    return weights.with_name(f"{weights.stem}_features.png")


def plot_features(model=DEFAULT_MODEL, weights=None, images=None, labels=None, out=None, show=False,
                  save_features=None, batch_size=BATCH_SIZE, report=None):
    """Compute the features of the test digits with the deploy net and draw them into `out`.

    `weights` defaults to the highest-iteration example snapshot, `out` to a picture beside
    the weights. Both output paths are checked before the net runs. `report` (default
    stdout) is told what was written where. Returns (features N x D float32, labels N uint8).
    """
    report = report or sys.stdout
    weights = weights or newest_snapshot()
    out = out or default_picture(weights)
    picture_format(out)
    if save_features is not None and Path(save_features).suffix.lower() not in FEATURE_FORMATS:
        raise SiameseError(f"{save_features}: features are written as .npy or .csv; end the name in one of them")
    for path in (out, save_features):
        if path is not None:
            check_writable(path)
    pixels, digits = load_images(images, labels)
    net = deploy_net(model, weights, batch_size=min(batch_size, len(pixels)))
    features = compute_features(net, pixels, batch_size=batch_size)
    if save_features is not None:
        write_features(save_features, features, digits)
        report.write(f"wrote {save_features} ({len(digits):,} digits: label and {features.shape[1]} features each)\n")
    noun, label_name = ("digits", "digit") if images is None else ("images", "label")
    title = f"{len(digits):,} {noun} through {Path(model).name} with {Path(weights).name}"
    fig = features_figure(features, digits, title=title, show=show, label_name=label_name)
    save_figure(fig, out)
    summary = f"{len(digits):,} points"
    if len(digits) >= 2:
        accuracy = nearest_neighbour_accuracy(features, digits)
        summary += f", 1-nearest-neighbour accuracy {accuracy:.4f} (last half against first half)"
    report.write(f"wrote {out} ({summary})\n")
    report.flush()
    if show:
        show_figure(fig)
    return features, digits
