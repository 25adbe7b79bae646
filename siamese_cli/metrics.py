"""What an embedding is worth: pair-verification and retrieval metrics over features and labels.

Plain numpy functions, no net and no files, so a script can score features from anywhere.

Pair metrics score each pair by its negated Euclidean feature distance against the
"similar" label: a pair is called similar when its distance is at most a threshold.
Retrieval metrics follow Musgrave, Belongie and Lim, "A Metric Learning Reality Check"
(2020), as pytorch-metric-learning computes them: every item is a query against all
the others, neighbours ranked by Euclidean distance (ties by index, lower first),
R = the number of other items of the query's class, and queries alone in their class
are left out.
"""
import numpy as np

#: Bytes of distance and rank arrays that one block of queries may use.
BLOCK_BYTES = 96 << 20


def pair_distances(first, second):
    """Euclidean distance between row i of `first` and row i of `second` (float64)."""
    diff = np.asarray(first, np.float64) - np.asarray(second, np.float64)
    return np.sqrt((diff * diff).sum(axis=1))


def _split(distances, similar):
    distances = np.asarray(distances, np.float64).ravel()
    similar = np.asarray(similar).ravel().astype(bool)
    if len(distances) != len(similar):
        raise ValueError(f"{len(distances)} distances but {len(similar)} labels")
    if similar.all() or not similar.any():
        raise ValueError("pair metrics need both similar and dissimilar pairs")
    return distances, similar


def roc_curve(distances, similar):
    """(false positive rates, true positive rates, thresholds) of "similar when distance <= t".

    One point per distinct distance in increasing order, after the point (0, 0) at t = -inf.
    """
    distances, similar = _split(distances, similar)
    order = np.argsort(distances, kind="stable")
    d, s = distances[order], similar[order]
    last = np.r_[d[1:] != d[:-1], True]  # the last index of each run of equal distances
    tp = np.cumsum(s)[last]
    fp = np.cumsum(~s)[last]
    tpr = np.r_[0.0, tp / s.sum()]
    fpr = np.r_[0.0, fp / (~s).sum()]
    return fpr, tpr, np.r_[-np.inf, d[last]]


def roc_auc(distances, similar):
    """Area under the ROC curve of -distance: P(similar pair closer than dissimilar), ties counting 1/2."""
    fpr, tpr, _ = roc_curve(distances, similar)
    return float(np.sum(np.diff(fpr) * (tpr[1:] + tpr[:-1]) / 2))


def equal_error_rate(distances, similar):
    """(EER, threshold): where the ROC curve meets false positive rate = false negative rate.

    Linear interpolation between the two ROC points that bracket the crossing.
    """
    fpr, tpr, thresholds = roc_curve(distances, similar)
    gap = (1 - tpr) - fpr  # decreases from 1 to -1 along the curve
    k = int(np.flatnonzero(gap <= 0)[0])
    if gap[k] == 0 or k == 0:
        return float(fpr[k]), float(thresholds[k])
    alpha = gap[k - 1] / (gap[k - 1] - gap[k])
    eer = fpr[k - 1] + alpha * (fpr[k] - fpr[k - 1])
    low = thresholds[k - 1] if np.isfinite(thresholds[k - 1]) else thresholds[k]
    return float(eer), float(low + alpha * (thresholds[k] - low))


def best_threshold(distances, similar):
    """(accuracy, threshold) of the best "similar when distance <= threshold" rule.

    The threshold is halfway between the last distance called similar and the next one;
    of equally accurate rules the smallest threshold wins.
    """
    distances, similar = _split(distances, similar)
    fpr, tpr, thresholds = roc_curve(distances, similar)
    positives, negatives = similar.sum(), (~similar).sum()
    correct = tpr * positives + (1 - fpr) * negatives
    k = int(np.argmax(np.round(correct)))
    if k == 0:  # every pair called dissimilar: any threshold below the smallest distance
        threshold = thresholds[1] / 2 if thresholds[1] > 0 else thresholds[1] - 1
    elif k == len(thresholds) - 1:
        threshold = thresholds[k]
    else:
        threshold = (thresholds[k] + thresholds[k + 1]) / 2
    return float(correct[k] / len(distances)), float(threshold)


def pair_metrics(distances, similar):
    """The pair metrics of `siamese evaluate` as a dict under its JSON keys."""
    accuracy, threshold = best_threshold(distances, similar)
    eer, _ = equal_error_rate(distances, similar)
    return {"pairs": int(len(distances)), "roc_auc": roc_auc(distances, similar), "eer": eer,
            "best_threshold_accuracy": accuracy, "best_threshold": threshold}


def _block_rows(count, dims):
    per_row = count * (4 * dims + 8 + 8 + 1)  # differences, distances, ranks, relevance
    return max(1, min(count, BLOCK_BYTES // max(per_row, 1)))


def retrieval_metrics(features, labels, block=None, on_block=None):
    """precision_at_1, r_precision and map_at_r of every item as a query against all the others.

    Queries run in blocks (`block` rows, by default sized to BLOCK_BYTES), so 10,000
    items never need the full 10,000 x 10,000 distance matrix at once; `on_block(rows)`
    is called after each (a progress bar).
    """
    features = np.asarray(features, np.float32)
    labels = np.asarray(labels).ravel()
    count = len(labels)
    if features.ndim != 2 or len(features) != count:
        raise ValueError(f"features {features.shape} do not match {count} labels")
    classes, inverse, sizes = np.unique(labels, return_inverse=True, return_counts=True)
    r_all = sizes[inverse] - 1  # same-class items other than the query
    depth = int(r_all.max()) if count else 0
    block = block or _block_rows(count, features.shape[1])
    sums = {"precision_at_1": 0.0, "r_precision": 0.0, "map_at_r": 0.0}
    queries = int((r_all > 0).sum())
    if queries == 0 or depth == 0:
        raise ValueError("retrieval metrics need at least one class with two or more items")
    ranks = np.arange(1, depth + 1, dtype=np.float64)
    for lo in range(0, count, block):
        hi = min(lo + block, count)
        diff = features[lo:hi, None, :] - features[None, :, :]
        distance = np.einsum("qnd,qnd->qn", diff, diff)
        del diff
        distance[np.arange(hi - lo), np.arange(lo, hi)] = np.inf  # a query never retrieves itself
        order = np.argsort(distance, axis=1, kind="stable")[:, :depth]
        r = r_all[lo:hi]
        keep = r > 0
        relevant = (inverse[order] == inverse[lo:hi, None])[keep]
        r = r[keep]
        within_r = ranks[None, :] <= r[:, None]
        hits = np.cumsum(relevant, axis=1)
        sums["precision_at_1"] += float(relevant[:, 0].sum())
        sums["r_precision"] += float((np.where(within_r, relevant, False).sum(axis=1) / r).sum())
        precision = hits / ranks[None, :]
        sums["map_at_r"] += float((np.where(within_r & relevant, precision, 0.0).sum(axis=1) / r).sum())
        if on_block is not None:
            on_block(hi - lo)
    return {name: value / queries for name, value in sums.items()}
