"""Bit-packed inference of a FrozenNetwork: 64 samples per machine word, numpy bitwise operations.

Bit s of word b of a signal is that signal's value for sample 64*b + s. A LUT is evaluated as its
multiplexer tree: start from its truth table (each entry all-ones or all-zeros), then for address
bit l = 0..n-1 pick, per sample, entry 2k + 1 of each pair if the bit is set, else entry 2k. After n levels one
word holds the LUT's output for 64 samples. No per-sample Python loop anywhere.

This is the reference engine and the fallback: compiled.py runs the same trees as native code,
512 samples at a time, and answers with this module when no C compiler is found.
"""

from __future__ import annotations

import numpy as np

from .freeze import FrozenNetwork, group_popcounts

ALL_ONES = np.uint64(0xFFFFFFFFFFFFFFFF)


def pack(bits: np.ndarray) -> np.ndarray:
    """(S, W) {0,1} -> (W, ceil(S / 64)) uint64 words, sample s at bit s % 64 of word s // 64."""
    samples, width = bits.shape
    blocks = -(-samples // 64)
    padded = np.zeros((width, blocks * 64), dtype=np.uint8)
    padded[:, :samples] = bits.T
    return np.packbits(padded, axis=1, bitorder="little").view("<u8").reshape(width, blocks)


def unpack(words: np.ndarray, samples: int) -> np.ndarray:
    """Inverse of pack: (W, blocks) uint64 -> (samples, W) uint8."""
    as_bytes = np.ascontiguousarray(words).astype("<u8").view(np.uint8)
    return np.unpackbits(as_bytes, axis=1, bitorder="little")[:, :samples].T


def lut_layer_packed(words: np.ndarray, wiring: np.ndarray, tables: np.ndarray) -> np.ndarray:
    """One LUT layer on packed inputs (I, blocks) -> packed outputs (N, blocks)."""
    inputs = words[wiring]  # (N, n, blocks)
    values = np.where(tables.astype(bool), ALL_ONES, np.uint64(0))[:, :, None]  # (N, 2^n, 1)
    for l in range(wiring.shape[1]):
        # mux(bit, v0, v1) = v0 ^ ((v0 ^ v1) & bit): one temporary, updated in place
        low = values[:, 0::2]
        picked = (low ^ values[:, 1::2]) & inputs[:, l, None, :]
        picked ^= low
        values = picked
    return values[:, 0]


def predict_packed(net: FrozenNetwork, q, chunk: int = 4096) -> tuple[np.ndarray, np.ndarray]:
    """(classes (S,), scores (S, C)) of integer inputs q (S, F) (numpy or torch), 64 samples per word."""
    q = np.asarray(q.detach().cpu() if hasattr(q, "detach") else q)
    classes, scores = [], []
    for start in range(0, len(q), chunk):
        part = q[start:start + chunk]
        words = pack(net.encode(part))
        for layer in net.layers:
            words = lut_layer_packed(words, layer.wiring, layer.tables)
        part_scores = group_popcounts(unpack(words, len(part)), net.num_classes)
        scores.append(part_scores)
        classes.append(part_scores.argmax(axis=1))
    return np.concatenate(classes), np.concatenate(scores)
