"""Compressed model files (`.gopt`): what the compression passes made, stored at its compressed size.

    graph.save_compressed("model.gopt")          # or save_compressed(graph, path)
    graph = graphopt.load_compressed("model.gopt")
    info = read_compressed("model.gopt")[1]      # per-parameter format and bytes (`graphopt show`)

Layout (README "Compressed model files"):
- `container.py`: header (magic, version, flags, payload length, SHA-256), atomic writes;
- payload: varint length of the structure, the structure (DEFLATE'd JSON: the graph
  from `structure.py`, the stream table, one record per parameter from `params.py`),
  then the streams (`streams.py`: packed n-bit symbols, Huffman-coded by `huffman.py`
  when that is smaller).
Loading restores the graph exactly: node and value names, attributes, parameter data
bit for bit, masks, encodings and trainable flags.
"""

from __future__ import annotations

import json
import os
import zlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from graphopt.errors import GraphoptError, StorageError
from graphopt.fileio import atomic_write_bytes, check_output_path
from graphopt.ir.graph import Graph
from graphopt.storage.bits import read_varint, write_varint
from graphopt.storage.container import FLAG_ENTROPY, HEADER_SIZE, unwrap, wrap
from graphopt.storage.params import StoredParam, describe_record, read_record, write_record
from graphopt.storage.streams import StreamReader, StreamWriter
from graphopt.storage.structure import structure_from_json, structure_to_json

__all__ = ["save_compressed", "load_compressed", "read_compressed", "StorageInfo", "ParamStorage"]


@dataclass(frozen=True)
class ParamStorage:
    name: str
    shape: tuple[int, ...]
    dtype: str
    format: str  # e.g. "dense", "sparse 4-bit gaps + Codebook"
    nbytes: int  # bytes of its streams on disk

    @property
    def bits(self) -> float:
        """Bits per element on disk."""
        return 8.0 * self.nbytes / max(int(np.prod(self.shape, dtype=np.int64)), 1)


@dataclass(frozen=True)
class StorageInfo:
    version: int
    entropy: bool
    total_bytes: int
    header_bytes: int
    structure_bytes: int  # the DEFLATE'd structure and its length prefix
    params: tuple[ParamStorage, ...]

    @property
    def param_bytes(self) -> int:
        return sum(p.nbytes for p in self.params)


def encode_compressed(graph: Graph, *, entropy: bool = True) -> bytes:
    """The bytes of a compressed model file for `graph` (the graph is not modified)."""
    writer = StreamWriter(entropy=entropy)
    doc = structure_to_json(graph)
    doc["P"] = [write_record(writer, name, p) for name, p in graph.params.items()]
    structure = zlib.compress(json.dumps(doc, separators=(",", ":"), allow_nan=False).encode(), 9)
    payload = bytearray()
    write_varint(len(structure), payload)
    payload += structure
    payload += writer.out
    return wrap(bytes(payload), FLAG_ENTROPY if entropy else 0)


def save_compressed(graph: Graph, path: str | os.PathLike, *, entropy: bool = True) -> Path:
    """Write `graph` as a compressed model file, atomically; returns the path.

    entropy: Huffman-code the streams where that is smaller (False: packed n-bit only).
    """
    check_output_path(path)
    return atomic_write_bytes(path, encode_compressed(graph, entropy=entropy))


def decode_compressed(data: bytes, source: str = "<bytes>") -> tuple[Graph, StorageInfo]:
    version, flags, payload = unwrap(data, source)
    try:
        size, pos = read_varint(payload, 0)
        doc = json.loads(zlib.decompress(payload[pos : pos + size]))
        reader = StreamReader(payload[pos + size :])
        stored, sizes = [], []
        for record in doc["P"]:
            start = reader.position
            stored.append(read_record(reader, record))
            sizes.append(reader.position - start)
        reader.finish()
        graph = structure_from_json(doc, lambda g: _add_params(g, stored))
    except GraphoptError as e:
        raise StorageError(f"'{source}': {e}") from None
    except (KeyError, IndexError, TypeError, ValueError, zlib.error) as e:  # a checksummed file cannot get here
        raise StorageError(f"'{source}' is malformed ({type(e).__name__}: {e})") from None
    params = tuple(
        ParamStorage(record["n"], tuple(record["sh"]), record["dt"], describe_record(record), nbytes)
        for record, nbytes in zip(doc["P"], sizes)
    )
    info = StorageInfo(version, bool(flags & FLAG_ENTROPY), len(data), HEADER_SIZE, pos + size, params)
    return graph, info


def read_compressed(path: str | os.PathLike) -> tuple[Graph, StorageInfo]:
    """The graph in a compressed model file and how it is stored."""
    return decode_compressed(Path(path).read_bytes(), str(path))


def load_compressed(path: str | os.PathLike) -> Graph:
    """The graph stored in a compressed model file (`graph.save_compressed`)."""
    return read_compressed(path)[0]


def _add_params(graph: Graph, stored: list[tuple[str, StoredParam]]) -> None:
    for name, p in stored:
        graph.add_param(name, p.data, trainable=p.trainable, unique=False)
        if p.mask is not None:
            graph.set_mask(name, p.mask)
        if p.encoding is not None:
            graph.set_encoding(name, p.encoding)
