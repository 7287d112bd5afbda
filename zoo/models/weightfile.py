"""Weight files checked before they are trusted: opened, sized, described and finite.

Every weights loader (:mod:`zoo.models.backbone`, :mod:`zoo.models.imagenet`, and
:func:`zoo.models.weights.load_weights` for Keras' own ``.weights.h5``) goes through here:

- :func:`open_h5`: a truncated or foreign file is one sentence, not h5py's OSError traceback;
- :func:`check_attributes` (in :func:`open_h5`): each variable-length attribute (h5py's ``str``)
  is checked in the raw file before HDF5 reads it: its declared length must be its global heap
  object's size, and the heap must walk to its end (HDF5 1.14 allocated a flipped length, 1.7 GB,
  and looped forever on a heap entry of size 0); one kept where this cannot look (dense storage)
  is refused;
- :func:`check_declared_size`: the datasets' shapes and dtypes are read from the file's
  metadata (no data) and their total refused past a limit the caller derives from the model (a
  284 KB file declaring a 32 GiB dataset made ``load_backbone`` allocate it before comparing);
- :func:`parse_metadata`: the one schema for a backbone's metadata JSON: a mapping of plain
  values, at most :data:`MAX_METADATA_BYTES` long and :data:`MAX_METADATA_DEPTH` levels deep
  (a list gave AttributeError, invalid JSON JSONDecodeError, deep nesting RecursionError);
- :func:`check_finite`: NaN or infinite weights are refused after reading, never loaded.
"""

from __future__ import annotations

import json
import os
import struct

import numpy as np

__all__ = ["MAX_HEAP_BYTES", "MAX_METADATA_BYTES", "MAX_METADATA_DEPTH", "WeightsFileError",
           "check_attributes", "check_declared_size", "check_finite", "open_h5", "parse_metadata"]

MAX_METADATA_BYTES = 64 * 1024
MAX_METADATA_DEPTH = 8
MAX_HEAP_BYTES = 16 * 2**20  # one global heap collection that a variable-length attribute is read from


class WeightsFileError(ValueError):
    """A weights file that cannot be trusted: one sentence naming the file and the fix."""


def open_h5(path, what: str = "Weights file", error=WeightsFileError):
    """``h5py.File(path, "r")``, its attributes checked (:func:`check_attributes`); ``error``
    (one sentence) if it is truncated, not HDF5, or an attribute cannot be read safely."""
    import h5py

    try:
        f = h5py.File(os.fspath(path), "r")
    except OSError:
        raise error(f"{what} {os.fspath(path)!r} is truncated or not an HDF5 weights file; copy it "
                    "again or write it anew.") from None
    try:
        check_attributes(f, path, what, error)
    except BaseException:
        f.close()
        raise
    return f


def check_declared_size(f, path, limit_bytes: int, error=WeightsFileError) -> None:
    """Refuse an open HDF5 file whose datasets declare more than ``limit_bytes`` in all, or a
    non-numeric dtype, from their metadata alone (nothing is read)."""
    import h5py

    total = 0
    found = []

    def visit(name, obj):
        if isinstance(obj, h5py.Dataset):
            found.append((name, obj.shape or (), obj.dtype))

    try:
        f.visititems(visit)
    except (RuntimeError, OSError, KeyError, ValueError):  # h5py walking a corrupt object table
        raise error(f"Weights file {os.fspath(path)!r} is truncated or corrupt; copy it again or "
                    "write it anew.") from None
    for name, shape, dtype in found:
        if dtype.kind not in "fiub":
            raise error(f"Weights file {os.fspath(path)!r} holds {name!r} of dtype {dtype}, not "
                        "numbers; it is not a weights file of this model.")
        total += int(np.prod(shape, dtype=np.float64)) * dtype.itemsize
    if total > limit_bytes:
        raise error(f"Weights file {os.fspath(path)!r} declares {total} bytes of weights, more than "
                    f"the {limit_bytes} this model can use; it belongs to another model or is "
                    "corrupt.")


