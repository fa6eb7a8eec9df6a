"""Parameter records: a parameter's mask, values and encoding as streams, and back.

A record (a JSON object in the file's structure) holds the name, dtype, shape and
trainable flag, then:
- "m": the mask, as positions (`streams.put_positions`), when there is one;
- "e": the encoding, when it can be stored: its class (a dataclass of
  `graphopt.ir.encodings`) and each constructor field: arrays as value streams,
  other fields as JSON. An integer or bool field shaped like the parameter is
  stored at the kept positions only when the mask's pruned positions all hold one
  value ("fill"): a pruned codebook stores one index per kept weight.
  The data is not stored; it is the encoding's decoding, as in the IR.
- "v": otherwise the values (all, or the kept ones under a mask).
An encoding is stored only if rebuilding it from its fields decodes bit for bit to
what the parameter's encoding decodes to and describes itself alike; otherwise (a
class outside `graphopt.ir.encodings`, fields the format cannot hold) the
parameter is stored by value with a note ("note"), so nothing is lost.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import numpy as np

from graphopt.errors import StorageError
from graphopt.ir import encodings as encodings_module
from graphopt.ir.graph import Parameter
from graphopt.storage.bits import array_to_le_bytes
from graphopt.storage.jsonvalues import dtype_named, from_json, to_json
from graphopt.storage.streams import StreamReader, StreamWriter, get_positions, get_values, put_positions, put_values


@dataclass(frozen=True)
class StoredParam:
    """A parameter read back from a record."""

    data: np.ndarray
    trainable: bool
    mask: np.ndarray | None
    encoding: object | None


def write_record(w: StreamWriter, name: str, p: Parameter) -> dict:
    record: dict = {"n": name, "dt": p.data.dtype.name, "sh": list(p.data.shape)}
    if p.trainable != _default_trainable(p.data.dtype):
        record["tr"] = int(p.trainable)
    kept = None
    if p.mask is not None:
        record["m"] = put_positions(w, p.mask)
        kept = p.mask.reshape(-1)
    if p.encoding is not None:
        fields, reason = _storable_fields(p)
        if fields is not None:
            record["e"] = _write_encoding(w, name, p, fields, kept)
            return record
        record["note"] = f"{type(p.encoding).__name__} stored by value: {reason}"
    flat = p.data.reshape(-1)
    record["v"] = put_values(w, flat if kept is None else flat[kept])
    return record


def read_record(r: StreamReader, record: dict) -> tuple[str, StoredParam]:
    name = record["n"]
    where = f"parameter '{name}'"
    dtype = dtype_named(record["dt"], where)
    trainable = bool(record.get("tr", _default_trainable(dtype)))
    shape = tuple(int(d) for d in record["sh"])
    size = int(np.prod(shape, dtype=np.int64))
    kept = get_positions(r, record["m"], size, f"{where} mask") if "m" in record else None
    mask = None if kept is None else kept.reshape(shape)
    encoding = None
    if "e" in record:
        encoding = _read_encoding(r, record["e"], shape, kept, where)
        data = np.asarray(encoding.decode())
        if data.shape != shape or data.dtype != dtype:
            raise StorageError(f"{where}: its encoding decodes to {data.dtype}{list(data.shape)}, not {dtype}{shape}")
    else:
        count = size if kept is None else int(np.count_nonzero(kept))
        values = get_values(r, record["v"], count, dtype, where)
        data = np.zeros(size, dtype=dtype)
        if kept is None:
            if values.size != size:
                raise StorageError(f"{where}: {values.size} values for {size} elements")
            data = values
        else:
            if values.size != np.count_nonzero(kept):
                raise StorageError(f"{where}: {values.size} values for {np.count_nonzero(kept)} kept entries")
            data[kept] = values
        data = data.reshape(shape)
    return name, StoredParam(data, trainable, mask, encoding)


def describe_record(record: dict) -> str:
    """The storage format of a record, e.g. "sparse 4-bit gaps + Codebook", "dense"."""
    parts = []
    if "m" in record:
        parts.append(f"sparse {record['m']['b']}-bit gaps")
    if "e" in record:
        parts.append(record["e"]["cls"])
    elif not parts:
        parts.append("dense")
    text = " + ".join(parts)
    return f"{text} ({record['note']})" if "note" in record else text


def _default_trainable(dtype: np.dtype) -> bool:
    return bool(np.issubdtype(dtype, np.floating))  # what Graph.add_param assumes


def _storable_fields(p: Parameter) -> tuple[dict | None, str]:
    """The encoding's constructor fields if rebuilding from them reproduces it, else (None, why not)."""
    enc = p.encoding
    cls = type(enc)
    if getattr(encodings_module, cls.__name__, None) is not cls or not dataclasses.is_dataclass(cls):
        return None, f"{cls.__module__}.{cls.__qualname__} is not a dataclass of graphopt.ir.encodings"
    fields = {f.name: getattr(enc, f.name) for f in dataclasses.fields(cls) if f.init}
    for key, value in fields.items():
        try:
            to_json(value, key) if not isinstance(value, np.ndarray) else dtype_named(value.dtype.name, key)
        except StorageError as e:
            return None, f"field {e}"
    try:
        rebuilt = cls(**fields)
        same = _same_bits(np.asarray(rebuilt.decode()), np.asarray(enc.decode()))
        same = same and rebuilt.describe() == enc.describe() and rebuilt.nbytes == enc.nbytes
    except Exception as e:  # a class whose fields do not rebuild it
        return None, f"rebuilding it from its fields failed ({type(e).__name__}: {e})"
    if not same:
        return None, "rebuilding it from its fields does not reproduce it"
    return fields, ""


