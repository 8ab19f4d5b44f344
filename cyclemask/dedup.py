"""Exact and near-duplicate detection for images: sha256 of file bytes, and a 256-bit
difference hash compared by bit distance (also against the mirrored image).

Shared by data preparation (duplicates across training splits) and the human study (the same
photo among both the real and the generated faces). Needs only numpy and OpenCV.
"""

from __future__ import annotations

import hashlib

import numpy as np

HASH_SIDE = 16  # 16 x 16 difference hash = 256 bits


def dhash_bits(image: np.ndarray, side: int = HASH_SIDE) -> np.ndarray:
    """Difference hash: signs of horizontal gradients of a side x (side+1) grey thumbnail."""
    import cv2

    grey = cv2.cvtColor(image, cv2.COLOR_RGB2GRAY)
    thumb = cv2.resize(grey, (side + 1, side), interpolation=cv2.INTER_AREA).astype(np.int16)
    return (thumb[:, 1:] > thumb[:, :-1]).reshape(-1)


def bits_to_hex(bits: np.ndarray) -> str:
    return np.packbits(bits.astype(np.uint8)).tobytes().hex()


def hex_to_bytes(h: str) -> np.ndarray:
    return np.frombuffer(bytes.fromhex(h), dtype=np.uint8)


_POPCOUNT8 = np.array([bin(i).count("1") for i in range(256)], dtype=np.uint8)


def bit_distances(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Bit distances between every row of a [m, B] and of b [n, B] (uint8): [m, n]."""
    if hasattr(np, "bitwise_count") and a.shape[1] % 8 == 0:  # numpy >= 2: popcount on 64-bit words
        wa, wb = np.ascontiguousarray(a).view(np.uint64), np.ascontiguousarray(b).view(np.uint64)
        d = np.zeros((len(a), len(b)), np.int32)
        for k in range(wa.shape[1]):  # word by word: no [m, n, words] temporary
            d += np.bitwise_count(np.bitwise_xor(wa[:, k, None], wb[None, :, k]))
        return d
    return _POPCOUNT8[np.bitwise_xor(a[:, None, :], b[None, :, :])].sum(axis=2, dtype=np.int32)


def near_pairs(hashes: np.ndarray, mirrors: np.ndarray, threshold: int, chunk: int = 256) -> list[list[tuple[int, int]]]:
    """For each row i, the earlier rows j < i within `threshold` bits: of hashes[j] from
    hashes[i] or from mirrors[i]. Blocked all-pairs in numpy: ~1 minute for 70,000 hashes, where
    comparing one by one against a growing list would take many."""
    n = len(hashes)
    out: list[list[tuple[int, int]]] = [[] for _ in range(n)]
    for s0 in range(0, n, chunk):
        e0 = min(n, s0 + chunk)
        prev = hashes[:e0]
        d = np.minimum(bit_distances(hashes[s0:e0], prev), bit_distances(mirrors[s0:e0], prev))
        rows, cols = np.nonzero(d <= threshold)
        for r, j in zip(rows.tolist(), cols.tolist()):
            i = s0 + r
            if j < i:
                out[i].append((j, int(d[r, j])))
    return out


def cross_pairs(a: np.ndarray, a_mirrors: np.ndarray, b: np.ndarray, threshold: int,
                chunk: int = 256) -> list[tuple[int, int, int]]:
    """(i, j, bits) for every row a[i] within `threshold` bits of b[j], directly or mirrored."""
    out: list[tuple[int, int, int]] = []
    for s0 in range(0, len(a), chunk):
        e0 = min(len(a), s0 + chunk)
        d = np.minimum(bit_distances(a[s0:e0], b), bit_distances(a_mirrors[s0:e0], b))
        rows, cols = np.nonzero(d <= threshold)
        out.extend((s0 + r, j, int(d[r, j])) for r, j in zip(rows.tolist(), cols.tolist()))
    return out


def sha256_bytes(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()
