"""Compressed model files (.gopt): exact round trips, coding near the entropy, and bad files refused by name."""

from __future__ import annotations

import math
import os

import numpy as np
import pytest
import torch

import graphopt
from graphopt.errors import StorageError
from graphopt.ir.encodings import BinarySign, Codebook, PowerOfTwo
from graphopt.ir.fingerprint import fingerprint
from graphopt.ir.graph import Graph
from graphopt.ir.ops import ValueRef
from graphopt.ir.types import TensorType
from graphopt.models.digits import DigitsCNN
from graphopt.storage import huffman, read_compressed, save_compressed
from graphopt.storage.bits import pack_bits, unpack_bits
from graphopt.storage.container import FORMAT_VERSION, HEADER_SIZE, MAGIC
from graphopt.storage.streams import StreamReader, StreamWriter, get_positions, put_positions


def entropy_bits(symbols: np.ndarray) -> float:
    counts = np.bincount(symbols)
    p = counts[counts > 0] / symbols.size
    return float(-(p * np.log2(p)).sum() * symbols.size)


# ---- Huffman and bit packing -------------------------------------------------------------


@pytest.mark.parametrize("alphabet", [2, 16, 256])
@pytest.mark.parametrize("count", [1, 7, 4096, 30_001])
def test_huffman_round_trip_and_size_near_entropy(alphabet, count):
    rng = np.random.default_rng(count + alphabet)
    symbols = np.minimum(rng.geometric(0.3, count) - 1, alphabet - 1)
    blob = huffman.encode(symbols, alphabet)
    assert np.array_equal(huffman.decode(blob, count, alphabet), symbols)
    # a Huffman code is within one bit per symbol of the entropy; the table is at most 1 + alphabet/2 bytes
    chunks = -(-count // huffman.chunk_size(count))
    assert len(blob) * 8 <= entropy_bits(symbols) + count + 8 * (2 + alphabet // 2 + 4 * chunks)


def test_huffman_limits_code_length_and_handles_constant_streams():
    fibonacci = [1, 1]
    while len(fibonacci) < 30:
        fibonacci.append(fibonacci[-1] + fibonacci[-2])  # the counts that make the deepest Huffman tree
    symbols = np.repeat(np.arange(30), fibonacci)
    assert huffman.code_lengths(np.bincount(symbols)).max() == huffman.MAX_CODE_LENGTH
    assert np.array_equal(huffman.decode(huffman.encode(symbols, 32), symbols.size, 32), symbols)
    constant = np.full(1000, 5)
    assert len(huffman.encode(constant, 16)) == 2
    assert np.array_equal(huffman.decode(huffman.encode(constant, 16), 1000, 16), constant)


def test_huffman_rejects_corrupt_streams():
    symbols = np.random.default_rng(0).integers(0, 16, 5000)
    blob = huffman.encode(symbols, 16)
    with pytest.raises(StorageError, match="corrupt"):
        huffman.decode(blob[: len(blob) // 2], 5000, 16)
    with pytest.raises(StorageError, match="corrupt"):
        huffman.decode(bytes([9]) + blob[1:], 5000, 16)


@pytest.mark.parametrize("bits", [1, 3, 8, 13, 64])
def test_pack_bits_round_trip(bits):
    values = np.random.default_rng(bits).integers(0, 2**bits - 1, 101, dtype=np.uint64, endpoint=True)
    packed = pack_bits(values, bits)
    assert len(packed) == math.ceil(101 * bits / 8)
    assert np.array_equal(unpack_bits(packed, 101, bits), values)


@pytest.mark.parametrize("density", [0.0, 0.001, 0.1, 0.5, 0.97, 1.0])
def test_mask_positions_round_trip_and_size(density):
    rng = np.random.default_rng(1)
    keep = rng.random(20_000) < density
    writer = StreamWriter()
    spec = put_positions(writer, keep)
    reader = StreamReader(bytes(writer.out))
    assert np.array_equal(get_positions(reader, spec, keep.size, "mask"), keep)
    reader.finish()
    p = min(max(keep.mean(), 1e-9), 1 - 1e-9)
    ideal = keep.size * -(p * math.log2(p) + (1 - p) * math.log2(1 - p)) / 8
    assert len(writer.out) <= 1.25 * ideal + 40  # relative indices + Huffman stay near the mask's entropy


# ---- graphs -------------------------------------------------------------------------------


def compressed_cnn() -> Graph:
    """The digits CNN with every kind of record: pruned codebook, binary, power-of-two, sparse, dense, int."""
    torch.manual_seed(0)
    graph = graphopt.trace(DigitsCNN().eval(), (torch.randn(1, 1, 8, 8),))
    rng = np.random.default_rng(0)
    conv1, conv2, conv3, fc = "features.0.weight", "features.3.weight", "features.7.weight", "fc.weight"
    w = graph.params[conv3].data
    keep = np.abs(w) > np.quantile(np.abs(w), 0.9)
    graph.set_mask(conv3, keep)
    centroids = np.concatenate([[0], np.linspace(w.min(), w.max(), 15)]).astype(np.float32)
    indices = np.where(keep, 1 + np.abs(w[..., None] - centroids[1:]).argmin(-1), 0).astype(np.uint8)
    graph.set_encoding(conv3, Codebook(centroids, indices))
    w2 = graph.params[conv2].data
    graph.set_encoding(conv2, BinarySign(w2 > 0, np.abs(w2).mean(axis=(1, 2, 3)), 0))
    codes = rng.integers(0, 16, graph.params[conv1].data.shape).astype(np.uint8)
    graph.set_encoding(conv1, PowerOfTwo(codes, 4, -6))
    graph.set_mask(fc, rng.random(graph.params[fc].data.shape) < 0.3)  # sparse, values stored as floats
    return graph


def assert_same_graph(a: Graph, b: Graph) -> None:
    assert fingerprint(a) == fingerprint(b)
    assert [n.name for n in a.nodes] == [n.name for n in b.nodes]
    assert [n.meta for n in a.nodes] == [n.meta for n in b.nodes]
    assert list(a.params) == list(b.params)
    for name, p in a.params.items():
        q = b.params[name]
        assert p.data.dtype == q.data.dtype and p.data.tobytes() == q.data.tobytes(), name
        assert (p.mask is None) == (q.mask is None) and (p.mask is None or np.array_equal(p.mask, q.mask)), name
        assert type(p.encoding) is type(q.encoding) and p.trainable == q.trainable, name
        if p.encoding is not None:
            assert p.encoding.describe() == q.encoding.describe()


def test_round_trip_is_exact_for_every_record_kind(tmp_path):
    graph = compressed_cnn()
    before = fingerprint(graph)
    path = graph.save_compressed(tmp_path / "cnn.gopt")
    assert fingerprint(graph) == before  # the caller's graph is untouched
    loaded, info = read_compressed(path)
    assert_same_graph(graph, loaded)
    assert graphopt.load_compressed(path) is not loaded and info.total_bytes == os.path.getsize(path)
    x = np.random.default_rng(3).standard_normal((2, 1, 8, 8)).astype(np.float32)
    assert np.array_equal(graph.run([x])[0], loaded.run([x])[0])
    formats = {p.name: p.format for p in info.params}
    assert formats["features.7.weight"].startswith("sparse") and formats["features.7.weight"].endswith("Codebook")
    assert formats["features.3.weight"] == "BinarySign" and formats["features.0.weight"] == "PowerOfTwo"
    assert formats["fc.weight"].startswith("sparse") and formats["fc.bias"] == "dense"
    assert sum(p.nbytes for p in info.params) + info.structure_bytes + HEADER_SIZE == info.total_bytes


def test_stored_sizes_follow_the_encodings(tmp_path):
    graph = compressed_cnn()
    info = read_compressed(graph.save_compressed(tmp_path / "a.gopt"))[1]
    plain = read_compressed(save_compressed(graph, tmp_path / "b.gopt", entropy=False))[1]
    by_name = {p.name: p for p in info.params}
    assert by_name["features.3.weight"].bits < 1.2  # one bit per sign plus 32 float scales
    assert by_name["features.0.weight"].bits <= 4 + 8 * 4 / 144  # 4-bit codes, the 2 exponent bytes as JSON
    conv3 = by_name["features.7.weight"]
    assert conv3.bits < 0.1 * (4.7 + 4) + 1 / 8 * 16 * 32 / 18432 + 0.15  # 10% kept: positions + 4-bit indices
    assert info.total_bytes < plain.total_bytes and not plain.entropy
    assert_same_graph(graph, graphopt.load_compressed(tmp_path / "b.gopt"))


def test_structure_round_trip_keeps_attributes_metadata_and_opaque_nodes(tmp_path):
    graph = Graph("odd")
    graph.add_input("x", TensorType((1, 8, 4, 4)))
    graph.add_param("k", np.arange(6, dtype=np.int16).reshape(2, 3), trainable=False)
    graph.add_param("h", np.array([1.5, -0.0, np.nan], dtype=np.float16))
    attrs = {"framework": "torch", "target": "aten.pixel_shuffle.default", "args": (ValueRef(0), 2), "kwargs": {}}
    node = graph.add_node("opaque", ["x"], attrs=attrs, name="shuffle", output_types=[TensorType((1, 2, 8, 8))])
    graph.add_node("relu", [node.output], name="act", outputs=["y"])
    graph.set_outputs(["y"])
    graph.metadata = {"nested": (1, 2.5, float("inf")), 7: "int key", "arr": np.arange(3, dtype=np.int16), "$b": b"\0"}
    loaded = graphopt.load_compressed(graph.save_compressed(tmp_path / "odd.gopt"))
    assert_same_graph(graph, loaded)
    assert repr(loaded.metadata) == repr(graph.metadata)
    assert loaded.node("shuffle").attrs["args"] == (ValueRef(0), 2) and loaded.outputs == ("y",)
    assert loaded.type_of("shuffle") == TensorType((1, 2, 8, 8))


class Foreign:
    """An encoding from outside graphopt.ir.encodings: stored by value."""

    def __init__(self, data):
        self.data = np.array(data)

    def decode(self):
        return self.data

    @property
    def nbytes(self):
        return self.data.nbytes

    def describe(self):
        return "foreign"


def test_unknown_encoding_is_stored_by_value_with_a_note(tmp_path):
    graph = compressed_cnn()
    graph.set_encoding("fc.bias", Foreign(graph.params["fc.bias"].data))
    loaded, info = read_compressed(graph.save_compressed(tmp_path / "f.gopt"))
    assert loaded.params["fc.bias"].encoding is None
    assert loaded.params["fc.bias"].data.tobytes() == graph.params["fc.bias"].data.tobytes()
    assert "Foreign stored by value" in {p.name: p.format for p in info.params}["fc.bias"]


def test_large_sparse_tensor_is_fast(tmp_path):
    import time

    graph = Graph("big")
    graph.add_input("x", TensorType((1, 1024)))
    rng = np.random.default_rng(0)
    graph.add_param("w", rng.standard_normal((1024, 1024)).astype(np.float32))
    graph.add_node("linear", ["x", "w"], name="fc")
    graph.set_outputs(["fc"])
    graph.set_mask("w", rng.random((1024, 1024)) < 0.2)
    start = time.perf_counter()
    loaded = graphopt.load_compressed(graph.save_compressed(tmp_path / "big.gopt"))
    assert time.perf_counter() - start < 20
    assert loaded.params["w"].data.tobytes() == graph.params["w"].data.tobytes()


# ---- bad files ----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def good_file(tmp_path_factory):
    path = tmp_path_factory.mktemp("gopt") / "good.gopt"
    return compressed_cnn().save_compressed(path).read_bytes()


@pytest.mark.parametrize("cut", [0, 5, HEADER_SIZE - 1, HEADER_SIZE, -1])
def test_truncated_file_is_refused(tmp_path, good_file, cut):
    path = tmp_path / "cut.gopt"
    path.write_bytes(good_file[:cut])
    with pytest.raises(StorageError, match="truncated|not a graphopt"):
        graphopt.load_compressed(path)


@pytest.mark.parametrize("where", [HEADER_SIZE + 3, -100, -1])
def test_tampered_file_fails_the_checksum(tmp_path, good_file, where):
    data = bytearray(good_file)
    data[where] ^= 0x10
    path = tmp_path / "bad.gopt"
    path.write_bytes(bytes(data))
    with pytest.raises(StorageError, match="checksum mismatch"):
        graphopt.load_compressed(path)


def test_newer_version_wrong_magic_and_trailing_bytes_are_refused(tmp_path, good_file):
    path = tmp_path / "x.gopt"
    newer = bytearray(good_file)
    newer[8:10] = (FORMAT_VERSION + 1).to_bytes(2, "little")
    path.write_bytes(bytes(newer))
    with pytest.raises(StorageError, match=f"format version {FORMAT_VERSION + 1}.*upgrade graphopt"):
        graphopt.load_compressed(path)
    path.write_bytes(b"\x89PNG" + good_file[4:])
    with pytest.raises(StorageError, match="not a graphopt compressed model"):
        graphopt.load_compressed(path)
    path.write_bytes(good_file + b"\0")
    with pytest.raises(StorageError, match="1 unexpected bytes"):
        graphopt.load_compressed(path)
    assert good_file.startswith(MAGIC)


def test_failed_save_leaves_the_old_file(tmp_path):
    path = tmp_path / "m.gopt"
    path.write_bytes(b"old")
    graph = compressed_cnn()
    graph.metadata = {"bad": object()}
    with pytest.raises(StorageError, match="graph metadata.bad: a builtins.object cannot be stored"):
        graph.save_compressed(path)
    assert path.read_bytes() == b"old" and os.listdir(tmp_path) == ["m.gopt"]
    (tmp_path / "dir.gopt").mkdir()
    with pytest.raises(graphopt.errors.GraphoptError, match="directory"):
        compressed_cnn().save_compressed(tmp_path / "dir.gopt")
