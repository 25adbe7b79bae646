"""siamese: Caffe's siamese-network workflow in Python and numpy.

`Net`, `Blob`, `load_solver` and `SiameseError` are the entry points; they load on first use so that
the command line starts fast.
"""
__version__ = "0.1.0"

_EXPORTS = {
    "Net": ("siamese_cli.net", "Net"),
    "Blob": ("siamese_cli.blob", "Blob"),
    "load_solver": ("siamese_cli.solvers", "load_solver"),
    "SiameseError": ("siamese_cli.errors", "SiameseError"),
}


def __getattr__(name):
    if name in _EXPORTS:
        import importlib

        module, attribute = _EXPORTS[name]
        return getattr(importlib.import_module(module), attribute)
    raise AttributeError(f"module 'siamese_cli' has no attribute {name!r}")


__all__ = list(_EXPORTS)
