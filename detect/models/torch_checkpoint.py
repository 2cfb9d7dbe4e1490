"""PyTorch state dicts read without torch: tensors as numpy arrays by name.

``torch.save(model.state_dict(), f)`` writes one of two serializations:

- **zip** (torch >= 1.6): a zip archive ``NAME/data.pkl`` (the pickled dict)
  with one member ``NAME/data/KEY`` of raw bytes per storage (``NAME/byteorder``
  says "little" or "big"; absent means little);
- **legacy** (before 1.6): five things in a row in one file: the pickled magic
  number ``0x1950a86a20f9469cfc6c``, the protocol version (1001), a sys-info
  dict, the pickled dict, the pickled list of storage keys, and then each
  storage as an int64 element count followed by its raw bytes (little-endian).

In both, a tensor is pickled as a call of ``torch._utils._rebuild_tensor_v2(storage,
offset, size, stride, ...)`` whose storage is a *persistent id*
``("storage", torch.FloatStorage, key, location, numel[, view])``.

Unpickling runs whatever callables a file names, so this reader allows only
the handful a state dict needs (``collections.OrderedDict``, torch's tensor /
parameter rebuild functions and its storage types) and refuses anything else
with :class:`CheckpointError`, naming the file and the callable. Nothing of
torch is imported: the allowed names resolve to local stand-ins.
"""

from __future__ import annotations

import collections
import io
import pickle
import struct
import zipfile
from pathlib import Path

import numpy as np

#: torch storage class name -> numpy dtype of its elements.
_STORAGE_DTYPES = {
    "DoubleStorage": np.float64, "FloatStorage": np.float32, "HalfStorage": np.float16,
    "LongStorage": np.int64, "IntStorage": np.int32, "ShortStorage": np.int16,
    "CharStorage": np.int8, "ByteStorage": np.uint8, "BoolStorage": np.bool_,
}
_LEGACY_MAGIC = 0x1950A86A20F9469CFC6C
_LEGACY_PROTOCOL = 1001


class CheckpointError(ValueError):
    """A file that is not a PyTorch state dict of tensors (the message names the file)."""


class _StorageType:
    """Stand-in for ``torch.FloatStorage`` and kin: only its element dtype matters."""

    def __init__(self, name: str):
        self.name = name
        if name == "BFloat16Storage":  # numpy has no bfloat16; ml_dtypes (a TensorFlow dependency) does
            import ml_dtypes

            self.dtype = np.dtype(ml_dtypes.bfloat16)
        else:
            self.dtype = np.dtype(_STORAGE_DTYPES[name])


class _Storage:
    """A storage's elements, filled in once its bytes are read (legacy: after the pickle)."""

    def __init__(self, dtype: np.dtype, numel: int):
        self.dtype, self.numel, self.data = dtype, int(numel), None


class _Tensor:
    """A tensor waiting for its storage's bytes: a strided view, materialised later."""

    def __init__(self, storage: _Storage, offset: int, size, stride):
        self.storage, self.offset, self.size, self.stride = storage, int(offset), tuple(size), tuple(stride)

    def array(self, where: str) -> np.ndarray:
        data = self.storage.data
        if data is None:
            raise CheckpointError(f"{where}: a tensor's storage has no data in the file")
        if not self.size:
            return data[self.offset].copy()
        last = self.offset + sum((n - 1) * s for n, s in zip(self.size, self.stride) if n > 0)
        if any(n == 0 for n in self.size):
            return np.zeros(self.size, data.dtype)
        if self.offset < 0 or last >= data.size or min(self.stride) < 0:
            raise CheckpointError(f"{where}: a tensor of shape {list(self.size)} reaches past its storage "
                                  f"({data.size} elements): the file is damaged or truncated")
        item = data.itemsize
        view = np.lib.stride_tricks.as_strided(data[self.offset:], self.size, [s * item for s in self.stride])
        return np.array(view)  # own, contiguous copy


