"""Canonical Huffman coding of symbol streams (alphabets of up to 256 symbols).

A coded stream is: a code-length table, then the bits. The count of symbols is
known to the reader (the record that owns the stream says it), so it is not stored.

Table (first byte = mode):
  0  one symbol only: 1 byte, the symbol; no bits follow (a constant stream costs 2 bytes);
  1  every symbol of the alphabet: its code length (0 = unused, 1..15) as a nibble, high nibble first;
  2  used symbols only: count-1 (1 byte), the symbols (1 byte each), their lengths as nibbles.
The writer picks the smaller of 1 and 2. Codes are canonical (sorted by length,
then symbol; DEFLATE's assignment) and at most 15 bits long: when a Huffman tree
is deeper, counts are halved until it is not.

Bits are MSB first. Streams of more than 4096 symbols are cut into chunks of
max(4096, isqrt(n)) symbols, each starting on a byte boundary, with the byte
length of every chunk but the last as varints after the table: the reader
decodes all chunks in lockstep with numpy, so decoding costs about sqrt(n) numpy
steps instead of n Python steps.
"""

from __future__ import annotations

import heapq
import math

import numpy as np

from graphopt.errors import StorageError
from graphopt.storage.bits import read_varint, write_varint

MAX_CODE_LENGTH = 15
_MIN_CHUNK = 4096


def chunk_size(count: int) -> int:
    return max(_MIN_CHUNK, math.isqrt(count))


def code_lengths(counts: np.ndarray) -> np.ndarray:
    """Huffman code lengths (0 for unused symbols), none above MAX_CODE_LENGTH."""
    counts = np.asarray(counts, dtype=np.int64)
    used = np.flatnonzero(counts)
    lengths = np.zeros(counts.size, dtype=np.int64)
    if used.size <= 1:
        lengths[used] = 1
        return lengths
    weights = counts[used].copy()
    while True:
        depth = _tree_depths(weights)
        if depth.max() <= MAX_CODE_LENGTH:
            lengths[used] = depth
            return lengths
        weights = (weights + 1) // 2  # flatter counts give a shallower tree


def _tree_depths(weights: np.ndarray) -> np.ndarray:
    depth = np.zeros(weights.size, dtype=np.int64)
    heap = [(int(w), i, [i]) for i, w in enumerate(weights)]
    heapq.heapify(heap)
    tiebreak = weights.size
    while len(heap) > 1:
        w1, _, s1 = heapq.heappop(heap)
        w2, _, s2 = heapq.heappop(heap)
        depth[s1] += 1
        depth[s2] += 1
        heapq.heappush(heap, (w1 + w2, tiebreak, s1 + s2))
        tiebreak += 1
    return depth


def canonical_codes(lengths: np.ndarray) -> np.ndarray:
    """The canonical code of every symbol with a non-zero length."""
    codes = np.zeros(lengths.size, dtype=np.int64)
    code, previous = 0, 0
    for symbol in sorted(np.flatnonzero(lengths), key=lambda s: (lengths[s], s)):
        code <<= int(lengths[symbol]) - previous
        previous = int(lengths[symbol])
        codes[symbol] = code
        code += 1
    return codes


