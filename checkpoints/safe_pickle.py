"""Reading checkpoint files without running code from them.

Every checkpoint file goes through :func:`read_file`, which sniffs the container from the first
bytes (never from the file name) and reads it safely:

- torch zip files and legacy torch files: ``torch.load(weights_only=True)``; the few harmless
  non-tensor types that other projects pickle into their metadata are admitted through
  ``torch.serialization.safe_globals`` (the allowlist below). There is no fallback to
  ``weights_only=False``.
- plain pickles (detectron2 ``.pkl``): a restricted :class:`pickle.Unpickler` whose ``find_class``
  admits numpy array reconstruction and plain containers only.
- safetensors: ``safetensors.torch.load_file`` (no pickle at all).

In both pickle readers a numpy array may not be larger than the file (its data are the file's
bytes) and may not hold Python objects. A file that pickles anything else is refused with a message
naming the offending global; its payload never runs. A truncated or corrupt file is a
:class:`CheckpointError` naming the file.
"""

from __future__ import annotations

import _compat_pickle
import argparse
import collections
import codecs
import functools
import json
import operator
import pickle
import struct
from pathlib import Path
from typing import Any

import numpy as np
import torch

from mocobench.checkpoints.errors import CheckpointError
from mocobench.core.io import one_line

ZIP_MAGIC = b"PK\x03\x04"
# The first object of a legacy (pre-1.6, non-zip) torch file.
TORCH_LEGACY_MAGIC = 0x1950A86A20F9469CFC6C


class InertRecord:
    """Stand-in for an allowlisted metadata class: keeps the pickled ``__dict__``, runs nothing."""

    _pickled_as = ""

    def __setstate__(self, state):
        self.__dict__.update(state if isinstance(state, dict) else {"state": state})

    def __repr__(self) -> str:
        return f"<{self._pickled_as} (inert copy)>"


def _inert(qualname: str) -> type:
    return type(qualname.rsplit(".", 1)[-1], (InertRecord,), {"_pickled_as": qualname})


class Refused(Exception):
    """An allocation the file's own bytes cannot back (``bytearray(2**56)`` is 44 bytes of pickle),
    or a numpy array that is not one of numbers. Not an ``UnpicklingError``: torch.load would reword
    that one."""


class _CheckedArray(np.ndarray):
    """What our ``_reconstruct`` builds in place of a plain ndarray, so that the ``__setstate__`` the
    pickle then calls is checked first: numpy reads an object array's state (a list) without
    checking its length against the shape, and crashes the process on a short one. Object arrays
    are refused; every other dtype's state is bytes of the file, whose length numpy checks.
    :func:`read_file` turns these back into plain ndarrays."""

    def __setstate__(self, state):
        dtype = state[-3] if isinstance(state, tuple) and len(state) >= 4 else None
        if not isinstance(dtype, np.dtype):
            raise Refused(f"a numpy array whose pickled state is not (shape, dtype, order, data): {type(state).__name__}")
        if dtype.hasobject:
            raise Refused(f"a numpy object array (dtype {dtype}); only arrays of numbers are read")
        super().__setstate__(state)


class _NdarrayName:
    """What the name ``numpy.ndarray`` gives in a pickle: only ``_reconstruct``'s first argument.
    Called or instantiated (``ndarray((N,), 'f4')``) it would allocate N elements that the file does
    not hold, so that is refused."""

    def __new__(cls, *args, **kwargs):
        raise Refused("numpy.ndarray(...) called directly (a pickled ndarray is rebuilt by _reconstruct)")


def _nbytes(dtype: Any, shape: Any) -> int:
    """Bytes of an array of ``dtype`` and ``shape``, in every form a pickle can give them: a subarray
    dtype such as ``('f4', (N,))`` counts N items, numpy integers count as integers."""
    dims = shape if isinstance(shape, (tuple, list)) else (shape,)
    n = np.dtype(dtype).itemsize
    for d in dims:
        n *= operator.index(d)
    return n


