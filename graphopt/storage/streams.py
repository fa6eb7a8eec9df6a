"""Streams and how arrays become streams.

A file's payload ends with the streams, back to back; its structure lists each
stream as `[coding, bytes]` (coding 0: raw, 1: Huffman, see `huffman.py`) and
records name streams by their index in that list.

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
from graphopt.storage.bits import array_from_le_bytes, array_to_le_bytes, bit_length, pack_bits, unpack_bits
from graphopt.storage.jsonvalues import dtype_named

RAW, HUFFMAN = 0, 1


class StreamWriter:
    def __init__(self, entropy: bool = True):
        self.entropy = entropy
        self.table: list[list[int]] = []
        self.parts: list[bytes] = []

    def symbols(self, values: np.ndarray, bits: int) -> int:
        """Store `values` (each < 2**bits) as one stream; returns its index."""
        values = np.asarray(values).reshape(-1).astype(np.uint64)
        coding, data = RAW, pack_bits(values, bits)
        if self.entropy and 1 <= bits <= 8 and values.size:
            coded = huffman.encode(values.astype(np.int64), 1 << bits)
            if len(coded) < len(data):
                coding, data = HUFFMAN, coded
        self.table.append([coding, len(data)])
        self.parts.append(data)
        return len(self.table) - 1

    def blob(self) -> bytes:
        return b"".join(self.parts)


class StreamReader:
    def __init__(self, table: list, blob: bytes):
        self.table = table
        self.blob = blob
        self.offsets = [0]
        for entry in table:
            if not (isinstance(entry, list) and len(entry) == 2 and entry[0] in (RAW, HUFFMAN) and entry[1] >= 0):
                raise StorageError(f"malformed stream table entry {entry!r}")
            self.offsets.append(self.offsets[-1] + entry[1])
        if self.offsets[-1] != len(blob):
            raise StorageError(f"the streams take {len(blob)} bytes, the stream table says {self.offsets[-1]}")

    def symbols(self, index: int, count: int, bits: int) -> np.ndarray:
        if not isinstance(index, int) or not 0 <= index < len(self.table):
            raise StorageError(f"a record names stream {index!r}; the file has {len(self.table)}")
        data = self.blob[self.offsets[index] : self.offsets[index + 1]]
        if self.table[index][0] == HUFFMAN:
            if not 1 <= bits <= 8:
                raise StorageError(f"stream {index}: Huffman coding of {bits}-bit symbols")
            return huffman.decode(data, count, 1 << bits).astype(np.uint64)
        return unpack_bits(data, count, bits)

    def size(self, index: int) -> int:
        return self.table[index][1]


def put_values(w: StreamWriter, flat: np.ndarray) -> dict:
    """A 1-d array as streams; the spec (dict) says how to read it back, its length included."""
    flat = np.ascontiguousarray(flat).reshape(-1)
    spec: dict = {"dt": flat.dtype.name, "n": int(flat.size)}
    if flat.dtype.kind in "biu":
        lo = int(flat.min()) if flat.size else 0
        hi = int(flat.max()) if flat.size else 0
        bits = bit_length(hi - lo)
        spec.update(k="i", min=lo, b=bits)
        if bits:
            offset = flat.astype(np.uint64) - np.uint64(lo % (1 << 64))
            spec["s"] = w.symbols(offset, bits)
        return spec
    planes = array_to_le_bytes(flat)
    spec.update(k="p", s=[w.symbols(planes[:, k], 8) for k in range(planes.shape[1])])
    return spec


def get_values(r: StreamReader, spec: dict, where: str) -> np.ndarray:
    dtype = dtype_named(spec["dt"], where)
    count = int(spec["n"])
    if spec["k"] == "i":
        bits = int(spec["b"])
        if not 0 <= bits <= 64:
            raise StorageError(f"{where}: {bits}-bit integers")
        offset = r.symbols(spec["s"], count, bits) if bits else np.zeros(count, dtype=np.uint64)
        wrapped = offset + np.uint64(int(spec["min"]) % (1 << 64))
        return wrapped.astype(dtype) if dtype.kind != "b" else wrapped.astype(bool)
    if spec["k"] == "p":
        if len(spec["s"]) != dtype.itemsize:
            raise StorageError(f"{where}: {len(spec['s'])} byte planes for {dtype.itemsize}-byte {dtype.name}")
        planes = np.stack([r.symbols(s, count, 8).astype(np.uint8) for s in spec["s"]], axis=1)
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
        spec.update(ns=int(symbols.size), s=w.symbols(symbols, bits))
    return spec


def get_positions(r: StreamReader, spec: dict, size: int, where: str) -> np.ndarray:
    bits, count = int(spec["b"]), int(spec["n"])
    if not 1 <= bits <= 8:
        raise StorageError(f"{where}: {bits}-bit relative indices")
    positions = np.zeros(0, dtype=np.int64)
    if count:
        symbols = r.symbols(spec["s"], int(spec["ns"]), bits).astype(np.int64)
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
