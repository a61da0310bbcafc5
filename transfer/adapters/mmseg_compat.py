"""What MMSegmentation 1.2.2 needs from this environment, applied only while the engine runs.

Both patches are context managers that :mod:`mocobench.transfer.segmentation.mmseg_engine` enters around
its work and that undo themselves on exit; importing this module changes nothing.

1. :func:`mmcv_ops_stub` -- mmcv-lite (the pure-Python mmcv wheel) has no compiled ops, but
   mmseg's imports reach ``mmcv.ops``, whose modules call ``ext_loader.load_ext("_ext", [...])``
   (import ``mmcv._ext`` and check that each named function exists). FCN on a ResNet never calls
   one. The stub (``mocobench.transfer.adapters.compiled_ops_stub``) answers every attribute with a function
   that raises a clear error if called, and has the ``__spec__`` that mmengine's
   ``Runner.from_cfg`` needs (it walks modules with pkgutil, which fails on a module without one). When a full mmcv with real ops is installed, nothing is stubbed.
2. :func:`trusted_checkpoints` -- mmengine saves its resumable checkpoints with pickled Python
   objects (message hub, history buffers, numpy arrays) and reads them with a bare ``torch.load``,
   which under torch >= 2.6 means ``weights_only=True`` and fails on resume. Instead of patching
   ``torch.load`` (process-wide), this registers a loader in mmengine's own ``CheckpointLoader``
   table for the given paths only (this run's work dir, the file named by ``--resume``): those
   are unpickled with ``weights_only=False``; every other path keeps mmengine's default loader.
"""

from __future__ import annotations

import contextlib
import importlib.util
import os
import re
import sys
from pathlib import Path

from mocobench.transfer.adapters.compiled_ops_stub import compiled_ops_stub, is_stub

EXT = "mmcv._ext"


def _has_real_ops() -> bool:
    if EXT in sys.modules:
        return not is_stub(sys.modules[EXT])
    try:
        return importlib.util.find_spec(EXT) is not None
    except (ImportError, ValueError):
        return False


@contextlib.contextmanager
def mmcv_ops_stub():
    """Within the block, ``import mmcv._ext`` gives the stub unless the real ops are installed."""
    if _has_real_ops() or EXT in sys.modules:
        yield
        return
    stub = compiled_ops_stub(EXT, "mmcv-lite has none (mocobench stubs mmcv._ext so that MMSegmentation "
                                  "imports; FCN on a ResNet calls no op). This model needs the full mmcv "
                                  "wheel built for this torch/CUDA.")
    sys.modules[EXT] = stub
    try:
        yield
    finally:
        # mmseg modules imported meanwhile keep their reference; a later run installs it again
        if sys.modules.get(EXT) is stub:
            del sys.modules[EXT]


def load_from_this_run(filename, map_location):
    # mmengine logs "Loads checkpoint by <name[10:]> backend": "this_run"
    import torch

    return torch.load(filename, map_location=map_location, weights_only=False)


@contextlib.contextmanager
def trusted_checkpoints(folders: list[str | os.PathLike], files: list[str | os.PathLike] = ()):
    """Within the block, mmengine unpickles checkpoints under ``folders`` and the exact ``files``
    with ``weights_only=False``; any other path goes to mmengine's usual loader.

    mmengine picks a loader by ``re.match(prefix, path)`` over its table, so the prefixes are
    escaped absolute paths (mmengine is given absolute paths: the work dir is resolved).
    """
    from mmengine.runner.checkpoint import CheckpointLoader

    prefixes = [re.escape(str(Path(d).resolve()) + os.sep) for d in folders]
    prefixes += [re.escape(str(Path(f).resolve())) + "$" for f in files]
    # NOTE: mmengine has no unregister; its table is the class attribute ``_schemes``
    saved = dict(CheckpointLoader._schemes)
    CheckpointLoader.register_scheme(prefixes, load_from_this_run, force=True)
    try:
        yield
    finally:
        CheckpointLoader._schemes = type(CheckpointLoader._schemes)(saved)
