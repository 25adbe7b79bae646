"""Layers, one module per Caffe type; the registry maps Caffe's type string to the class.

Adding a layer is adding a module here that defines a `Layer` subclass with `type` set.
"""
import importlib
import pkgutil

from ..errors import SiameseError
from .base import Layer


def _discover():
    registry = {}
    for info in pkgutil.iter_modules(__path__):
        if info.name == "base":
            continue
        module = importlib.import_module(f"{__name__}.{info.name}")
        for value in vars(module).values():
            if isinstance(value, type) and issubclass(value, Layer) and value.type:
                registry[value.type] = value
    return registry


REGISTRY = _discover()


def supported_types():
    """The type strings this toolkit implements, sorted (computed: the registry grows with the modules)."""
    return sorted(REGISTRY)


def layer_class(type_name):
    try:
        return REGISTRY[type_name]
    except KeyError:
        raise SiameseError(f'layer type "{type_name}" is not supported; supported types: '
                           f'{", ".join(supported_types())}') from None


__all__ = ["Layer", "REGISTRY", "layer_class", "supported_types"]
