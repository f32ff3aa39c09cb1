"""Freeze a trained DWN into a discrete network: integer comparators, wiring, truth tables, popcounts.

Input contract. Every feature arrives as an integer code q of `bits` bits (two's complement when
`signed`) standing for the real value q / 2**frac_bits. Quantising a real x is the only place
where rounding happens: q = clamp(round_half_to_even(x * 2**frac_bits), lo, hi). Images stored as
bytes use bits=8, frac_bits=0, unsigned: q is the pixel itself and nothing is rounded.

Encoder. The thermometer bit i of feature f is q > T[f, i] with T = floor(t * 2**frac_bits):
for integer q, q / 2**frac_bits > t exactly when q > floor(t * 2**frac_bits), so the frozen
comparators agree bit for bit with the float encoder on the dequantised input. Bit index f*z + i.

LUTs. Layer k's LUT j reads bits wiring[j, l] of the previous layer (bit l of the address, least
significant first, as in dwn_train/lut.py) and outputs tables[j, address] (the sign bit of the
trained entry: 1 where the entry is > 0).

Head. Class c's score is the popcount of its group of last-layer bits (group size
ceil(W / classes), the last group possibly shorter); the prediction is the class with the highest
score, the lowest class index on ties. A reduction head freezes into its LUT pyramid with one
output bit per class (for two classes, a last LUT-1 layer turns the single bit b into (1 - b, b)).
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field

import numpy as np
import torch

from ..errors import DWNError
from ..layers import GroupSum, LUTLayer, ReductionHead

FORMAT = "dwn-frozen"


@dataclass
class InputFormat:
    bits: int
    frac_bits: int
    signed: bool

    @property
    def lo(self) -> int:
        return -(1 << (self.bits - 1)) if self.signed else 0

    @property
    def hi(self) -> int:
        return (1 << (self.bits - 1)) - 1 if self.signed else (1 << self.bits) - 1

    def quantise(self, x) -> np.ndarray:
        """Real features -> integer codes (int64), rounding half to even, saturating: +-inf become
        the extreme codes; NaN has no code and is refused (an engine only ever sees codes)."""
        x = np.asarray(x, dtype=np.float64)
        if np.isnan(x).any():
            where = tuple(int(i) for i in np.argwhere(np.isnan(x))[0])
            raise DWNError(f"input {where} is NaN, which has no integer code; clean or impute the data first "
                           "(+-inf are allowed: they saturate).")
        scaled = np.rint(x * 2.0**self.frac_bits)
        return np.clip(scaled, self.lo, self.hi).astype(np.int64)

    def dequantise(self, q) -> np.ndarray:
        return np.asarray(q, dtype=np.float64) / 2.0**self.frac_bits

    @classmethod
    def infer(cls, x, bits: int | None = None, frac_bits: int | None = None) -> "InputFormat":
        """uint8 when the data are whole numbers in 0..255; else a signed Q format of `bits`
        (default 16) bits with as many fraction bits as the data's range leaves (or frac_bits)."""
        x = np.asarray(x)
        if not np.issubdtype(x.dtype, np.floating):
            x = x.astype(np.float64)
        # in the data's own float type (no float64 copy of a whole image set): whole numbers up to 255
        # are exact in every float type
        low, high = float(x.min()), float(x.max())
        if not (math.isfinite(low) and math.isfinite(high)):  # +-inf saturate, NaN is refused later: size
            finite = x[np.isfinite(x)]                         # the format on the finite values
            if finite.size == 0:
                raise DWNError("The features have no finite value to size the input format from.")
            low, high = float(finite.min()), float(finite.max())
        if bits is None and frac_bits is None and low >= 0 and high <= 255 and np.array_equal(x, np.round(x)):
            return cls(8, 0, False)
        bits = 16 if bits is None else bits
        if not 2 <= bits <= 32:
            raise DWNError(f"input_bits must be between 2 and 32; got {bits}.")
        int_bits = max(1, math.ceil(math.log2(max(abs(low), abs(high)) + 1.0))) + 1  # with the sign bit
        if frac_bits is None:
            if int_bits > bits:
                raise DWNError(f"The features need {int_bits} integer bits (sign included); {bits} input bits "
                               "cannot hold them: raise input_bits.")
            frac_bits = bits - int_bits
        if frac_bits < 0:
            raise DWNError(f"frac_bits must be >= 0 (fraction bits of the fixed-point inputs); got {frac_bits}.")
        if int_bits + frac_bits > bits:
            raise DWNError(f"The features need {int_bits} integer bits (sign included); {bits} input bits with "
                           f"{frac_bits} fraction bits cannot hold them: raise input_bits or lower frac_bits.")
        return cls(bits, frac_bits, True)


@dataclass
class FrozenLayer:
    wiring: np.ndarray  # (N, n) int64: indices into the previous layer's bits
    tables: np.ndarray  # (N, 2**n) uint8 in {0, 1}

    @property
    def n(self) -> int:
        return self.wiring.shape[1]


