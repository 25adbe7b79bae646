"""`siamese evaluate`: numbers for a trained embedding, comparable across runs and papers.

The deploy net embeds both images of every pair of a Caffe pair DB (pair metrics) and
every labelled image (retrieval metrics, each image a query against all the others).
Images are scaled by 1/256 as the example's Data layer scales them.
"""
import json
import math
from pathlib import Path

import numpy as np

from .. import metrics
from ..errors import SiameseError
from ..io.files import atomic_path, check_writable
from ..progress import Progress
from .figures import new_figure, picture_format, save_figure
from .plot_features import (BATCH_SIZE, DEFAULT_MODEL, SCALE, compute_features, deploy_net, load_images,
                            nearest_neighbour_accuracy, newest_snapshot)

DEFAULT_PAIRS = "examples/siamese/mnist_siamese_test_leveldb"
PAIR_KEYS = ("pairs", "roc_auc", "eer", "best_threshold_accuracy", "best_threshold")
IMAGE_KEYS = ("images", "precision_at_1", "r_precision", "map_at_r", "knn_accuracy")


def read_pairs(path):
    """(first images, second images, similar labels) of a pair DB of Datums with 2 x C channels.

    Pixels come back scaled by 1/256, each half of the channels one image of the pair.
    """
    from ..io.db import detect_backend, open_reader
    from ..layers.data import decode_batch
    from ..proto import caffe_pb2

    backend = detect_backend(path) or "leveldb"  # a missing folder gets the reader's own message
    with open_reader(path, backend) as reader:
        records = reader.take(len(reader))
    first = caffe_pb2.Datum.FromString(records[0][1])
    shape = (first.channels, first.height, first.width)
    if shape[0] % 2:
        raise SiameseError(f"{path}: records have {shape[0]} channel(s); a pair DB holds two images per record "
                           "(channels 2 for MNIST pairs, as `siamese create-db` writes them)")
    data, labels = decode_batch(records, shape, path)
    pixels = data.astype(np.float32) * SCALE
    half = shape[0] // 2
    return pixels[:, :half], pixels[:, half:], labels


def evaluate_pairs(net, path, batch_size=BATCH_SIZE):
    """(pair metrics dict, distances, similar flags) of the pair DB at `path`."""
    left, right, labels = read_pairs(path)
    similar = labels > 0.5
    if similar.all() or not similar.any():
        raise SiameseError(f"{path}: all {len(labels)} pairs are {'similar' if similar.all() else 'dissimilar'}; "
                           "pair metrics need both kinds")
    features = compute_features(net, np.concatenate([left, right]), batch_size=batch_size)
    distances = metrics.pair_distances(features[:len(labels)], features[len(labels):])
    return metrics.pair_metrics(distances, similar), distances, similar


def evaluate_images(net, images=None, labels=None, batch_size=BATCH_SIZE):
    """Retrieval metrics and the 1-NN accuracy of plot-features on labelled images (bundled MNIST test set)."""
    pixels, digits = load_images(images, labels)
    features = compute_features(net, pixels, batch_size=batch_size)
    try:
        with Progress(len(digits), "retrieval") as bar:
            result = {"images": int(len(digits)), **metrics.retrieval_metrics(features, digits, on_block=bar.update)}
    except ValueError as exc:
        raise SiameseError(f"{images or 'the images'}: {exc}") from None
    result["knn_accuracy"] = nearest_neighbour_accuracy(features, digits)
    return result


def _line(key, value):
    return f"{key} = {value}" if isinstance(value, int) else f"{key} = {value:.4f}"


def evaluate(model=DEFAULT_MODEL, weights=None, pairs=None, images=None, labels=None, json_out=None, plot=None,
             batch_size=BATCH_SIZE):
    """Run the deploy net over the pair DB and the labelled images; print and return the metrics dict."""
    if plot is not None:
        picture_format(plot)
        check_writable(plot)
    if json_out is not None:
        check_writable(json_out)
    weights = weights or newest_snapshot()
    pairs = pairs or DEFAULT_PAIRS
    net = deploy_net(model, weights, batch_size=batch_size)
    result = {"model": str(model), "weights": str(weights), "pair_db": str(pairs)}
    pair_result, distances, similar = evaluate_pairs(net, pairs, batch_size)
    for key in PAIR_KEYS:
        print(_line(key, pair_result[key]))
    image_result = evaluate_images(net, images, labels, batch_size)
    for key in IMAGE_KEYS:
        print(_line(key, image_result[key]))
    result.update(pair_result)
    result.update(image_result)
    if json_out is not None:
        with atomic_path(json_out) as tmp:
            tmp.write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
        print(f"metrics written to {json_out}")
    if plot is not None:
        title = f"{Path(model).name} with {Path(weights).name} on {Path(pairs).name}"
        save_figure(evaluation_figure(distances, similar, title=title), plot)
        print(f"ROC curve and distance histograms written to {plot}")
    return result


def evaluation_figure(distances, similar, title=""):
    """Two panels: the ROC curve (AUC, EER marked) and the distance histograms (threshold marked)."""
    fpr, tpr, _ = metrics.roc_curve(distances, similar)
    auc = metrics.roc_auc(distances, similar)
    eer, _ = metrics.equal_error_rate(distances, similar)
    accuracy, threshold = metrics.best_threshold(distances, similar)
    fig = new_figure((12, 5))
    roc, hist = fig.subplots(1, 2)

    roc.plot(fpr, tpr, color="tab:blue", lw=2, label=f"ROC, AUC = {auc:.4f}")
    roc.plot([0, 1], [0, 1], color="grey", lw=1, ls=":", label="chance")
    roc.plot([0, 1], [1, 0], color="tab:red", lw=1, ls="--", alpha=0.6, label="false positive = false negative")
    roc.plot([eer], [1 - eer], "o", color="tab:red", ms=8, label=f"EER = {eer:.4f}")
    roc.set_xlim(-0.01, 1.01)
    roc.set_ylim(-0.01, 1.01)
    roc.set_aspect("equal")
    roc.set_xlabel("false positive rate (dissimilar pairs called similar)")
    roc.set_ylabel("true positive rate (similar pairs called similar)")
    roc.set_title("ROC of the negated feature distance")
    roc.grid(True, alpha=0.4)
    roc.legend(loc="lower right")

    top = float(np.quantile(distances, 0.995)) * 1.05 or 1.0
    bins = np.linspace(0, top, 60)
    clipped = np.minimum(distances, top)
    hist.hist(clipped[similar], bins=bins, density=True, alpha=0.6, color="tab:green",
              label=f"similar ({int(similar.sum()):,} pairs)")
    hist.hist(clipped[~similar], bins=bins, density=True, alpha=0.6, color="tab:orange",
              label=f"dissimilar ({int((~similar).sum()):,} pairs)")
    hist.axvline(threshold, color="black", ls="--", lw=1.5,
                 label=f"best threshold {threshold:.3g} (accuracy {accuracy:.4f})")
    hist.set_xlabel("Euclidean distance between the two features" +
                    (" (last bin: all beyond)" if math.isfinite(top) and distances.max() > top else ""))
    hist.set_ylabel("density")
    hist.set_title("distance per pair")
    hist.grid(True, alpha=0.4)
    hist.legend(loc="upper right")
    if title:
        fig.suptitle(title)
    return fig
