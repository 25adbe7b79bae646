"""Caffe's older net and solver formats, upgraded in memory to the current ones by Caffe's rules.

A thin mapping at the edge: the engine only ever sees current-format NetParameters.
- V0 nets (`layers { layer { type: "conv" ... } }`): padding layers folded into the next
  conv/pool, the flat V0 fields moved into their *_param messages, then as V1.
- old data transformation fields (scale, mean_file, crop_size, mirror in data_param,
  image_data_param, window_data_param of V1 layers) moved into transform_param;
- V1 nets (`layers { type: CONVOLUTION ... }`): enum types to type strings, param names,
  blob_share_mode, blobs_lr and weight_decay to `param { name share_mode lr_mult decay_mult }`;
- BatchNorm layers that declare three params get lr_mult and decay_mult 0;
- `input`/`input_dim`/`input_shape` to an Input layer (only when writing with upgrade-net:
  the Net reads both forms alike);
- solvers: the `solver_type` enum to the `type` string.
"""
from ..errors import SiameseError
from ..log import CaffeLog
from ..proto import caffe_pb2

V1 = caffe_pb2.V1LayerParameter

# V1 enum name -> current type string (Caffe's UpgradeV1LayerType).
_V1_TYPES = {
    "NONE": "", "ABSVAL": "AbsVal", "ACCURACY": "Accuracy", "ARGMAX": "ArgMax", "BNLL": "BNLL",
    "CONCAT": "Concat", "CONTRASTIVE_LOSS": "ContrastiveLoss", "CONVOLUTION": "Convolution",
    "DECONVOLUTION": "Deconvolution", "DATA": "Data", "DROPOUT": "Dropout", "DUMMY_DATA": "DummyData",
    "EUCLIDEAN_LOSS": "EuclideanLoss", "ELTWISE": "Eltwise", "EXP": "Exp", "FLATTEN": "Flatten",
    "HDF5_DATA": "HDF5Data", "HDF5_OUTPUT": "HDF5Output", "HINGE_LOSS": "HingeLoss", "IM2COL": "Im2col",
    "IMAGE_DATA": "ImageData", "INFOGAIN_LOSS": "InfogainLoss", "INNER_PRODUCT": "InnerProduct",
    "LRN": "LRN", "MEMORY_DATA": "MemoryData", "MULTINOMIAL_LOGISTIC_LOSS": "MultinomialLogisticLoss",
    "MVN": "MVN", "POOLING": "Pooling", "POWER": "Power", "RELU": "ReLU", "SIGMOID": "Sigmoid",
    "SIGMOID_CROSS_ENTROPY_LOSS": "SigmoidCrossEntropyLoss", "SILENCE": "Silence", "SOFTMAX": "Softmax",
    "SOFTMAX_LOSS": "SoftmaxWithLoss", "SPLIT": "Split", "SLICE": "Slice", "TANH": "TanH",
    "WINDOW_DATA": "WindowData", "THRESHOLD": "Threshold",
}

# V0 type string -> V1 enum name (Caffe's UpgradeV0LayerType).
_V0_TYPES = {
    "accuracy": "ACCURACY", "bnll": "BNLL", "concat": "CONCAT", "conv": "CONVOLUTION", "data": "DATA",
    "dropout": "DROPOUT", "euclidean_loss": "EUCLIDEAN_LOSS", "flatten": "FLATTEN", "hdf5_data": "HDF5_DATA",
    "hdf5_output": "HDF5_OUTPUT", "im2col": "IM2COL", "images": "IMAGE_DATA", "infogain_loss": "INFOGAIN_LOSS",
    "innerproduct": "INNER_PRODUCT", "lrn": "LRN", "multinomial_logistic_loss": "MULTINOMIAL_LOGISTIC_LOSS",
    "pool": "POOLING", "relu": "RELU", "sigmoid": "SIGMOID", "softmax": "SOFTMAX",
    "softmax_loss": "SOFTMAX_LOSS", "split": "SPLIT", "tanh": "TANH", "window_data": "WINDOW_DATA",
}

_CONV_IP = {"conv": "convolution_param", "innerproduct": "inner_product_param"}
_CONV_POOL = {"conv": "convolution_param", "pool": "pooling_param"}
_SOURCES = {"data": "data_param", "hdf5_data": "hdf5_data_param", "images": "image_data_param",
            "window_data": "window_data_param"}
