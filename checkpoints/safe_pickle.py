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

A file that pickles anything else is refused with a message naming the offending global; its
payload never runs. A truncated or corrupt file is a :class:`CheckpointError` naming the file.
"""

from __future__ import annotations

import _compat_pickle
import argparse
import collections
import codecs
import json
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


def _numpy_globals() -> dict[str, Any]:
    """numpy array / scalar / dtype reconstruction under both numpy 1 and numpy 2 module names."""
    from numpy._core import multiarray

    names = {}
    for mod in ("numpy.core.multiarray", "numpy._core.multiarray"):
        names[f"{mod}._reconstruct"] = multiarray._reconstruct
        names[f"{mod}.scalar"] = multiarray.scalar
    names["numpy.ndarray"] = np.ndarray
    names["numpy.dtype"] = np.dtype
    for dtype_cls in vars(np.dtypes).values():  # numpy >= 1.25 pickles dtypes as numpy.dtypes.*DType
        if isinstance(dtype_cls, type) and issubclass(dtype_cls, np.dtype):
            names[f"numpy.dtypes.{dtype_cls.__name__}"] = dtype_cls
    return names


# Non-tensor types that third-party checkpoints carry in their metadata and that we admit. Each is
# data only: numpy arrays/scalars (mmengine, timm), argparse.Namespace (DINO, PyContrast and the
# official MoCo v3 store their command-line ``args``), and mmengine's ``HistoryBuffer`` (the logger
# state in ``meta.message_hub``), which is read into an inert stand-in since mmengine is not a
# dependency. Anything else is refused.
def torch_allowlist() -> list[tuple[Any, str]]:
    allowed = [(obj, name) for name, obj in _numpy_globals().items()]
    allowed.append((argparse.Namespace, "argparse.Namespace"))
    for name in ("mmengine.logging.history_buffer.HistoryBuffer",):
        allowed.append((_inert(name), name))
    return allowed


# What the restricted ``.pkl`` unpickler admits: numpy arrays and plain containers.
PICKLE_ALLOWLIST: dict[str, Any] = {
    **_numpy_globals(),
    "collections.OrderedDict": collections.OrderedDict,
    "builtins.set": set,
    "builtins.frozenset": frozenset,
    "builtins.bytearray": bytearray,
    "_codecs.encode": codecs.encode,  # how protocol-2 pickles spell bytes
}


class TooLarge(pickle.UnpicklingError):
    """An allocation the file's own bytes cannot back (``bytearray(2**56)`` is 44 bytes of pickle)."""


def _bounded(limit: int) -> dict[str, Any]:
    """Allowlisted constructors whose arguments can size an allocation, refusing any larger than
    ``limit`` bytes (the file's size). A real pickle carries its data as bytes, so whatever it builds
    is no larger than the file: ``bytearray(b"...")``, and numpy's ``_reconstruct(ndarray, (0,),
    b"b")`` whose ``__setstate__`` then fills in the pickled bytes."""
    def check(nbytes: int, what: str) -> None:
        if nbytes > limit:
            raise TooLarge(f"{what} would allocate {nbytes} bytes, more than the file's {limit}")

    def bounded_bytearray(*args):
        if args and isinstance(args[0], int):
            check(args[0], f"bytearray({args[0]})")
        return bytearray(*args)

    def bounded_reconstruct(reconstruct):
        def call(subtype, shape, dtype, *rest):
            dims = shape if isinstance(shape, (tuple, list)) else (shape,)
            n = np.dtype(dtype).itemsize if isinstance(dtype, (str, bytes, np.dtype)) else 1
            for d in dims:
                n *= int(d) if isinstance(d, int) else 1
            check(n, f"a numpy array of shape {tuple(dims)}")
            return reconstruct(subtype, shape, dtype, *rest)
        return call

    out: dict[str, Any] = {"builtins.bytearray": bounded_bytearray}
    for key, obj in PICKLE_ALLOWLIST.items():
        if key.endswith("._reconstruct"):
            out[key] = bounded_reconstruct(obj)
    return out


class RestrictedUnpickler(pickle.Unpickler):
    def __init__(self, file, *, limit: int, **kwargs):
        super().__init__(file, **kwargs)
        self._bounded = _bounded(limit)

    def find_class(self, module: str, name: str):
        # Python-2 names (protocol <= 2 pickles): __builtin__.set -> builtins.set, as pickle does
        if (module, name) in _compat_pickle.NAME_MAPPING:
            module, name = _compat_pickle.NAME_MAPPING[(module, name)]
        module = _compat_pickle.IMPORT_MAPPING.get(module, module)
        key = f"{module}.{name}"
        if key in self._bounded:
            return self._bounded[key]
        if key in PICKLE_ALLOWLIST:
            return PICKLE_ALLOWLIST[key]
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
        with torch.serialization.safe_globals(torch_allowlist()):
            return torch.load(path, map_location="cpu", weights_only=True)
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
    except TooLarge as e:
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
        return load_torch(path), container
    if container == "safetensors":
        state, meta = load_safetensors(path)
        return {"__safetensors__": state, "__metadata__": meta}, container
    # A pickle: either a legacy torch file (its first pickled object is torch's magic number) or a
    # plain pickle. The restricted unpickler reads the first object either way, safely.
    first = load_pickle(path)
    # isinstance first: ``==`` on a numpy array (a pickled array) is elementwise, not a bool
    if isinstance(first, int) and first == TORCH_LEGACY_MAGIC:
        return load_torch(path), "torch-legacy"
    return first, container


def decode_json_metadata(meta: dict[str, str], key: str) -> Any:
    try:
        return json.loads(meta[key]) if key in meta else None
    except json.JSONDecodeError:
        return meta[key]