def _same_bits(a: np.ndarray, b: np.ndarray) -> bool:
    if a.shape != b.shape or a.dtype != b.dtype:
        return False
    return bool(np.array_equal(array_to_le_bytes(a), array_to_le_bytes(b)))


def _write_encoding(w: StreamWriter, name: str, p: Parameter, fields: dict, kept: np.ndarray | None) -> dict:
    out: dict = {}
    for key, value in fields.items():
        if not isinstance(value, np.ndarray):
            out[key] = {"j": to_json(value, f"parameter '{name}' encoding field {key}")}
            continue
        spec: dict = {"sh": list(value.shape), "dt": value.dtype.name}
        flat = value.reshape(-1)
        fill = _fill(value, p.data.shape, kept)
        if fill is not None:
            spec["fill"] = fill
            flat = flat[kept]
        spec["a"] = put_values(w, flat)
        out[key] = spec
    return {"cls": type(p.encoding).__name__, "f": out}


def _fill(value: np.ndarray, shape: tuple, kept: np.ndarray | None):
    """The one value an integer field holds at every pruned position, or None."""
    if kept is None or value.shape != shape or value.dtype.kind not in "biu" or kept.all():
        return None
    pruned = value.reshape(-1)[~kept]
    first = pruned[0]
    return to_json(first.item(), "fill") if np.all(pruned == first) else None


def _read_encoding(r: StreamReader, spec: dict, shape: tuple, kept: np.ndarray | None, where: str):
    name = spec["cls"]
    cls = getattr(encodings_module, name, None)
    if not isinstance(cls, type) or not dataclasses.is_dataclass(cls):
        raise StorageError(
            f"{where} is stored as encoding '{name}', which this graphopt does not define in graphopt.ir.encodings "
            f"(a file from a newer graphopt?)"
        )
    fields = {}
    for key, field in spec["f"].items():
        if "j" in field:
            fields[key] = from_json(field["j"], f"{where} encoding field {key}")
            continue
        field_where = f"{where} encoding field {key}"
        field_shape = tuple(int(d) for d in field["sh"])
        field_dtype = dtype_named(field["dt"], field_where)
        if "fill" in field and (kept is None or field_shape != shape):
            raise StorageError(f"{field_where} is stored at kept positions without a mask")
        count = int(np.count_nonzero(kept)) if "fill" in field else int(np.prod(field_shape, dtype=np.int64))
        values = get_values(r, field["a"], count, field_dtype, field_where)
        if "fill" in field:
            full = np.full(kept.size, field["fill"], dtype=values.dtype)
            full[kept] = values
            values = full
        fields[key] = values.reshape(field_shape)
    try:
        return cls(**fields)
    except Exception as e:
        raise StorageError(f"{where}: cannot rebuild its {name} encoding ({type(e).__name__}: {e})") from None