@dataclass
class FrozenNetwork:
    input: InputFormat
    num_features: int
    thresholds: np.ndarray  # (F, z) int64
    layers: list = field(default_factory=list)
    num_classes: int = 2

    @property
    def num_bits(self) -> int:
        return self.thresholds.shape[1]

    @property
    def group(self) -> int:
        return -(-self.layers[-1].tables.shape[0] // self.num_classes)

    def encode(self, q) -> np.ndarray:
        """Integer codes (S, F) -> thermometer bits (S, F * z) uint8."""
        q = np.asarray(q, dtype=np.int64).reshape(len(q), -1)
        if q.shape[1] != self.num_features:
            raise DWNError(f"The frozen network expects {self.num_features} features per sample; got {q.shape[1]}.")
        return (q[:, :, None] > self.thresholds[None]).reshape(len(q), -1).astype(np.uint8)

    def scores(self, q) -> np.ndarray:
        """Popcount per class, (S, C) int64: the reference (one sample per row) evaluation."""
        bits = self.encode(q)
        for layer in self.layers:
            weights = 1 << np.arange(layer.n)
            address = (bits[:, layer.wiring] * weights).sum(-1)  # (S, N)
            bits = layer.tables[np.arange(len(layer.tables)), address]
        return group_popcounts(bits, self.num_classes)

    def predict(self, q) -> np.ndarray:
        return self.scores(q).argmax(axis=1)  # numpy's argmax takes the first maximum

    def to_json(self) -> str:
        return json.dumps({
            "format": FORMAT, "version": 1,
            "input": {"bits": self.input.bits, "frac_bits": self.input.frac_bits, "signed": self.input.signed},
            "num_features": self.num_features, "num_classes": self.num_classes,
            "thresholds": self.thresholds.tolist(),
            "layers": [{"n": layer.n, "wiring": layer.wiring.tolist(),
                        "tables": ["".join(map(str, row[::-1])) for row in layer.tables]}  # MSB first
                       for layer in self.layers],
        })

    @classmethod
    def from_json(cls, text: str) -> "FrozenNetwork":
        data = json.loads(text)
        if data.get("format") != FORMAT:
            raise DWNError("This JSON is not a frozen dwn-train network.")
        layers = [FrozenLayer(np.asarray(l["wiring"], dtype=np.int64),
                              np.asarray([[int(c) for c in row[::-1]] for row in l["tables"]], dtype=np.uint8))
                  for l in data["layers"]]
        return cls(InputFormat(**data["input"]), data["num_features"], np.asarray(data["thresholds"], dtype=np.int64),
                   layers, data["num_classes"])


def group_popcounts(bits: np.ndarray, num_classes: int) -> np.ndarray:
    """(S, W) bits -> (S, C) sums of consecutive groups of ceil(W / C) (the last may be shorter)."""
    width = bits.shape[1]
    group = -(-width // num_classes)
    padded = np.zeros((bits.shape[0], group * num_classes), dtype=np.int64)
    padded[:, :width] = bits
    return padded.reshape(len(bits), num_classes, group).sum(-1)


def freeze(model, encoder, input_format: InputFormat) -> FrozenNetwork:
    """The discrete network of a trained nn.Sequential(LUTLayer..., GroupSum) and its thermometer."""
    modules = list(model)
    head = modules[-1] if modules else None
    if isinstance(head, ReductionHead):  # its pyramid levels are LUT layers too
        modules = modules[:-1] + list(head.levels) + [head]
    if not isinstance(head, (GroupSum, ReductionHead)) or not all(isinstance(m, LUTLayer) for m in modules[:-1]):
        raise DWNError("Only models of LUT layers followed by a GroupSum or reduction head can be frozen.")
    if not all(m.ste for m in modules[:-1]):
        raise DWNError("Only layers with ste=True (binary outputs) can be frozen.")
    t = encoder.thresholds.detach().cpu().to(torch.float64).numpy()
    num_features = int(np.prod(encoder.feature_shape)) if encoder.feature_wise else None
    if encoder.feature_wise:
        t = t.reshape(num_features, -1)
    else:
        num_features = modules[0].input_size // encoder.num_bits
        t = np.broadcast_to(t, (num_features, t.shape[-1]))
    scaled = np.floor(t * 2.0**input_format.frac_bits)
    # thresholds outside the code range: below lo every code is above it, at or above hi none is
    thresholds = np.clip(scaled, input_format.lo - 1, input_format.hi).astype(np.int64)
    layers = [FrozenLayer(m.wiring().detach().cpu().numpy().astype(np.int64),
                          (m.luts.detach().cpu() > 0).numpy().astype(np.uint8)) for m in modules[:-1]]
    if isinstance(head, GroupSum):
        return FrozenNetwork(input_format, num_features, thresholds, layers, head.k)
    # reduction: one bit per class (score 0 or 1, so the lowest index wins ties as the float argmax
    # of (2b - 1) / tau does); a binary task's single bit b becomes the scores (1 - b, b)
    if head.num_classes == 2:
        layers.append(FrozenLayer(np.zeros((2, 1), dtype=np.int64), np.array([[1, 0], [0, 1]], dtype=np.uint8)))
    return FrozenNetwork(input_format, num_features, thresholds, layers, head.num_classes)


def classes_markdown(num_classes: int, class_names=None) -> str:
    """A README section: each class index and the label it stands for in the training data."""
    names = list(class_names) if class_names else [str(c) for c in range(num_classes)]
    rows = "\n".join(f"| {c} | {name} |" for c, name in enumerate(names))
    return f"## Classes\n\n| class_id | label in the training data |\n|---|---|\n{rows}\n"


def float_predictions(model, encoder, net: FrozenNetwork, q: np.ndarray) -> np.ndarray:
    """The float model's classes on the dequantised inputs (what the frozen network must match)."""
    x = torch.from_numpy(net.input.dequantise(q))
    with torch.no_grad():
        return model(encoder.binarize(x).flatten(1).float()).argmax(-1).numpy()
