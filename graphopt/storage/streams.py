"""Streams and how arrays become streams.

A file's payload ends with the streams, back to back, in the order of the
records that own them; each stream starts with a varint: 0 for raw, else 1 + its
byte length Huffman-coded (`huffman.py`). A raw stream's length follows from the
count and width its record gives.

Every stream holds symbols of a known bit width `b`. Raw is the symbols packed at
`b` bits; for b <= 8 the writer also Huffman-codes them and keeps the smaller.

Arrays (values of a parameter, fields of an encoding) are coded by kind:
- integers and bools ("i"): `v - min` at b = bit_length(max - min) bits (no
  stream at all when every element is equal);
- anything else ("p", floats): byte planes; element byte k of every element forms
  stream k (8-bit symbols), so a float's sign/exponent byte is Huffman-coded apart
  from its noisy mantissa bytes.

Positions (which entries a mask keeps) are coded as relative indices in the way of
Deep Compression: the gap before each position in b-bit symbols, where the top
symbol 2^b - 1 is a skip of 2^b - 1 positions that places nothing (Deep
Compression's padding zero, without spending a value). The positions of the
rarer class are coded (kept or pruned, "inv"), and b (1..8) is the width whose
coded size is smallest.
"""

from __future__ import annotations

import numpy as np

from graphopt.errors import StorageError
from graphopt.storage import huffman
from graphopt.storage.bits import (
    array_from_le_bytes,
    array_to_le_bytes,
    bit_length,
    pack_bits,
    read_varint,
    unpack_bits,
    write_varint,
)


class StreamWriter:
    """Appends streams to the payload, each behind a varint: 0 for raw, else 1 + its Huffman-coded length."""

    def __init__(self, entropy: bool = True):
        self.entropy = entropy
        self.out = bytearray()

    def symbols(self, values: np.ndarray, bits: int) -> None:
        """Store `values` (each < 2**bits) as the next stream."""
        values = np.asarray(values).reshape(-1).astype(np.uint64)
        data = pack_bits(values, bits)
        if self.entropy and 1 <= bits <= 8 and values.size:
            coded = huffman.encode(values.astype(np.int64), 1 << bits)
            if len(coded) < len(data):
                write_varint(1 + len(coded), self.out)
                self.out += coded
                return
        write_varint(0, self.out)
        self.out += data

    @property
    def position(self) -> int:
        return len(self.out)