def _numpy_globals(limit: int) -> dict[str, Any]:
    """numpy array / scalar / dtype reconstruction under both numpy 1 and numpy 2 module names, each
    constructor that can size an allocation refusing one larger than ``limit`` bytes (the file's
    size). A real pickle carries an array's data as bytes, so it is never larger than the file:
    ``_reconstruct(ndarray, (0,), b"b")`` builds an empty array whose ``__setstate__`` then fills in
    the pickled bytes; protocol 5 pickles ``_frombuffer(bytes, dtype, shape, order)``."""
    from numpy._core import multiarray, numeric

    def check(nbytes: int, what: str) -> None:
        if nbytes < 0 or nbytes > limit:
            raise Refused(f"{what} would allocate {nbytes} bytes, more than the file's {limit}")

    def reconstruct(subtype, shape, dtype, *rest):
        if subtype is not _NdarrayName:
            raise Refused(f"_reconstruct of {subtype!r}: only numpy.ndarray is rebuilt")
        check(_nbytes(dtype, shape), f"a numpy array of shape {shape!r} and dtype {dtype!r}")
        return multiarray._reconstruct(_CheckedArray, shape, dtype, *rest)

    def frombuffer(buf, dtype, shape, order):
        if not isinstance(buf, (bytes, bytearray, memoryview, pickle.PickleBuffer)):
            raise Refused(f"_frombuffer of a {type(buf).__name__}, not a buffer")
        if np.dtype(dtype).hasobject:
            raise Refused(f"a numpy object array (dtype {dtype}); only arrays of numbers are read")
        check(_nbytes(dtype, shape), f"a numpy array of shape {shape!r} and dtype {dtype!r}")
        return numeric._frombuffer(buf, dtype, shape, order)

    names: dict[str, Any] = {}
    for mod in ("numpy.core", "numpy._core"):
        names[f"{mod}.multiarray._reconstruct"] = reconstruct
        names[f"{mod}.multiarray.scalar"] = multiarray.scalar   # sized by its bytes, which the file holds
        names[f"{mod}.numeric._frombuffer"] = frombuffer
    names["numpy.ndarray"] = _NdarrayName
    names["numpy.dtype"] = np.dtype
    for dtype_cls in vars(np.dtypes).values():  # numpy >= 1.25 pickles dtypes as numpy.dtypes.*DType
        if isinstance(dtype_cls, type) and issubclass(dtype_cls, np.dtype):
            names[f"numpy.dtypes.{dtype_cls.__name__}"] = dtype_cls
    return names


# Non-tensor types that third-party checkpoints carry in their metadata and that we admit. Each is
# data only: numpy arrays/scalars (mmengine, timm), argparse.Namespace (DINO, PyContrast and the
# official MoCo v3 store their command-line ``args``), and mmengine's ``HistoryBuffer`` (the logger
# state in ``meta.message_hub``), which is read into an inert stand-in since mmengine is not a
# dependency. Anything else is refused. ``limit`` bounds numpy's allocations (the file's size).
def torch_allowlist(limit: int = 0) -> list[tuple[Any, str]]:
    allowed = [(obj, name) for name, obj in _numpy_globals(limit).items()]
    # torch builds (BUILD) only allowlisted types; the name has no dot, so no pickle can name it
    allowed.append((_CheckedArray, "mocobench-checked-ndarray"))
    allowed.append((argparse.Namespace, "argparse.Namespace"))
    for name in ("mmengine.logging.history_buffer.HistoryBuffer",):
        allowed.append((_inert(name), name))
    return allowed


def pickle_allowlist(limit: int) -> dict[str, Any]:
    """What the restricted ``.pkl`` unpickler admits: numpy arrays and plain containers, bounded by
    ``limit`` bytes."""
    def bounded_bytearray(*args):
        try:
            n = operator.index(args[0]) if args else 0
        except TypeError:   # bytearray(b"..."), bytearray("...", "latin1"): sized by the file's bytes
            n = 0
        if n > limit:
            raise Refused(f"bytearray({n}) would allocate {n} bytes, more than the file's {limit}")
        return bytearray(*args)

    return {
        **_numpy_globals(limit),
        "collections.OrderedDict": collections.OrderedDict,
        "builtins.set": set,
        "builtins.frozenset": frozenset,
        "builtins.bytearray": bounded_bytearray,
        "_codecs.encode": codecs.encode,  # how protocol-2 pickles spell bytes
    }