def estimated_size(counts: np.ndarray) -> int:
    """Bytes a Huffman coding of a stream with these symbol counts takes (table included, chunk padding not)."""
    lengths = code_lengths(counts)
    if np.count_nonzero(counts) <= 1:
        return 2
    return len(_table(lengths)) + -(-int((counts * lengths).sum()) // 8)


def encode(symbols: np.ndarray, alphabet: int) -> bytes:
    """Huffman-code `symbols` (integers in [0, alphabet), alphabet <= 256)."""
    symbols = np.asarray(symbols, dtype=np.int64).reshape(-1)
    if not 1 <= alphabet <= 256 or (symbols.size and (symbols.min() < 0 or symbols.max() >= alphabet)):
        raise ValueError(f"Huffman symbols must lie in [0, {alphabet}) with an alphabet of at most 256")
    counts = np.bincount(symbols, minlength=alphabet)
    if np.count_nonzero(counts) <= 1:
        return bytes([0, int(symbols[0]) if symbols.size else 0])
    lengths = code_lengths(counts)
    codes = canonical_codes(lengths)
    out = bytearray(_table(lengths))
    size = chunk_size(symbols.size)
    chunks = [_pack(codes[part], lengths[part]) for part in np.split(symbols, range(size, symbols.size, size))]
    for chunk in chunks[:-1]:
        write_varint(len(chunk), out)
    for chunk in chunks:
        out += chunk
    return bytes(out)


def _pack(codes: np.ndarray, lengths: np.ndarray) -> bytes:
    total = int(lengths.sum())
    starts = np.cumsum(lengths) - lengths
    offset = np.arange(total, dtype=np.int64) - np.repeat(starts, lengths)
    bits = (np.repeat(codes, lengths) >> (np.repeat(lengths, lengths) - 1 - offset)) & 1
    return np.packbits(bits.astype(np.uint8)).tobytes()


def _table(lengths: np.ndarray) -> bytes:
    used = np.flatnonzero(lengths)
    full = bytes([1]) + _nibbles(lengths)
    sparse = bytes([2, used.size - 1]) + bytes(used.tolist()) + _nibbles(lengths[used])
    return full if len(full) <= len(sparse) else sparse


def _nibbles(values: np.ndarray) -> bytes:
    values = np.asarray(values, dtype=np.uint8)
    if values.size % 2:
        values = np.append(values, 0)
    return ((values[0::2] << 4) | values[1::2]).astype(np.uint8).tobytes()


def _read_nibbles(buf: bytes, pos: int, count: int) -> tuple[np.ndarray, int]:
    size = -(-count // 2)
    if pos + size > len(buf):
        raise StorageError("a Huffman table runs past the end of its stream (the file is corrupt)")
    raw = np.frombuffer(buf, dtype=np.uint8, count=size, offset=pos)
    return np.stack([raw >> 4, raw & 15], axis=1).reshape(-1)[:count].astype(np.int64), pos + size


def decode(blob: bytes, count: int, alphabet: int) -> np.ndarray:
    """The `count` symbols (uint8) that `encode` coded into `blob`."""
    blob = bytes(blob)
    if count == 0:
        return np.zeros(0, dtype=np.uint8)
    if not blob:
        raise StorageError("an empty Huffman stream should hold symbols (the file is corrupt)")
    lengths, pos = _parse_table(blob, alphabet)
    if lengths is None:  # one symbol only
        return np.full(count, blob[1], dtype=np.uint8)
    if _kraft(lengths) != 1:
        raise StorageError("a Huffman table is not a complete prefix code (the file is corrupt)")
    size = chunk_size(count)
    nchunks = -(-count // size)
    sizes = []
    for _ in range(nchunks - 1):
        n, pos = read_varint(blob, pos)
        sizes.append(n)
    sizes.append(len(blob) - pos - sum(sizes))
    if sizes[-1] < 0:
        raise StorageError("a Huffman stream is shorter than its chunk table says (the file is corrupt)")
    starts = pos + np.concatenate([[0], np.cumsum(sizes[:-1])]).astype(np.int64)
    table_symbol, table_length, width = _lookup(lengths)
    if nchunks == 1:
        return _decode_one(blob, int(starts[0]), count, table_symbol, table_length, width)
    counts = [min(size, count - i * size) for i in range(nchunks)]
    return _decode_lockstep(blob, starts, counts, table_symbol, table_length, width)


def _parse_table(blob: bytes, alphabet: int) -> tuple[np.ndarray | None, int]:
    mode = blob[0]
    if mode == 0:
        if len(blob) != 2 or blob[1] >= alphabet:
            raise StorageError("a constant Huffman stream is malformed (the file is corrupt)")
        return None, 2
    if mode == 1:
        lengths, pos = _read_nibbles(blob, 1, alphabet)
        return lengths, pos
    if mode == 2 and len(blob) > 1:
        used = blob[1] + 1
        if 2 + used > len(blob):
            raise StorageError("a Huffman table runs past the end of its stream (the file is corrupt)")
        symbols = np.frombuffer(blob, dtype=np.uint8, count=used, offset=2).astype(np.int64)
        if symbols.max() >= alphabet:
            raise StorageError("a Huffman table names a symbol outside its alphabet (the file is corrupt)")
        values, pos = _read_nibbles(blob, 2 + used, used)
        lengths = np.zeros(alphabet, dtype=np.int64)
        lengths[symbols] = values
        return lengths, pos
    raise StorageError(f"unknown Huffman table mode {mode} (the file is corrupt)")


def _kraft(lengths: np.ndarray) -> float:
    used = lengths[lengths > 0]
    return float(np.sum(2.0 ** (-used))) if used.size else 0.0


def _lookup(lengths: np.ndarray) -> tuple[np.ndarray, np.ndarray, int]:
    """Tables indexed by the next `width` bits: the symbol they start with and its code length."""
    width = int(lengths.max())
    codes = canonical_codes(lengths)
    table_symbol = np.zeros(1 << width, dtype=np.uint8)
    table_length = np.zeros(1 << width, dtype=np.int64)
    for symbol in np.flatnonzero(lengths):
        shift = width - int(lengths[symbol])
        lo = int(codes[symbol]) << shift
        table_symbol[lo : lo + (1 << shift)] = symbol
        table_length[lo : lo + (1 << shift)] = lengths[symbol]
    return table_symbol, table_length, width


def _decode_one(blob: bytes, start: int, count: int, table_symbol, table_length, width: int) -> np.ndarray:
    data = blob + b"\0\0\0"
    symbols, lengths = table_symbol.tolist(), table_length.tolist()
    mask = (1 << width) - 1
    out = bytearray(count)
    bit, end = start * 8, len(blob) * 8
    for i in range(count):
        if bit > end:
            break
        byte = bit >> 3
        window = ((data[byte] << 16 | data[byte + 1] << 8 | data[byte + 2]) >> (24 - width - (bit & 7))) & mask
        out[i] = symbols[window]
        bit += lengths[window]
    if bit > end:
        raise StorageError("a Huffman stream ends before its last symbol (the file is corrupt)")
    return np.frombuffer(bytes(out), dtype=np.uint8)


def _decode_lockstep(blob: bytes, starts, counts: list[int], table_symbol, table_length, width: int) -> np.ndarray:
    data = np.frombuffer(blob + b"\0\0\0", dtype=np.uint8).astype(np.int64)
    ends = np.append(starts[1:], len(blob)) * 8
    bit = starts * 8
    counts_arr = np.asarray(counts)
    out = np.zeros((len(counts), counts[0]), dtype=np.uint8)
    mask = (1 << width) - 1
    for step in range(counts[0]):
        live = counts_arr > step  # only the last chunk can be shorter
        byte = np.minimum(bit >> 3, len(blob))  # a corrupt stream may run past its end; checked below
        word = (data[byte] << 16) | (data[byte + 1] << 8) | data[byte + 2]
        window = (word >> (24 - width - (bit & 7))) & mask
        out[:, step] = table_symbol[window]
        bit = bit + np.where(live, table_length[window], 0)
    if np.any(bit > ends):
        raise StorageError("a Huffman stream ends before its last symbol (the file is corrupt)")
    return np.concatenate([out[i, :c] for i, c in enumerate(counts)])
