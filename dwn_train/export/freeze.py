"""Freeze a trained DWN into a discrete network: integer comparators, wiring, truth tables, popcounts.

Input contract. Every feature arrives as an integer code q of `bits` bits (two's complement when
`signed`) standing for the real value q / 2**frac_bits. Quantising a real x is the only place
where rounding happens: q = clamp(floor(x * 2**frac_bits), lo, hi) (the fixed-point value's
fraction bits beyond frac_bits dropped, as hardware truncates). Images stored as bytes use bits=8,
frac_bits=0, unsigned: q is the pixel itself and nothing is rounded.

Encoder. The thermometer bit i of feature f is q > T[f, i] with T = floor(t * 2**frac_bits):
for integer q, q / 2**frac_bits > t exactly when q > floor(t * 2**frac_bits), so the frozen
comparators agree bit for bit with the float encoder on the dequantised input. Bit index f*z + i.
On the real input they agree too, except for a value above a threshold by less than one code step
(floor keeps a value at or below a threshold at or below it: a threshold that is itself a data
value, as a distributive thermometer's are, codes exactly). So the format takes as many fraction
bits as it needs for every training value above a threshold to code above it, and no more
(`input_format`): the exported network is as accurate as the trained one.

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
    """Codes of `bits` bits (two's complement when signed); frac_bits: one count for every feature,
    or a tuple of one per feature (each feature's code stands for q / 2**frac_bits[f])."""
    bits: int
    frac_bits: int | tuple
    signed: bool

    def __post_init__(self):
        if not isinstance(self.frac_bits, (int, np.integer)):
            found = tuple(int(k) for k in self.frac_bits)
            self.frac_bits = found[0] if len(set(found)) == 1 else found  # one count for all when they agree
        else:
            self.frac_bits = int(self.frac_bits)

    @property
    def scale(self):
        """2**frac_bits: a number, or one per feature (an array along the last axis of the features)."""
        return 2.0 ** (np.asarray(self.frac_bits, dtype=np.float64) if isinstance(self.frac_bits, tuple)
                       else self.frac_bits)

    def scales(self, num_features: int) -> np.ndarray:
        return np.broadcast_to(self.scale, (num_features,)).astype(np.float64)

    def describe(self) -> str:
        """'16-bit signed, 11 fraction bits' (or '..., 3..18 fraction bits by feature')."""
        frac = self.frac_bits
        counts = f"{frac}" if isinstance(frac, int) else f"{min(frac)}..{max(frac)}"
        return (f"{self.bits}-bit {'signed' if self.signed else 'unsigned'}, {counts} fraction bits"
                + ("" if isinstance(frac, int) else " by feature"))

    @property
    def lo(self) -> int:
        return -(1 << (self.bits - 1)) if self.signed else 0

    @property
    def hi(self) -> int:
        return (1 << (self.bits - 1)) - 1 if self.signed else (1 << self.bits) - 1

    def quantise(self, x) -> np.ndarray:
        """Real features -> integer codes (int64), rounding down, saturating: +-inf become the
        extreme codes; NaN has no code and is refused (an engine only ever sees codes)."""
        x = np.asarray(x, dtype=np.float64)
        if np.isnan(x).any():
            where = tuple(int(i) for i in np.argwhere(np.isnan(x))[0])
            raise DWNError(f"input {where} is NaN, which has no integer code; clean or impute the data first "
                           "(+-inf are allowed: they saturate).")
        scaled = np.floor(x * self.scale)
        return np.clip(scaled, self.lo, self.hi).astype(np.int64)

    def dequantise(self, q) -> np.ndarray:
        return np.asarray(q, dtype=np.float64) / self.scale

    @classmethod
    def infer(cls, x, bits: int | None = None, frac_bits: int | None = None, thresholds=None) -> "InputFormat":
        """uint8 when the data are whole numbers in 0..255; else a signed Q format: integer bits
        from the data's range (sign included), and frac_bits, else with `bits` as many fraction
        bits as the range leaves, else, given the encoder's float `thresholds` ((F, z), or (1, z)
        shared by every feature), one width for all and fraction bits by feature, as few as keep
        every value of `x` above a threshold coded above it (`_separating`; 32 bits at most), else
        16 bits in all."""
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
        if bits is None and frac_bits is None and thresholds is not None:
            return cls._separating(x, thresholds)
        int_bits = _int_bits(low, high)
        bits = 16 if bits is None else bits
        if not 2 <= bits <= MAX_BITS:
            raise DWNError(f"input_bits must be between 2 and {MAX_BITS}; got {bits}.")
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


    @classmethod
    def _separating(cls, x, thresholds) -> "InputFormat":
        """One code width for all, as narrow as lets every feature keep its training values on
        their side of each threshold (separating_frac_bits, one feature at a time, with its own
        integer bits), at most MAX_BITS; then each feature takes every fraction bit its range leaves
        in that width (the same width: the rest is free precision for values never seen)."""
        x = np.asarray(x, dtype=np.float64).reshape(len(x), -1)
        t = _per_feature(thresholds, x.shape[1])
        ints = []
        for f in range(x.shape[1]):
            finite = x[:, f][np.isfinite(x[:, f])]
            ints.append(_int_bits(float(finite.min()), float(finite.max())) if finite.size else 2)
        need = [ints[f] + separating_frac_bits(x[:, f:f + 1], t[f:f + 1], MAX_BITS - ints[f])
                for f in range(x.shape[1])]
        bits = max(2, min(MAX_BITS, max(need)))
        return cls(bits, tuple(max(0, bits - i) for i in ints), True)


def _int_bits(low: float, high: float) -> int:
    """The integer bits of a signed code that holds every value in low..high, the sign included."""
    return max(1, math.ceil(math.log2(max(abs(low), abs(high)) + 1.0))) + 1


MAX_BITS = 32  # the widest input code (the engines hold codes in int32)


def _per_feature(thresholds, num_features: int) -> np.ndarray:
    """Thresholds as (F, z) float64: one row per feature ((1, z) or (z,): shared by all)."""
    t = np.asarray(thresholds, dtype=np.float64)
    return np.broadcast_to(t.reshape(-1, t.shape[-1]), (num_features, t.shape[-1]))


def separating_frac_bits(x, thresholds, limit: int) -> int:
    """The fewest fraction bits k (0..limit) with which every value of `x` (S, F) above a threshold
    of its feature ((F, z), or (1, z) for all) still codes above it: floor(u * 2**k) >
    floor(t * 2**k) for u the smallest value above t; `limit` where none is enough."""
    x = np.asarray(x, dtype=np.float64).reshape(len(x), -1)
    t = _per_feature(thresholds, x.shape[1])
    above = np.full(t.shape, np.nan)
    for f in range(x.shape[1]):
        values = np.unique(x[:, f][np.isfinite(x[:, f])])
        index = np.searchsorted(values, t[f], side="right")  # the first value above each threshold
        found = index < len(values)
        above[f, found] = values[index[found]]
    kept = np.isfinite(above) & np.isfinite(t)
    u, t = above[kept], t[kept]
    for k in range(max(0, limit) + 1):
        if np.all(np.floor(u * 2.0**k) > np.floor(t * 2.0**k)):
            return k
    return max(0, limit)


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
            "input": {"bits": self.input.bits, "signed": self.input.signed,
                      "frac_bits": list(self.input.frac_bits) if isinstance(self.input.frac_bits, tuple)
                      else self.input.frac_bits},
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


def float_thresholds(model, encoder) -> np.ndarray:
    """The thermometer's thresholds, (F, z) float64: one row per input feature of `model`."""
    t = encoder.thresholds.detach().cpu().to(torch.float64).numpy()
    if encoder.feature_wise:
        return t.reshape(int(np.prod(encoder.feature_shape)), -1)
    return _per_feature(t, list(model)[0].input_size // encoder.num_bits)


def input_format(model, encoder, x_train, bits: int | None = None, frac_bits: int | None = None) -> InputFormat:
    """The input format of the model's frozen network (every command that freezes one uses it):
    InputFormat.infer on the training split it was trained on, with the encoder's thresholds, so
    by default as many fraction bits as keep every training value on its side of each threshold."""
    return InputFormat.infer(x_train, bits, frac_bits, float_thresholds(model, encoder))


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
    t = float_thresholds(model, encoder)
    num_features = len(t)
    scaled = np.floor(t * input_format.scales(num_features)[:, None])
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


def accuracy_gap(float_accuracy: float, frozen_accuracy: float, split: str = "test") -> str | None:
    """The warning every command that scores a frozen network gives (dwn-export, dwn-eval
    engine=packed) when it scores more than a tenth of a point below the float model; None when not."""
    if float_accuracy - frozen_accuracy <= 0.001 + 1e-12:
        return None
    return (f"the frozen network scores {100 * frozen_accuracy:.2f} % on the {split} split against the float model's "
            f"{100 * float_accuracy:.2f} %: its inputs lose precision; leave input_bits and frac_bits unset (they "
            "then take the fraction bits that keep every training value on its side of each threshold), or raise them.")


def float_predictions(model, encoder, net: FrozenNetwork, q: np.ndarray) -> np.ndarray:
    """The float model's classes on the dequantised inputs (what the frozen network must match)."""
    x = torch.from_numpy(net.input.dequantise(q))
    with torch.no_grad():
        return model(encoder.binarize(x).flatten(1).float()).argmax(-1).numpy()
