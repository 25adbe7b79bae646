"""Trained weights into a Net, by layer name, under Caffe's CopyTrainedLayersFrom rules.

A weight that loads into the wrong shape gives a wrong result with no error, so the
shapes must be equal; only a legacy blob (num/channels/height/width, no BlobShape)
may differ, and only by leading 1s, as Caffe's Blob::ShapeEquals allows. What was
copied, what was ignored and what stays at its initial values is logged.
"""
from .blob import blob_proto_shape, proto_values
from .errors import SiameseError


def is_legacy(proto):
    """Whether a BlobProto gives its shape in the old num/channels/height/width fields."""
    return any(proto.HasField(field) for field in ("num", "channels", "height", "width"))


def shape_equals(proto, shape):
    """Caffe's Blob::ShapeEquals: equal dims, or a legacy 4-D shape equal up to leading 1s."""
    if is_legacy(proto):
        return len(shape) <= 4 and (1,) * (4 - len(shape)) + tuple(shape) == blob_proto_shape(proto)
    return blob_proto_shape(proto) == tuple(shape)


def _names(layers):
    shown = ", ".join(layers[:12])
    return shown + (f" and {len(layers) - 12} more" if len(layers) > 12 else "")


def copy_layers(net, proto, source, log):
    """Copy every layer of NetParameter `proto` whose name is a layer of `net`; the names copied.

    Refuses (SiameseError naming `source`, the layer and the blob) a blob count, a shape or
    a value count that differs; warns about file layers that match nothing and about net
    layers whose parameters no file layer set.
    """
    copied, ignored, loaded = [], [], set()
    for lp in proto.layer:
        if not lp.blobs:
            continue
        layer = net.layer_dict.get(lp.name)
        if layer is None:
            ignored.append(lp.name)
            continue
        if len(lp.blobs) != len(layer.blobs):
            raise SiameseError(f'{source}: layer "{lp.name}" has {len(lp.blobs)} blobs in the file but '
                               f"{len(layer.blobs)} in the net; rename the layer in the net to learn it from scratch")
        checked = []
        for k, (blob_proto, target) in enumerate(zip(lp.blobs, layer.blobs)):
            shape, data, diff = proto_values(blob_proto, where=f'{source}: layer "{lp.name}" blob {k}')
            if not shape_equals(blob_proto, target.shape):
                kind = " (legacy num/channels/height/width)" if is_legacy(blob_proto) else ""
                raise SiameseError(f'{source}: layer "{lp.name}" blob {k} has shape {list(shape)}{kind} in the file '
                                   f"but {list(target.shape)} in the net; the weights belong to another net "
                                   "(rename the layer in the net to learn it from scratch)")
            checked.append((target, data, diff))
        for target, data, diff in checked:
            target.data[...] = data.reshape(target.shape)
            if diff.size:
                target.diff[...] = diff.reshape(target.shape)
            loaded.add(id(target))
        copied.append(lp.name)
    if not copied and net.params:
        raise SiameseError(f"{source}: no layer of the file matches a layer with parameters in net "
                           f'"{net.name}"; is it the weights of another net?')
    if copied:
        log(f"Copied {len(copied)} layers from {source}: {_names(copied)}")
    for name in ignored:
        log(f'Ignoring source layer {name}: net "{net.name}" has no layer of that name')
    untouched = [name for name, blobs in net.params.items() if any(id(b) not in loaded for b in blobs)]
    if untouched:
        log.warning(f"{source} holds no weights for {len(untouched)} layers, left at their initial values: "
                    f"{_names(untouched)}")
    return copied