# V0 field -> (field in the *_param message, {V0 type: *_param message}).
_V0_FIELDS = {
    "num_output": ("num_output", _CONV_IP),
    "biasterm": ("bias_term", _CONV_IP),
    "weight_filler": ("weight_filler", _CONV_IP),
    "bias_filler": ("bias_filler", _CONV_IP),
    "pad": ("pad", _CONV_POOL),
    "kernelsize": ("kernel_size", _CONV_POOL),
    "group": ("group", {"conv": "convolution_param"}),
    "stride": ("stride", _CONV_POOL),
    "pool": ("pool", {"pool": "pooling_param"}),
    "dropout_ratio": ("dropout_ratio", {"dropout": "dropout_param"}),
    "local_size": ("local_size", {"lrn": "lrn_param"}),
    "alpha": ("alpha", {"lrn": "lrn_param"}),
    "beta": ("beta", {"lrn": "lrn_param"}),
    "k": ("k", {"lrn": "lrn_param"}),
    "source": ("source", dict(_SOURCES, infogain_loss="infogain_loss_param")),
    "batchsize": ("batch_size", _SOURCES),
    "rand_skip": ("rand_skip", {"data": "data_param", "images": "image_data_param"}),
    "shuffle_images": ("shuffle", {"images": "image_data_param"}),
    "new_height": ("new_height", {"images": "image_data_param"}),
    "new_width": ("new_width", {"images": "image_data_param"}),
    "concat_dim": ("concat_dim", {"concat": "concat_param"}),
    "det_fg_threshold": ("fg_threshold", {"window_data": "window_data_param"}),
    "det_bg_threshold": ("bg_threshold", {"window_data": "window_data_param"}),
    "det_fg_fraction": ("fg_fraction", {"window_data": "window_data_param"}),
    "det_context_pad": ("context_pad", {"window_data": "window_data_param"}),
    "det_crop_mode": ("crop_mode", {"window_data": "window_data_param"}),
}
# V0 fields that go to transform_param whatever the layer type.
_V0_TRANSFORM = {"scale": "scale", "meanfile": "mean_file", "cropsize": "crop_size", "mirror": "mirror"}
_TRANSFORM_FIELDS = ("scale", "mean_file", "crop_size", "mirror")
_DATA_PARAMS = {V1.DATA: "data_param", V1.IMAGE_DATA: "image_data_param", V1.WINDOW_DATA: "window_data_param"}


def _set(message, field, value):
    """Assign `value` to a scalar, repeated or message field."""
    descriptor = message.DESCRIPTOR.fields_by_name[field]
    if descriptor.is_repeated:
        getattr(message, field).append(value)
    elif descriptor.message_type is not None:
        getattr(message, field).CopyFrom(value)
    else:
        setattr(message, field, value)


# ---- V0 -> V1 --------------------------------------------------------------------------------
def _fold_padding_layers(net, source):
    """Caffe's UpgradeV0PaddingLayers: drop "padding" layers, giving their pad to the conv/pool that reads them."""
    folded = caffe_pb2.NetParameter()
    folded.CopyFrom(net)
    del folded.layers[:]
    last_top = dict.fromkeys(net.input, -1)
    for i, connection in enumerate(net.layers):
        v0 = connection.layer
        if v0.type != "padding":
            folded.layers.add().CopyFrom(connection)
        for j, blob in enumerate(connection.bottom):
            if blob not in last_top:
                raise SiameseError(f'{source}: V0 layer "{v0.name}" reads unknown blob "{blob}"')
            producer = last_top[blob]
            if producer < 0 or net.layers[producer].layer.type != "padding":
                continue
            pad = net.layers[producer]
            if v0.type not in ("conv", "pool") or len(connection.bottom) != 1:
                raise SiameseError(f'{source}: V0 padding layer "{pad.layer.name}" feeds layer "{v0.name}" '
                                   f'({v0.type}); only a one-input conv or pool layer can take its padding')
            if len(pad.bottom) != 1 or len(pad.top) != 1:
                raise SiameseError(f'{source}: V0 padding layer "{pad.layer.name}" needs one bottom and one top')
            folded.layers[-1].layer.pad = pad.layer.pad
            folded.layers[-1].bottom[j] = pad.bottom[0]
        for blob in connection.top:
            last_top[blob] = i
    return folded


