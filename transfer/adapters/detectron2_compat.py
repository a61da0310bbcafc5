"""The four compatibility patches detectron2 v0.6 needs with today's libraries, applied only
while the engine runs.

detectron2 here is v0.6's Python package from the ``pb1-detectron2==0.6`` sdist (see
``tools/engines/detectron2.sh``): no compiled ``detectron2._C``, written for Pillow < 10 and
numpy < 1.24. :func:`patched` applies the patches for the duration of a ``with`` block and undoes
them on exit, so importing mocobench (or running ``--engine torchvision``) never changes numpy,
Pillow or ``sys.modules``. The detectron2 modules imported inside the block keep what they
bound at import time (a default argument, the stub ``_C``); nothing outside detectron2 does.

1. ``PIL.Image.LINEAR``: removed in Pillow 10; ``detectron2.data.transforms.transform`` uses it
   as a default argument at import time. Restored as an alias of ``Image.BILINEAR`` (what
   ``LINEAR`` always was).
2. ``np.str``, ``np.int``, ``np.float``, ``np.object``, ``np.bool``: the deprecated aliases of
   the builtins, removed in numpy 1.24 (``np.bool`` came back in numpy 2 as ``np.bool_``);
   detectron2 calls them at run time (VOC file ids, the VOC evaluator's ``difficult`` flags,
   bitmask decoding, the class histogram). Restored as the builtins they aliased.
3. ``detectron2._C``: the compiled extension, absent here. Imported at import time by
   ``detectron2.layers`` (rotated boxes, deformable conv) and asked for its compiler and CUDA
   version by ``collect_env`` (which ``default_setup`` logs). A stub module answers those three
   questions; any other attribute is an op we never call for R50-C4/FPN Faster/Mask R-CNN (ROIAlign
   and NMS come from torchvision) and raises :class:`MissingCompiledOp` naming it.
4. ``COCOEvaluator(use_fast_impl=...)``: the fast COCOeval is C++ in ``_C``; with the stub, use
   pycocotools' official implementation (:func:`coco_evaluator_kwargs`). The numbers are the
   same; only the speed differs.
"""

from __future__ import annotations

import builtins
import contextlib
import sys
import types

from mocobench.transfer.adapters.compiled_ops_stub import MissingCompiledOp, compiled_ops_stub, is_stub  # noqa: F401

# np.<name> -> the builtin it aliased before numpy 1.24
NUMPY_ALIASES = {"str": builtins.str, "int": builtins.int, "float": builtins.float,
                 "object": builtins.object, "bool": builtins.bool}


def _stub_c_module() -> types.ModuleType:
    version = "none (detectron2._C not built; mocobench stub)"
    return compiled_ops_stub(
        "detectron2._C", "this detectron2 has no compiled ops (installed by tools/engines/detectron2.sh). "
        "The R50-C4/FPN Faster and Mask R-CNN configs never call one; a config that does needs a "
        "detectron2 built from source.",
        get_compiler_version=lambda: version, get_cuda_version=lambda: version, has_cuda=lambda: False)


def has_compiled_ops() -> bool:
    """True when a real (compiled) ``detectron2._C`` can be imported."""
    mod = sys.modules.get("detectron2._C")
    if mod is not None:
        return not is_stub(mod)
    try:
        import detectron2._C  # noqa: F401
    except ImportError:
        return False
    return True


def coco_evaluator_kwargs() -> dict:
    """Patch 4: keyword arguments for ``COCOEvaluator`` (the official COCOeval without ``_C``)."""
    return {} if has_compiled_ops() else {"use_fast_impl": False}


@contextlib.contextmanager
def patched():
    """Apply patches 1-3 inside the block (re-entrant); undo them on exit."""
    import numpy as np
    from PIL import Image

    undo = []
    if not hasattr(Image, "LINEAR"):  # 1
        Image.LINEAR = Image.BILINEAR
        undo.append(lambda: delattr(Image, "LINEAR"))
    for name, alias in NUMPY_ALIASES.items():  # 2
        if name not in np.__dict__:
            setattr(np, name, alias)
            undo.append(lambda name=name: np.__dict__.pop(name, None))
    if not has_compiled_ops() and "detectron2._C" not in sys.modules:  # 3
        stub = _stub_c_module()
        sys.modules["detectron2._C"] = stub
        import detectron2

        detectron2._C = stub  # `from detectron2 import _C` reads the package attribute
        undo.append(lambda: (sys.modules.pop("detectron2._C", None), detectron2.__dict__.pop("_C", None)))
    try:
        yield
    finally:
        for step in reversed(undo):
            step()
