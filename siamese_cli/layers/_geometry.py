"""The 2-D geometry of Caffe's convolution and pooling parameters, shared by the layers and the ONNX export.

`layer` is anything with an `error(message)` method that returns the exception to raise.
"""


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


def pool_geometry(layer, p):
    """(kernel or None for global pooling, stride, pad) as (h, w) pairs from a PoolingParameter, checked as Caffe does."""
    has_kernel_hw = p.HasField("kernel_h") or p.HasField("kernel_w")
    if p.global_pooling:
        if p.HasField("kernel_size") or has_kernel_hw:
            raise layer.error("global_pooling takes the whole input as its window; remove kernel_size/kernel_h/kernel_w")
        kernel = None
    elif p.HasField("kernel_size"):
        if has_kernel_hw:
            raise layer.error("give kernel_size or kernel_h/kernel_w, not both")
        kernel = (p.kernel_size, p.kernel_size)
    elif p.HasField("kernel_h") and p.HasField("kernel_w"):
        kernel = (p.kernel_h, p.kernel_w)
    else:
        raise layer.error("kernel_size (or both kernel_h and kernel_w) is required")
    if p.HasField("pad_h") != p.HasField("pad_w") or (p.HasField("pad") and p.HasField("pad_h")):
        raise layer.error("give pad, or both pad_h and pad_w")
    if p.HasField("stride_h") != p.HasField("stride_w") or (p.HasField("stride") and p.HasField("stride_h")):
        raise layer.error("give stride, or both stride_h and stride_w")
    pad = (p.pad_h, p.pad_w) if p.HasField("pad_h") else (p.pad, p.pad)
    stride = (p.stride_h, p.stride_w) if p.HasField("stride_h") else (p.stride, p.stride)
    if p.global_pooling and (any(pad) or stride != (1, 1)):
        raise layer.error("global_pooling needs pad 0 and stride 1")
    if min(stride) <= 0:
        raise layer.error(f"stride must be positive, got {list(stride)}")
    if kernel is not None:
        if min(kernel) <= 0:
            raise layer.error(f"kernel size must be positive, got {list(kernel)}")
        if pad[0] >= kernel[0] or pad[1] >= kernel[1]:
            raise layer.error(f"pad {list(pad)} must be smaller than the kernel {list(kernel)}")
    return kernel, stride, pad


def pool_out_size(size, kernel, stride, pad, ceil_mode=True):
    """Caffe's rule: ceil((size + 2 pad - kernel) / stride) + 1, one less if the last window starts in the padding."""
    span = size + 2 * pad - kernel
    out = (-(-span // stride) if ceil_mode else span // stride) + 1
    if pad and (out - 1) * stride >= size + pad:
        out -= 1
    return out
