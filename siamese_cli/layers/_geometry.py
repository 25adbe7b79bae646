"""The 2-D geometry of Caffe's ConvolutionParameter, shared by Convolution, Deconvolution and Im2col."""


def _pair(layer, p, field, prefix, default):
    """(h, w) from repeated `field` (one value for both dims, or one per dim) or from `prefix`_h/_w."""
    values = list(getattr(p, field))
    if prefix and (p.HasField(f"{prefix}_h") or p.HasField(f"{prefix}_w")):
        h, w = f"{prefix}_h", f"{prefix}_w"
        if values:
            raise layer.error(f"give {field} or {h}/{w}, not both")
        if not (p.HasField(h) and p.HasField(w)):
            raise layer.error(f"{h} and {w} must be given together")
        return getattr(p, h), getattr(p, w)
    if not values:
        if default is None:
            raise layer.error(f"{field} (or {prefix}_h and {prefix}_w) is required")
        return default, default
    if len(values) <= 2:
        return values[0], values[-1]
    raise layer.error(f"{field} takes 1 value or 2 (h, w) for 2-D convolution, got {len(values)}")


def conv_geometry(layer, p):
    """(kernel, stride, pad, dilation) as (h, w) pairs from a ConvolutionParameter, checked as Caffe does."""
    kernel = _pair(layer, p, "kernel_size", "kernel", None)
    stride = _pair(layer, p, "stride", "stride", 1)
    pad = _pair(layer, p, "pad", "pad", 0)
    dilation = _pair(layer, p, "dilation", None, 1)
    for name, pair in (("kernel size", kernel), ("stride", stride), ("dilation", dilation)):
        if min(pair) <= 0:
            raise layer.error(f"{name} must be positive, got {list(pair)}")
    return kernel, stride, pad, dilation


def conv_out_size(size, kernel, stride, pad, dilation):
    """floor((size + 2 pad - (dilation (kernel - 1) + 1)) / stride) + 1."""
    return (size + 2 * pad - (dilation * (kernel - 1) + 1)) // stride + 1