def check_finite(values, path, where: str, error=WeightsFileError) -> None:
    """Refuse weights holding NaN or infinity (``where`` names the layer or weight)."""
    for value in values:
        value = np.asarray(value)
        if value.dtype.kind == "f" and not np.all(np.isfinite(value)):
            raise error(f"Weights file {os.fspath(path)!r} holds NaN or infinite values in {where}; "
                        "it comes from a diverged run or is corrupt, so use another file.")


def _depth(text: str) -> int:
    """The deepest [ / { nesting of JSON ``text`` (strings skipped), without parsing it."""
    depth = deepest = 0
    in_string = escaped = False
    for char in text:
        if in_string:
            if escaped:
                escaped = False
            elif char == "\\":
                escaped = True
            elif char == '"':
                in_string = False
        elif char == '"':
            in_string = True
        elif char in "[{":
            depth += 1
            deepest = max(deepest, depth)
        elif char in "]}":
            depth -= 1
    return deepest


def parse_metadata(text, path, error=WeightsFileError) -> dict:
    """A backbone file's metadata JSON as a dict of plain values, or ``error`` in one sentence."""
    if isinstance(text, bytes):
        text = text.decode("utf-8", "replace")
    name = os.fspath(path)
    if not isinstance(text, str):
        raise error(f"Backbone file {name!r} has metadata that is not JSON text; re-run the pretraining.")
    if len(text) > MAX_METADATA_BYTES:
        raise error(f"Backbone file {name!r} has {len(text)} characters of metadata, over the "
                    f"{MAX_METADATA_BYTES} limit; re-run the pretraining to write it anew.")
    if _depth(text) > MAX_METADATA_DEPTH:
        raise error(f"Backbone file {name!r} has metadata nested deeper than {MAX_METADATA_DEPTH} "
                    "levels; re-run the pretraining to write it anew.")
    try:
        meta = json.loads(text or "{}")
    except ValueError:
        raise error(f"Backbone file {name!r} has metadata that is not valid JSON; re-run the "
                    "pretraining to write it anew.") from None
    if not isinstance(meta, dict):
        raise error(f"Backbone file {name!r} has metadata that is a JSON {type(meta).__name__}, not "
                    "an object; re-run the pretraining to write it anew.")
    return meta


# ------------------------------------------------------------------ variable-length attributes
# A variable-length value (h5py's ``str`` attribute) is stored inline as (length, address of a
# global heap collection, object index); the bytes sit in that collection. HDF5 1.14 allocates
# and clears ``length`` bytes before it looks at the heap (a flipped length byte: 1.7 GB), and its
# heap parser loops forever on a free-space entry of size 0 (H5HG__cache_heap_deserialize), so
# both are checked here from the raw file, before HDF5 reads the attribute.
class _Corrupt(Exception):
    """A raw HDF5 structure that HDF5 would loop on or allocate without bound for."""


def _uint(data: bytes, pos: int, size: int) -> int:
    if pos < 0 or pos + size > len(data):
        raise _Corrupt("a field runs past its structure")
    return int.from_bytes(data[pos:pos + size], "little")


class _Raw:
    """An open HDF5 file's bytes at its own addresses (after any user block)."""

    def __init__(self, f, path):
        plist = f.id.get_create_plist()
        self.addr_size, self.len_size = plist.get_sizes()
        self.base = plist.get_userblock()
        self.path, self.file, self.end = os.fspath(path), None, 0
        self.heaps: dict[int, dict[int, int]] = {}

    def read(self, addr: int, size: int) -> bytes:
        if self.file is None:  # opened at the first variable-length attribute only
            self.file = open(self.path, "rb")
            self.end = os.fstat(self.file.fileno()).st_size - self.base
        if addr < 0 or size < 0 or addr + size > self.end:
            raise _Corrupt("it points past the end of the file")
        self.file.seek(self.base + addr)
        return self.file.read(size)

    def close(self) -> None:
        if self.file is not None:
            self.file.close()