def _rebuild_tensor(storage, offset, size, stride, *_ignored):
    if not isinstance(storage, _Storage):
        raise pickle.UnpicklingError("a tensor without a storage")
    return _Tensor(storage, offset, size, stride)


def _rebuild_parameter(data, requires_grad=False, backward_hooks=None, *_ignored):
    return data


def _ordered_dict(*args, **kwargs):
    return collections.OrderedDict(*args, **kwargs)


#: (module, name) -> what the restricted unpickler gives for it; everything else is refused.
_ALLOWED = {
    ("collections", "OrderedDict"): _ordered_dict,
    ("torch._utils", "_rebuild_tensor"): _rebuild_tensor,
    ("torch._utils", "_rebuild_tensor_v2"): _rebuild_tensor,
    ("torch._utils", "_rebuild_parameter"): _rebuild_parameter,
    **{("torch", name): _StorageType(name) for name in _STORAGE_DTYPES},
    ("torch", "BFloat16Storage"): "BFloat16Storage",  # made on first use (imports ml_dtypes)
}


class _Unpickler(pickle.Unpickler):
    def __init__(self, file, where: str, storage):
        super().__init__(file)
        self.where, self.storage = where, storage

    def find_class(self, module, name):
        try:
            found = _ALLOWED[(module, name)]
            return _StorageType(found) if isinstance(found, str) else found
        except KeyError:
            raise CheckpointError(
                f"{self.where}: refusing to load {module}.{name}: a state dict holds only tensors, "
                f"and unpickling anything else could run code") from None

    def persistent_load(self, pid):
        if not (isinstance(pid, tuple) and len(pid) >= 5 and pid[0] in ("storage", b"storage")):
            raise CheckpointError(f"{self.where}: unknown persistent record {str(pid)[:80]}")
        storage_type, key, numel = pid[1], str(pid[2]), pid[4]
        if not isinstance(storage_type, _StorageType):
            raise CheckpointError(f"{self.where}: storage of unsupported type {storage_type!r}")
        view = pid[5] if len(pid) > 5 else None
        root = self.storage(key, storage_type.dtype, numel)
        if view is None:
            return root
        _view_key, offset, view_numel = view  # a view into a root storage (legacy only)
        part = _Storage(root.dtype, view_numel)
        part.root, part.view_offset = root, int(offset)
        return part


def read_state_dict(path: str | Path) -> dict[str, np.ndarray]:
    """``{name: array}`` of a ``torch.save``'d state dict (zip or legacy), without torch.

    A checkpoint that wraps its state dict (``{"state_dict": {...}}`` or
    ``{"model": {...}}``) is unwrapped. Raises :class:`CheckpointError` for
    anything else: not a torch file, a truncated one, an object that is not a
    dict of tensors, or one that names a callable a state dict has no use for.
    """
    path = Path(path)
    where = str(path)
    if not path.is_file():
        raise CheckpointError(f"{where}: no such checkpoint file")
    try:
        if zipfile.is_zipfile(path):
            obj = _read_zip(path, where)
        else:
            obj = _read_legacy(path, where)
    except CheckpointError:
        raise
    except (pickle.UnpicklingError, EOFError, ValueError, TypeError, KeyError, IndexError,
            AttributeError, struct.error, zipfile.BadZipFile) as err:
        raise CheckpointError(f"{where}: not a readable PyTorch checkpoint ({type(err).__name__}: "
                              f"{err}); the file may be truncated or of another format") from err
    return _tensors(_unwrap(obj), where)


def _unwrap(obj):
    if isinstance(obj, dict) and not any(isinstance(v, _Tensor) for v in obj.values()):
        for key in ("state_dict", "model", "model_state_dict"):
            if isinstance(obj.get(key), dict):
                return obj[key]
    return obj


def _tensors(obj, where: str) -> dict[str, np.ndarray]:
    if not isinstance(obj, dict) or not obj:
        raise CheckpointError(f"{where}: holds a {type(obj).__name__}, not a state dict (a mapping of "
                              f"names to tensors)")
    out = {}
    for name, value in obj.items():
        if not isinstance(value, _Tensor):
            raise CheckpointError(f"{where}: entry {name!r} is a {type(value).__name__}, not a tensor; "
                                  f"expected a state dict")
        out[str(name)] = value.array(where)
    return out


