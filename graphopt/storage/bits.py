"""Bit-level helpers of the compressed format: LEB128 varints, n-bit packing, little-endian array bytes.

Bits are packed MSB first (numpy's `packbits` order); the last byte is padded with zeros.
"""

from __future__ import annotations

import numpy as np

from graphopt.errors import StorageError


def write_varint(value: int, out: bytearray) -> None:
    """Append `value` (>= 0) as an unsigned LEB128 varint."""
    if value < 0:
        raise ValueError(f"varints are unsigned, got {value}")
    while True:
        byte = value & 0x7F
        value >>= 7
        out.append(byte | (0x80 if value else 0))
        if not value:
            return


def read_varint(buf: bytes | memoryview, pos: int) -> tuple[int, int]:
    """(value, position after it) of the varint at `pos`."""
    value = shift = 0
    while True:
        if pos >= len(buf):
            raise StorageError("a varint runs past the end of its stream (the file is corrupt)")
        byte = buf[pos]
        pos += 1
        value |= (byte & 0x7F) << shift
        shift += 7
        if not byte & 0x80:
            return value, pos
        if shift > 63:
            raise StorageError("a varint is longer than 64 bits (the file is corrupt)")


def pack_bits(values: np.ndarray, bits: int) -> bytes:
    """Each of `values` (non-negative, < 2**bits) as `bits` bits, MSB first, concatenated."""
    values = np.asarray(values, dtype=np.uint64).reshape(-1)
    if bits == 0 or values.size == 0:
        return b""
    shifts = np.arange(bits - 1, -1, -1, dtype=np.uint64)
    planes = ((values[:, None] >> shifts) & np.uint64(1)).astype(np.uint8)
    return np.packbits(planes.reshape(-1)).tobytes()


def unpack_bits(buf: bytes, count: int, bits: int) -> np.ndarray:
    """The `count` values of `bits` bits each that `pack_bits` wrote (uint64)."""
    if bits == 0 or count == 0:
        return np.zeros(count, dtype=np.uint64)
    need = -(-count * bits // 8)
    if len(buf) != need:
        raise StorageError(f"a packed stream holds {len(buf)} bytes, {count} values of {bits} bits need {need}")
    planes = np.unpackbits(np.frombuffer(buf, dtype=np.uint8))[: count * bits].reshape(count, bits)
    weights = np.uint64(1) << np.arange(bits - 1, -1, -1, dtype=np.uint64)
    return (planes.astype(np.uint64) * weights).sum(axis=1, dtype=np.uint64)


def bit_length(value: int) -> int:
    return int(value).bit_length()


def array_to_le_bytes(array: np.ndarray) -> np.ndarray:
    """The array's elements as little-endian bytes, shape (n, itemsize), for any dtype (ml_dtypes included)."""
    flat = np.ascontiguousarray(array).reshape(-1)
    size = flat.dtype.itemsize
    if size not in (1, 2, 4, 8):
        raise StorageError(f"cannot store dtype {flat.dtype.name} ({size}-byte elements)")
    words = flat.view(f"=u{size}").astype(f"<u{size}")
    return words.view(np.uint8).reshape(-1, size)


def array_from_le_bytes(planes: np.ndarray, dtype: np.dtype, shape: tuple[int, ...]) -> np.ndarray:
    """Inverse of `array_to_le_bytes`: (n, itemsize) bytes -> array of `dtype` and `shape`."""
    size = np.dtype(dtype).itemsize
    words = np.ascontiguousarray(planes, dtype=np.uint8).reshape(-1).view(f"<u{size}").astype(f"=u{size}")
    return words.view(dtype).reshape(shape)
