"""Which blobs of a net may be handed over batch-last (Blob.defer_data) from one layer to the next."""


def allow_hand_over(layers, bottoms, tops):
    """Set `may_defer` on the blobs written by one batch-last layer and read by one other (not in place, not an
    output); return them. Only such a pair of layers agrees on the (C, H, W, N) layout between them."""
    writers, readers = {}, {}
    for i, (layer_bottoms, layer_tops) in enumerate(zip(bottoms, tops)):
        for blob in layer_tops:
            writers.setdefault(id(blob), []).append(i)
        for blob in layer_bottoms:
            readers.setdefault(id(blob), []).append(i)
    allowed = []
    for i, layer_tops in enumerate(tops):
        for blob in layer_tops:
            after = readers.get(id(blob), [])
            blob.may_defer = (writers[id(blob)] == [i] and len(after) == 1 and layers[i].batch_last
                              and layers[after[0]].batch_last)
            if blob.may_defer:
                allowed.append(blob)
    return allowed
