"""Split layers for blobs that several layers read (Caffe's util/insert_splits)."""
from .errors import SiameseError
from .proto import caffe_pb2


def insert_splits(net_param):
    """Give every blob that several layers read its own Split layer, as Caffe does.

    Each consumer then writes its own diff and the Split layer sums them, so no
    layer ever has to add into a bottom diff. An in-place layer starts a new version
    of its blob, and only readers of the same version share it.
    """
    producer = {}  # blob name -> (layer index, top index) of its current version
    consumers = {}  # (layer index, top index) -> [(layer index, bottom index)]
    for index, name in enumerate(net_param.input):
        producer[name] = (-1, index)
        consumers[(-1, index)] = []
    for i, layer in enumerate(net_param.layer):
        for j, bottom in enumerate(layer.bottom):
            if bottom not in producer:
                raise SiameseError(f'layer "{layer.name}" ({layer.type}): unknown bottom blob "{bottom}" '
                                   f"(no earlier layer of this phase produces it)")
            consumers[producer[bottom]].append((i, j))
        for j, top in enumerate(layer.top):
            producer[top] = (i, j)
            consumers[(i, j)] = []
    shared = {source: users for source, users in consumers.items() if len(users) > 1}
    if not shared:
        return net_param

    def split_name(source):
        """Caffe's naming: BLOB_PRODUCER_TOPINDEX_split."""
        layer_index, top_index = source
        if layer_index < 0:
            return net_param.input[top_index], f"{net_param.input[top_index]}_input_{top_index}_split"
        layer = net_param.layer[layer_index]
        return layer.top[top_index], f"{layer.top[top_index]}_{layer.name}_{top_index}_split"

    rename = {user: f"{split_name(source)[1]}_{k}" for source, users in shared.items() for k, user in enumerate(users)}
    result = caffe_pb2.NetParameter()
    result.CopyFrom(net_param)
    del result.layer[:]

    def splits_after(layer_index, count):
        for top_index in range(count):
            users = shared.get((layer_index, top_index))
            if users:
                blob, name = split_name((layer_index, top_index))
                split = result.layer.add(name=name, type="Split")
                split.bottom.append(blob)
                split.top.extend(f"{name}_{k}" for k in range(len(users)))

    splits_after(-1, len(net_param.input))
    for i, layer in enumerate(net_param.layer):
        copy = result.layer.add()
        copy.CopyFrom(layer)
        for j in range(len(layer.bottom)):
            copy.bottom[j] = rename.get((i, j), layer.bottom[j])
        splits_after(i, len(layer.top))
    return result
