"""dwn-train: Differentiable Weightless Neural Networks (LUT networks trained with the EFD).

The library API is a drop-in for torch-dwn's: ``import dwn_train as dwn`` and use
``dwn.DistributiveThermometer``, ``dwn.LUTLayer``, ``dwn.LearnableMapping``, ``dwn.GroupSum``.
"""

from .errors import DWNError
from .layers import GroupSum, LUTLayer, ReductionHead
from .lut import EFD_VARIANTS, LUTSpec
from .torch_lut import derivative_table, lut_addresses
from .mapping import LearnableMapping, arange_mapping, random_mapping
from .regularizers import regularization, spectral, spectral_printed
from .thermometer import DistributiveThermometer, GaussianThermometer, Thermometer

__version__ = "0.1.0"

__all__ = [
    "DWNError",
    "DistributiveThermometer",
    "EFD_VARIANTS",
    "GaussianThermometer",
    "GroupSum",
    "LUTLayer",
    "LUTSpec",
    "LearnableMapping",
    "ReductionHead",
    "Thermometer",
    "arange_mapping",
    "derivative_table",
    "lut_addresses",
    "random_mapping",
    "regularization",
    "spectral",
    "spectral_printed",
]