def _header_messages(raw: _Raw, addr: int) -> list[tuple[int, int, bytes]]:
    """(type, flags, body) of every message of the object header at ``addr`` (header versions
    1 and 2), continuation chunks followed."""
    raw.read(addr, 1)  # the file opened, its end known
    head = raw.read(addr, min(40, raw.end - addr))
    if head[:4] == b"OHDR":
        flags = head[5]
        pos = 6 + (16 if flags & 0x20 else 0) + (4 if flags & 0x10 else 0)
        width = 1 << (flags & 3)
        chunks, prefix = [(addr + pos + width, _uint(head, pos, width))], 6 if flags & 0x04 else 4
    elif head[:1] == b"\x01":
        chunks, prefix = [(addr + 16, _uint(head, 8, 4))], 8
    else:
        raise _Corrupt("an object header is of no known version")
    messages, seen = [], set()
    while chunks:
        start, size = chunks.pop()
        if start in seen or len(seen) > 256:
            raise _Corrupt("its object header continues in a loop")
        seen.add(start)
        data, pos = raw.read(start, size), 0
        while pos + prefix <= len(data):
            if prefix == 8:
                kind, length, flags = _uint(data, pos, 2), _uint(data, pos + 2, 2), data[pos + 4]
            else:
                kind, length, flags = data[pos], _uint(data, pos + 1, 2), data[pos + 3]
            body = data[pos + prefix:pos + prefix + length]
            if len(body) < length:
                raise _Corrupt("a message runs past its object header")
            pos += prefix + length
            if kind == 0x10:  # continuation: (address, length); version 2 adds OCHK and a checksum
                cont, clen = _uint(body, 0, raw.addr_size), _uint(body, raw.addr_size, raw.len_size)
                chunks.append((cont, clen) if prefix == 8 else (cont + 4, clen - 8))
            messages.append((kind, flags, body))
    return messages


