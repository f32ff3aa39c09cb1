"""dwn-train: Differentiable Weightless Neural Networks (LUT networks trained with the EFD).

The library API is a drop-in for torch-dwn's: ``import dwn_train as dwn`` and use
``dwn.DistributiveThermometer``, ``dwn.LUTLayer``, ``dwn.LearnableMapping``, ``dwn.GroupSum``.

The names below are imported on first use (PEP 562), so that the console scripts can parse
their command line (and answer --help) without importing torch.
"""

from importlib import import_module

from .errors import DWNError

__version__ = "0.1.0"

# public name -> the module that defines it
_PUBLIC = {
    "DistributiveThermometer": "thermometer",
    "EFD_VARIANTS": "lut",
    "GaussianThermometer": "thermometer",
    "GroupSum": "layers",
    "LUTLayer": "layers",
    "LUTSpec": "lut",
    "LearnableMapping": "mapping",
    "ReductionHead": "layers",
    "Thermometer": "thermometer",
    "arange_mapping": "mapping",
    "derivative_table": "torch_lut",
    "lut_addresses": "torch_lut",
    "random_mapping": "mapping",
    "regularization": "regularizers",
    "spectral": "regularizers",
    "spectral_printed": "regularizers",
}

__all__ = ["DWNError", *_PUBLIC]


def __getattr__(name: str):
    if name in _PUBLIC:
        value = getattr(import_module(f".{_PUBLIC[name]}", __name__), name)
        globals()[name] = value  # later lookups skip this function
        return value
    raise AttributeError(f"module 'dwn_train' has no attribute {name!r}")


def __dir__():
    return sorted(set(globals()) | set(_PUBLIC))