def _plain_arrays(obj: Any) -> Any:
    """``obj`` with every :class:`_CheckedArray` in its dicts, lists and namespaces a plain ndarray
    again, in place (iteratively: a pickle can nest deeper than Python's recursion limit)."""
    if isinstance(obj, _CheckedArray):
        return obj.view(np.ndarray)
    stack, seen = [obj], set()
    while stack:
        o = stack.pop()
        if id(o) in seen:
            continue
        seen.add(id(o))
        if isinstance(o, dict):
            items, put = list(o.items()), o.__setitem__
        elif isinstance(o, list):
            items, put = list(enumerate(o)), o.__setitem__
        elif isinstance(o, (argparse.Namespace, InertRecord)):
            items, put = list(vars(o).items()), functools.partial(setattr, o)
        else:
            if isinstance(o, tuple):
                stack.extend(o)
            continue
        for k, v in items:
            if isinstance(v, _CheckedArray):
                put(k, v.view(np.ndarray))
            else:
                stack.append(v)
    return obj


class RestrictedUnpickler(pickle.Unpickler):
    def __init__(self, file, *, limit: int, **kwargs):
        super().__init__(file, **kwargs)
        self._allowed = pickle_allowlist(limit)

    def find_class(self, module: str, name: str):
        # Python-2 names (protocol <= 2 pickles): __builtin__.set -> builtins.set, as pickle does
        if (module, name) in _compat_pickle.NAME_MAPPING:
            module, name = _compat_pickle.NAME_MAPPING[(module, name)]
        module = _compat_pickle.IMPORT_MAPPING.get(module, module)
        key = f"{module}.{name}"
        if key in self._allowed:
            return self._allowed[key]
        raise pickle.UnpicklingError(f"global {key!r} is not allowed (only numpy arrays and plain "
                                     "containers are)")


def _refused(path: Path, what: str) -> CheckpointError:
    return CheckpointError(
        f"{path}: refused to load: the file pickles {what}, which could run code on load. Only "
        "tensors, numpy arrays, plain containers and the allowlisted metadata types in "
        "checkpoints/safe_pickle.py are read. If you trust the file, re-save its state dict with "
        "plain tensors (torch.save(obj['state_dict'], ...)).")


def sniff(path: Path) -> str:
    """``torch-zip`` | ``safetensors`` | ``pickle`` from the first bytes."""
    with open(path, "rb") as f:
        head = f.read(16)
    if not head:
        raise CheckpointError(f"{path}: the file is empty")
    if head.startswith(ZIP_MAGIC):
        return "torch-zip"
    # safetensors: 8-byte little-endian header length, then a JSON header. Checked before pickle:
    # the length's first byte can be 0x80.
    if len(head) >= 9:
        (n,) = struct.unpack("<Q", head[:8])
        if head[8:9] == b"{" and 8 + n <= path.stat().st_size:
            return "safetensors"
    if head[:1] == b"\x80" and head[1:2] in (b"\x02", b"\x03", b"\x04", b"\x05"):
        return "pickle"  # pickle protocol 2-5 (legacy torch files start with a pickle too)
    raise CheckpointError(f"{path}: not a checkpoint file (neither a torch zip file, a pickle nor "
                          f"safetensors; first bytes {head[:8]!r})")