def _attribute_values(raw: _Raw, addr: int) -> dict[bytes, bytes]:
    """{name: raw value} of the attributes kept in the object header at ``addr`` (not those in
    dense or shared storage)."""
    values = {}
    for kind, flags, body in _header_messages(raw, addr):
        if kind != 0x0C or flags & 0x02 or len(body) < 9 or body[0] not in (1, 2, 3):
            continue
        name_size, type_size, space_size = struct.unpack_from("<HHH", body, 2)
        pad = (lambda n: -(-n // 8) * 8) if body[0] == 1 else (lambda n: n)
        pos = 9 if body[0] == 3 else 8
        name = body[pos:pos + name_size].split(b"\0", 1)[0]
        values[name] = body[pos + pad(name_size) + pad(type_size) + pad(space_size):]
    return values


def _heap(raw: _Raw, addr: int) -> dict[int, int]:
    """{index: size} of the global heap collection at ``addr``, walked as HDF5 walks it, but
    refusing the entries HDF5 would loop on or run past."""
    if addr not in raw.heaps:
        head = raw.read(addr, 8 + raw.len_size)
        if head[:4] != b"GCOL":
            raise _Corrupt("its heap has no GCOL signature")
        size = _uint(head, 8, raw.len_size)
        if size > MAX_HEAP_BYTES:
            raise _Corrupt(f"its heap declares {size} bytes, over the {MAX_HEAP_BYTES} limit")
        data, objects = raw.read(addr, size), {}
        entry = pos = 8 + raw.len_size  # the collection's header; each object's header is as long
        while pos + entry <= size:
            index, length = _uint(data, pos, 2), _uint(data, pos + 8, raw.len_size)
            need = entry + -(-length // 8) * 8 if index else length  # free space: header included
            if need == 0:
                raise _Corrupt("its heap has a free-space entry of size 0, which HDF5 reads forever")
            if pos + need > size:
                raise _Corrupt("an entry runs past its heap")
            if index:
                objects[index] = length
            pos += need
        raw.heaps[addr] = objects
    return raw.heaps[addr]


def _check_vlen(raw: _Raw, value: bytes, count: int, element: int) -> None:
    """Each of the ``count`` (length, heap, index) of a raw value names a heap object of exactly
    ``length * element`` bytes (what HDF5 allocates before it reads the heap)."""
    step = 8 + raw.addr_size
    if len(value) < count * step:
        raise _Corrupt(f"it declares {count} values but holds {len(value) // step}")
    for i in range(count):
        length = _uint(value, i * step, 4)
        heap, index = _uint(value, i * step + 4, raw.addr_size), _uint(value, i * step + 4 + raw.addr_size, 4)
        if heap == 0:  # a null value: HDF5 reads nothing
            continue
        stored = _heap(raw, heap).get(index)
        if stored is None:
            raise _Corrupt(f"its value {i} names heap object {index}, which its heap does not hold")
        if length and stored != length * element:
            raise _Corrupt(f"its value {i} declares {length * element} bytes where its heap holds {stored}")


def _vlen_element(t) -> int:
    """0 for an HDF5 type without variable-length data; the size of one element of a
    variable-length string (1) or sequence; -1 for variable-length data inside another type."""
    from h5py import h5t

    if isinstance(t, h5t.TypeStringID):
        return 1 if t.is_variable_str() else 0
    if isinstance(t, h5t.TypeVlenID):
        return -1 if _vlen_element(t.get_super()) else t.get_super().get_size()
    if isinstance(t, h5t.TypeCompoundID):
        inner = [t.get_member_type(i) for i in range(t.get_nmembers())]
    elif isinstance(t, h5t.TypeArrayID):
        inner = [t.get_super()]
    else:
        return 0
    return -1 if any(_vlen_element(m) for m in inner) else 0


def _check_object(raw: _Raw, obj, name: str, error) -> None:
    """The variable-length attributes of one HDF5 object (``name`` shows the file)."""
    from h5py import h5a, h5o

    values = None
    for i in range(h5a.get_num_attrs(obj.id)):
        attr = h5a.open(obj.id, index=i)
        element, shown = _vlen_element(attr.get_type()), attr.name.decode("utf-8", "replace")
        if element == 0:
            continue
        if element < 0:
            raise error(f"{name} has attribute {shown!r} with variable-length data inside another "
                        "type, which no weights file holds; write it anew.")
        if values is None:
            values = _attribute_values(raw, h5o.get_info(obj.id).addr)
        if attr.name not in values:
            raise error(f"{name} keeps its variable-length attribute {shown!r} where it cannot be "
                        "checked (dense or shared storage); write it anew with h5py's defaults.")
        try:
            _check_vlen(raw, values[attr.name], attr.get_space().get_simple_extent_npoints(), element)
        except _Corrupt as exc:
            raise error(f"{name} has a corrupt variable-length attribute {shown!r} ({exc}); copy it "
                        "again or write it anew.") from None


def check_attributes(f, path, what: str = "Weights file", error=WeightsFileError) -> None:
    """Refuse an open HDF5 file whose variable-length attributes HDF5 cannot read safely: a
    declared length that is not its heap object's size, or a heap HDF5 would loop on or that is
    over :data:`MAX_HEAP_BYTES`. Only raw bytes are read; files without such attributes cost a
    walk of their object names."""
    name = f"{what} {os.fspath(path)!r}"
    objects, raw = [f], _Raw(f, path)
    try:
        f.visititems(lambda _, obj: objects.append(obj) and None)
        for obj in objects:
            _check_object(raw, obj, name, error)
    except error:
        raise
    except _Corrupt as exc:
        raise error(f"{name} has a corrupt object header ({exc}); copy it again or write it anew.") from None
    except (RuntimeError, OSError, KeyError, ValueError):  # h5py walking a corrupt object table
        raise error(f"{name} is truncated or corrupt; copy it again or write it anew.") from None
    finally:
        raw.close()