def _read_zip(path: Path, where: str):
    with zipfile.ZipFile(path) as archive:
        names = archive.namelist()
        pkl = next((n for n in names if n.endswith("/data.pkl") or n == "data.pkl"), None)
        if pkl is None:
            raise CheckpointError(f"{where}: a zip file without data.pkl: not a PyTorch checkpoint")
        prefix = pkl[: -len("data.pkl")]
        order = "<"
        if prefix + "byteorder" in names:
            order = "<" if archive.read(prefix + "byteorder").strip() == b"little" else ">"
        storages: dict[str, _Storage] = {}

        def storage(key, dtype, numel):
            if key not in storages:
                member = f"{prefix}data/{key}"
                if member not in names:
                    raise CheckpointError(f"{where}: storage {key} is missing from the archive")
                raw = archive.read(member)
                s = _Storage(dtype, numel)
                s.data = _from_bytes(raw, dtype, order, numel, where)
                storages[key] = s
            return storages[key]

        return _Unpickler(io.BytesIO(archive.read(pkl)), where, storage).load()


def _from_bytes(raw: bytes, dtype: np.dtype, order: str, numel: int, where: str) -> np.ndarray:
    want = int(numel) * dtype.itemsize
    if len(raw) < want:
        raise CheckpointError(f"{where}: a storage holds {len(raw)} bytes, {want} expected: the file is "
                              f"truncated")
    return np.frombuffer(raw[:want], dtype.newbyteorder(order)).astype(dtype)


def _read_legacy(path: Path, where: str):
    with open(path, "rb") as f:
        head = [_plain_load(f, where) for _ in range(3)]
        if head[0] != _LEGACY_MAGIC or head[1] != _LEGACY_PROTOCOL:
            raise CheckpointError(f"{where}: not a PyTorch checkpoint (neither a zip archive nor the legacy "
                                  f"serialization's magic number)")
        storages: dict[str, _Storage] = {}

        def storage(key, dtype, numel):
            if key not in storages:
                storages[key] = _Storage(dtype, numel)
            return storages[key]

        obj = _Unpickler(f, where, storage).load()
        keys = _plain_load(f, where)
        if not isinstance(keys, list):
            raise CheckpointError(f"{where}: the legacy storage list is missing")
        for key in keys:
            s = storages.get(str(key))
            if s is None:
                raise CheckpointError(f"{where}: storage {key} is listed but no tensor uses it")
            (numel,) = struct.unpack("<q", _read_exact(f, 8, where))
            s.data = _from_bytes(_read_exact(f, numel * s.dtype.itemsize, where), s.dtype, "<", numel, where)
        for s in storages.values():
            if s.data is None:
                raise CheckpointError(f"{where}: storage data missing: the file is truncated")
    _resolve_views(obj)
    return obj


def _resolve_views(obj) -> None:
    """Legacy views: a tensor on a part of a root storage reads the root's elements."""
    if not isinstance(obj, dict):
        return
    for value in obj.values():
        s = getattr(value, "storage", None)
        root = getattr(s, "root", None)
        if root is not None and s.data is None:
            s.data = root.data[s.view_offset: s.view_offset + s.numel]


def _read_exact(f, n: int, where: str) -> bytes:
    data = f.read(n)
    if len(data) != n:
        raise CheckpointError(f"{where}: ends early ({len(data)} of {n} bytes): the file is truncated")
    return data


class _PlainUnpickler(pickle.Unpickler):
    """For the legacy header and key list: plain data only, no callables at all."""

    def __init__(self, file, where):
        super().__init__(file)
        self.where = where

    def find_class(self, module, name):
        raise CheckpointError(f"{self.where}: refusing to load {module}.{name} from a checkpoint header")


def _plain_load(f, where: str):
    return _PlainUnpickler(f, where).load()