def load_torch(path: Path) -> Any:
    try:
        with torch.serialization.safe_globals(torch_allowlist(limit=path.stat().st_size)):
            return torch.load(path, map_location="cpu", weights_only=True)
    except Refused as e:
        raise CheckpointError(f"{path}: refused to load: {e}; a corrupt or hostile file") from None
    except pickle.UnpicklingError as e:
        text = str(e)
        if "Weights only load failed" in text or "Unsupported global" in text or "not an allowed global" in text:
            culprit = _unsafe_globals(path) or _first_line_with(text, "GLOBAL") or text.splitlines()[0]
            raise _refused(path, culprit) from None
        raise CheckpointError(f"{path}: corrupt or truncated torch file ({text.splitlines()[0]})") from None
    except Exception as e:  # noqa: BLE001 - torch raises RuntimeError/EOFError/... for bad files
        first = (str(e).splitlines() or [""])[0]
        raise CheckpointError(f"{path}: corrupt or truncated torch file ({type(e).__name__}: {first})") from None


def _unsafe_globals(path: Path) -> str:
    try:
        names = torch.serialization.get_unsafe_globals_in_checkpoint(path)
    except Exception:  # noqa: BLE001 - only a nicer message; legacy files are not supported by it
        return ""
    allowed = {name for _, name in torch_allowlist()}
    names = [n for n in names if n not in allowed]
    return ", ".join(names)


def _first_line_with(text: str, needle: str) -> str:
    return next((line.strip() for line in text.splitlines() if needle in line), "")


def load_pickle(path: Path) -> Any:
    """A plain pickle (detectron2 ``.pkl``) through :class:`RestrictedUnpickler`."""
    try:
        with open(path, "rb") as f:
            # latin1: detectron2/Caffe2 model-zoo pickles were written by Python 2 (numpy bytes).
            return RestrictedUnpickler(f, limit=path.stat().st_size, encoding="latin1").load()
    except Refused as e:
        raise CheckpointError(f"{path}: refused to load: {e}; a corrupt or hostile pickle") from None
    except pickle.UnpicklingError as e:
        if "is not allowed" in str(e):
            raise _refused(path, str(e).split(" is not allowed")[0]) from None
        raise CheckpointError(f"{path}: corrupt or truncated pickle ({one_line(e)})") from None
    except (EOFError, ValueError, TypeError, AttributeError, IndexError, struct.error, OverflowError) as e:
        raise CheckpointError(f"{path}: corrupt or truncated pickle ({type(e).__name__}: {one_line(e)})") from None
    except MemoryError:
        # an allocation the bounded constructors do not see (a huge length in some other opcode)
        raise CheckpointError(f"{path}: refused to load: the pickle asks for more memory than there is; "
                              "a corrupt or hostile pickle") from None


def load_safetensors(path: Path) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    from safetensors import safe_open

    try:
        with safe_open(str(path), framework="pt") as f:
            meta = dict(f.metadata() or {})
            state = {k: f.get_tensor(k) for k in f.keys()}
    except Exception as e:  # noqa: BLE001 - safetensors raises its own error types
        raise CheckpointError(f"{path}: corrupt or truncated safetensors file "
                              f"({type(e).__name__}: {one_line(e)})") from None
    return state, meta


def read_file(path: str | Path) -> tuple[Any, str]:
    """``(object, container)``: the file's contents, read safely, and how they were stored.

    safetensors files come back as ``{"__safetensors__": state, "__metadata__": {str: str}}``.
    """
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: no such checkpoint file")
    container = sniff(path)
    if container == "torch-zip":
        return _plain_arrays(load_torch(path)), container
    if container == "safetensors":
        state, meta = load_safetensors(path)
        return {"__safetensors__": state, "__metadata__": meta}, container
    # A pickle: either a legacy torch file (its first pickled object is torch's magic number) or a
    # plain pickle. The restricted unpickler reads the first object either way, safely.
    first = load_pickle(path)
    # isinstance first: ``==`` on a numpy array (a pickled array) is elementwise, not a bool
    if isinstance(first, int) and first == TORCH_LEGACY_MAGIC:
        return _plain_arrays(load_torch(path)), "torch-legacy"
    return _plain_arrays(first), container


def decode_json_metadata(meta: dict[str, str], key: str) -> Any:
    try:
        return json.loads(meta[key]) if key in meta else None
    except json.JSONDecodeError:
        return meta[key]
