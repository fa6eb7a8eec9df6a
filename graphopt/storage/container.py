"""The file around the payload: a fixed header with a checksum, then the payload.

    offset  size  field
         0     8  magic b"\\x89GOPT\\r\\n\\x1a" (the \\x89 and \\r\\n catch 7-bit and newline-mangling copies)
         8     2  format version, little-endian (this graphopt writes and reads 1)
        10     2  flags (bit 0: streams may be Huffman-coded); unknown bits are refused
        12     8  payload length in bytes
        20    32  SHA-256 of bytes 0..19 and the payload
        52     -  payload

Reading checks, in order: length of the header, magic, version (a newer one is
refused by name), flags, payload length (truncated or trailing bytes), checksum.
"""

from __future__ import annotations

import hashlib
import struct

from graphopt.errors import StorageError

MAGIC = b"\x89GOPT\r\n\x1a"
FORMAT_VERSION = 1
FLAG_ENTROPY = 1
KNOWN_FLAGS = FLAG_ENTROPY
_FIELDS = struct.Struct("<8sHHQ")
HEADER_SIZE = _FIELDS.size + 32


def wrap(payload: bytes, flags: int) -> bytes:
    fields = _FIELDS.pack(MAGIC, FORMAT_VERSION, flags, len(payload))
    return fields + hashlib.sha256(fields + payload).digest() + payload


def unwrap(data: bytes, source: str) -> tuple[int, int, bytes]:
    """(version, flags, payload) of a whole file; StorageError naming `source` and the problem."""
    if len(data) < HEADER_SIZE:
        if not MAGIC.startswith(data[: len(MAGIC)]):
            raise StorageError(f"'{source}' is not a graphopt compressed model (no {MAGIC!r} magic)")
        raise StorageError(f"'{source}' is truncated: {len(data)} bytes, the header alone takes {HEADER_SIZE}")
    magic, version, flags, length = _FIELDS.unpack_from(data)
    if magic != MAGIC:
        raise StorageError(f"'{source}' is not a graphopt compressed model (no {MAGIC!r} magic)")
    if version > FORMAT_VERSION:
        raise StorageError(
            f"'{source}' uses format version {version}; this graphopt reads version {FORMAT_VERSION} and "
            f"older: upgrade graphopt to read it"
        )
    if version < 1:
        raise StorageError(f"'{source}': format version {version} does not exist (the header is corrupt)")
    if flags & ~KNOWN_FLAGS:
        raise StorageError(f"'{source}': unknown flags {flags & ~KNOWN_FLAGS:#x} in the header (a newer graphopt?)")
    payload = data[HEADER_SIZE:]
    if len(payload) < length:
        raise StorageError(
            f"'{source}' is truncated: the header announces {length} payload bytes, {len(payload)} are present"
        )
    if len(payload) > length:
        raise StorageError(f"'{source}' has {len(payload) - length} unexpected bytes after its payload")
    if hashlib.sha256(data[: _FIELDS.size] + payload).digest() != data[_FIELDS.size : HEADER_SIZE]:
        raise StorageError(f"'{source}': checksum mismatch (SHA-256): the file is corrupt or was modified")
    return version, flags, payload