class StreamReader:
    """Reads the streams back in the order they were written (the records say their counts and widths)."""

    def __init__(self, blob: bytes):
        self.blob = blob
        self.position = 0

    def symbols(self, count: int, bits: int) -> np.ndarray:
        head, pos = read_varint(self.blob, self.position)
        size = -(-count * bits // 8) if head == 0 else head - 1
        if pos + size > len(self.blob):
            raise StorageError(f"a stream of {size} bytes runs past the end of the payload")
        data = self.blob[pos : pos + size]
        self.position = pos + size
        if head:
            if not 1 <= bits <= 8:
                raise StorageError(f"a Huffman-coded stream of {bits}-bit symbols")
            return huffman.decode(data, count, 1 << bits).astype(np.uint64)
        return unpack_bits(data, count, bits)

    def finish(self) -> None:
        if self.position != len(self.blob):
            raise StorageError(f"{len(self.blob) - self.position} bytes of streams follow the last record")


SUB_BYTE_INTEGERS = {"int4": np.int8, "uint4": np.uint8}


def put_values(w: StreamWriter, flat: np.ndarray) -> dict:
    """A 1-d array as streams; the spec says how to read them back given the count and dtype."""
    flat = np.ascontiguousarray(flat).reshape(-1)
    if flat.dtype.name in SUB_BYTE_INTEGERS:  # ml_dtypes' int4/uint4 (numpy kind "V"): coded as the integers they are
        flat = flat.astype(SUB_BYTE_INTEGERS[flat.dtype.name])
    spec: dict = {}
    if flat.dtype.kind in "biu":
        lo = int(flat.min()) if flat.size else 0
        hi = int(flat.max()) if flat.size else 0
        bits = bit_length(hi - lo)
        spec.update(k="i", min=lo, b=bits)
        if bits:
            offset = flat.astype(np.uint64) - np.uint64(lo % (1 << 64))
            w.symbols(offset, bits)
        return spec
    planes = array_to_le_bytes(flat)
    for k in range(planes.shape[1]):
        w.symbols(planes[:, k], 8)
    spec["k"] = "p"
    return spec


def get_values(r: StreamReader, spec: dict, count: int, dtype: np.dtype, where: str) -> np.ndarray:
    if spec["k"] == "i":
        bits = int(spec["b"])
        if not 0 <= bits <= 64:
            raise StorageError(f"{where}: {bits}-bit integers")
        offset = r.symbols(count, bits) if bits else np.zeros(count, dtype=np.uint64)
        wrapped = offset + np.uint64(int(spec["min"]) % (1 << 64))
        if dtype.name in SUB_BYTE_INTEGERS:
            return wrapped.astype(np.int64).astype(dtype)
        return wrapped.astype(dtype) if dtype.kind != "b" else wrapped.astype(bool)
    if spec["k"] == "p":
        planes = np.stack([r.symbols(count, 8).astype(np.uint8) for _ in range(dtype.itemsize)], axis=1)
        return array_from_le_bytes(planes, dtype, (count,))
    raise StorageError(f"{where}: unknown value coding {spec['k']!r}")


def put_positions(w: StreamWriter, keep: np.ndarray) -> dict:
    """Which entries of the flat bool array `keep` are True, as relative indices."""
    keep = np.asarray(keep, dtype=bool).reshape(-1)
    inverted = np.count_nonzero(keep) * 2 > keep.size
    positions = np.flatnonzero(~keep if inverted else keep)
    gaps = np.diff(positions, prepend=-1) - 1
    bits = min(range(1, 9), key=lambda b: _gap_size(gaps, b, w.entropy))
    spec = {"inv": int(inverted), "n": int(positions.size), "b": bits}
    if positions.size:
        symbols = _gap_symbols(gaps, bits)
        spec["ns"] = int(symbols.size)
        w.symbols(symbols, bits)
    return spec


def get_positions(r: StreamReader, spec: dict, size: int, where: str) -> np.ndarray:
    bits, count = int(spec["b"]), int(spec["n"])
    if not 1 <= bits <= 8:
        raise StorageError(f"{where}: {bits}-bit relative indices")
    positions = np.zeros(0, dtype=np.int64)
    if count:
        symbols = r.symbols(int(spec["ns"]), bits).astype(np.int64)
        skip = (1 << bits) - 1
        advance = np.where(symbols == skip, skip, symbols + 1)
        positions = (np.cumsum(advance) - 1)[symbols != skip]
    if positions.size != count or (count and positions[-1] >= size):
        raise StorageError(f"{where}: the relative indices give {positions.size} positions within {size}, not {count}")
    keep = np.zeros(size, dtype=bool)
    keep[positions] = True
    return ~keep if spec["inv"] else keep


def _gap_symbols(gaps: np.ndarray, bits: int) -> np.ndarray:
    skip = (1 << bits) - 1
    skips, rest = np.divmod(gaps, skip)
    symbols = np.full(int(skips.sum()) + gaps.size, skip, dtype=np.int64)
    symbols[np.cumsum(skips + 1) - 1] = rest
    return symbols


def _gap_size(gaps: np.ndarray, bits: int, entropy: bool) -> int:
    """Bytes the gaps take as `bits`-bit symbols, raw or (estimated) Huffman-coded."""
    skip = (1 << bits) - 1
    skips, rest = np.divmod(gaps, skip)
    counts = np.bincount(rest, minlength=skip + 1)
    counts[skip] += int(skips.sum())
    raw = -(-int(counts.sum()) * bits // 8)
    return min(raw, huffman.estimated_size(counts)) if entropy else raw