def _v0_layer_to_v1(connection, source, problems):
    out = V1()
    out.bottom.extend(connection.bottom)
    out.top.extend(connection.top)
    if not connection.HasField("layer"):
        return out
    v0 = connection.layer
    if v0.HasField("name"):
        out.name = v0.name
    kind = v0.type
    if v0.HasField("type"):
        if kind not in _V0_TYPES:
            raise SiameseError(f'{source}: V0 layer "{v0.name}" has unknown type "{kind}"; '
                               f"known V0 types: {', '.join(sorted(_V0_TYPES))}")
        out.type = V1.LayerType.Value(_V0_TYPES[kind])
    out.blobs.extend(v0.blobs)
    out.blobs_lr.extend(v0.blobs_lr)
    out.weight_decay.extend(v0.weight_decay)
    for field, value in v0.ListFields():
        name = field.name
        if name in _V0_FIELDS:
            target, by_type = _V0_FIELDS[name]
            if kind in by_type:
                _set(getattr(out, by_type[kind]), target, value)
            else:
                problems.append(f'unknown parameter {name} for V0 layer "{v0.name}" of type {kind}; ignored')
        elif name in _V0_TRANSFORM:
            setattr(out.transform_param, _V0_TRANSFORM[name], value)
        elif name == "hdf5_output_param":
            if kind == "hdf5_output":
                out.hdf5_output_param.CopyFrom(value)
            else:
                problems.append(f'unknown parameter hdf5_output_param for V0 layer "{v0.name}" of type {kind}; ignored')
    return out


def _v0_to_v1(net, source, problems):
    padded = _fold_padding_layers(net, source)
    out = caffe_pb2.NetParameter()
    if padded.HasField("name"):
        out.name = padded.name
    for connection in padded.layers:
        out.layers.append(_v0_layer_to_v1(connection, source, problems))
    out.input.extend(padded.input)
    out.input_dim.extend(padded.input_dim)
    if padded.HasField("force_backward"):
        out.force_backward = padded.force_backward
    return out


# ---- old data transformation fields ----------------------------------------------------------
def _needs_data_upgrade(net):
    return any(layer.type in _DATA_PARAMS and any(getattr(layer, _DATA_PARAMS[layer.type]).HasField(f)
                                                   for f in _TRANSFORM_FIELDS) for layer in net.layers)


def _upgrade_data_transformation(net):
    for layer in net.layers:
        if layer.type not in _DATA_PARAMS:
            continue
        param = getattr(layer, _DATA_PARAMS[layer.type])
        for field in _TRANSFORM_FIELDS:
            if param.HasField(field):
                setattr(layer.transform_param, field, getattr(param, field))
                param.ClearField(field)


# ---- V1 -> current ---------------------------------------------------------------------------
def _v1_layer_to_current(v1, source, problems):
    out = caffe_pb2.LayerParameter()
    out.bottom.extend(v1.bottom)
    out.top.extend(v1.top)
    if v1.HasField("name"):
        out.name = v1.name
    out.include.extend(v1.include)
    out.exclude.extend(v1.exclude)
    if v1.HasField("type"):
        out.type = _V1_TYPES[V1.LayerType.Name(v1.type)]
    out.blobs.extend(v1.blobs)

    def spec(i):
        while len(out.param) <= i:
            out.param.add()
        return out.param[i]

    for i, name in enumerate(v1.param):
        spec(i).name = name
    for i, mode in enumerate(v1.blob_share_mode):
        spec(i).share_mode = mode  # STRICT 0 and PERMISSIVE 1 in both enums
    for i, rate in enumerate(v1.blobs_lr):
        spec(i).lr_mult = rate
    for i, decay in enumerate(v1.weight_decay):
        spec(i).decay_mult = decay
    out.loss_weight.extend(v1.loss_weight)
    for field, value in v1.ListFields():
        if field.name.endswith("_param"):
            getattr(out, field.name).CopyFrom(value)
    if v1.HasField("layer"):
        problems.append(f'layer "{v1.name}" holds a V0 layer inside a V1 one; the V0 part is ignored')
    return out


def _v1_to_current(net, source, problems):
    if len(net.layer):
        raise SiameseError(
            f"{source}: the net has both `layer` (current) and `layers` (V1) entries; Caffe refuses to upgrade "
            "such a mix: rewrite the `layers {{ type: ENUM }}` entries as `layer {{ type: \"Name\" }}`")
    out = caffe_pb2.NetParameter()
    out.CopyFrom(net)
    del out.layers[:]
    for v1 in net.layers:
        out.layer.append(_v1_layer_to_current(v1, source, problems))
    return out


# ---- the whole chain -------------------------------------------------------------------------
def _stage(log, source, what, apply):
    log(f"Attempting to upgrade input file specified using deprecated {what}: {source}")
    problems = []
    result = apply(problems)
    for problem in problems:
        log.warning(f"{source}: {problem}")
    if problems:
        log(f"Warning: had one or more problems upgrading {what} (see above); continuing anyway.", "E")
    else:
        log(f"Successfully upgraded file specified using deprecated {what}")
    return result


def needs_upgrade(net):
    """True when `net` uses a format older than Caffe 1.0's (V0, V1, old data fields, old BatchNorm)."""
    return bool(len(net.layers)) or _needs_batch_norm_upgrade(net)


def upgrade_net(net, source="net", log=None, inputs=False):
    """Upgrade `net` (a NetParameter) in place to the current format, as Caffe's UpgradeNetAsNeeded does.

    Logs Caffe's "Attempting to upgrade ..." / "Successfully upgraded ..." lines for each step taken.
    `inputs`: also turn input/input_dim/input_shape into an Input layer. Returns True if anything changed.
    """
    changed = False
    log = log or CaffeLog()
    if any(connection.HasField("layer") for connection in net.layers):
        upgraded = _stage(log, source, "V0LayerParameter", lambda problems: _v0_to_v1(net, source, problems))
        net.CopyFrom(upgraded)
        changed = True
    if _needs_data_upgrade(net):
        _stage(log, source, "transformation parameters", lambda problems: _upgrade_data_transformation(net))
        changed = True
    if len(net.layers):
        upgraded = _stage(log, source, "V1LayerParameter", lambda problems: _v1_to_current(net, source, problems))
        net.CopyFrom(upgraded)
        changed = True
    if inputs and len(net.input):
        _stage(log, source, "input fields", lambda problems: _upgrade_inputs(net))
        changed = True
    if _needs_batch_norm_upgrade(net):
        log(f"Attempting to upgrade batch norm layers using deprecated params: {source}")
        for layer in net.layer:
            if layer.type == "BatchNorm" and len(layer.param) == 3:
                for spec in layer.param:
                    spec.lr_mult = 0
                    spec.decay_mult = 0
        log("Successfully upgraded batch norm layers using deprecated params.")
        changed = True
    return changed


def _upgrade_inputs(net):
    """Caffe's UpgradeNetInput: one Input layer named "input" first, holding every input's shape."""
    if len(net.input_shape) or len(net.input_dim):
        layer = caffe_pb2.LayerParameter(name="input", type="Input")
        for i, name in enumerate(net.input):
            layer.top.append(name)
            shape = layer.input_param.shape.add()
            if len(net.input_shape):
                shape.CopyFrom(net.input_shape[i])
            else:
                shape.dim.extend(net.input_dim[4 * i:4 * i + 4])
        layers = [layer] + list(net.layer)
        del net.layer[:]
        net.layer.extend(layers)
    net.ClearField("input")
    net.ClearField("input_shape")
    net.ClearField("input_dim")


def _needs_batch_norm_upgrade(net):
    return any(layer.type == "BatchNorm" and len(layer.param) == 3 for layer in net.layer)


def upgrade_solver_nets(solver, source="solver", log=None):
    """Upgrade the nets written inside a solver (net_param, train_net_param, test_net_param)."""
    for field in ("net_param", "train_net_param"):
        if solver.HasField(field):
            upgrade_net(getattr(solver, field), f"{source} ({field})", log)
    for k, net in enumerate(solver.test_net_param):
        upgrade_net(net, f"{source} (test_net_param #{k})", log)


def upgrade_solver_type(solver, source="solver", log=None):
    """Caffe's UpgradeSolverType: the `solver_type` enum becomes the `type` string. True if it changed."""
    if not solver.HasField("solver_type"):
        return False
    if solver.HasField("type"):
        raise SiameseError(f"{source}: gives both solver_type (old enum) and type (string); keep only `type`")
    log = log or CaffeLog()
    log(f"Attempting to upgrade input file specified using deprecated 'solver_type' field (enum)': {source}")
    names = {"SGD": "SGD", "NESTEROV": "Nesterov", "ADAGRAD": "AdaGrad", "RMSPROP": "RMSProp",
             "ADADELTA": "AdaDelta", "ADAM": "Adam"}
    solver.type = names[caffe_pb2.SolverParameter.SolverType.Name(solver.solver_type)]
    solver.ClearField("solver_type")
    log("Successfully upgraded file specified using deprecated 'solver_type' field (enum) to 'type' field (string).")
    return True


HDF5_MAGIC = b"\x89HDF\r\n\x1a\n"


def read_weights(path):
    """The NetParameter of a weights file: binary .caffemodel (upgraded from V0/V1 if needed) or Caffe's HDF5."""
    from .files import read_binary_proto

    try:
        with open(path, "rb") as handle:
            magic = handle.read(len(HDF5_MAGIC))
    except OSError:
        magic = b""  # read_binary_proto gives the error
    if magic == HDF5_MAGIC:
        from .hdf5 import read_net_weights

        return read_net_weights(path)
    proto = read_binary_proto(path, caffe_pb2.NetParameter())
    if needs_upgrade(proto):
        upgrade_net(proto, str(path))
    return proto
