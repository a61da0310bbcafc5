"""A stand-in for an engine's missing compiled-ops module (``mmcv._ext``, ``detectron2._C``).

The engines are installed here without their compiled extensions (none of the models we run
calls one), but their imports reach the extension module. :func:`compiled_ops_stub` builds a
module that answers every attribute with a function raising :class:`MissingCompiledOp` naming
the op, plus the few plain attributes an engine asks for at import time. Each engine's compat
module installs it in ``sys.modules`` only while that engine runs.
"""

from __future__ import annotations

import importlib.machinery
import types

STUB_MARK = "__mocobench_stub__"


class MissingCompiledOp(RuntimeError):
    """An op of an engine's compiled extension was called, and this install has none."""


def compiled_ops_stub(name: str, advice: str, **attrs) -> types.ModuleType:
    """Module ``name``: ``attrs`` as given; any other attribute is an op that raises
    ``MissingCompiledOp("<name>.<op> is a compiled op, and <advice>")`` when called."""
    mod = types.ModuleType(name, "mocobench stub: an engine's compiled ops are not installed")
    # without a spec, pkgutil and importlib.util.find_spec(name) raise ValueError
    mod.__spec__ = importlib.machinery.ModuleSpec(name, None)
    setattr(mod, STUB_MARK, True)
    for key, value in attrs.items():
        setattr(mod, key, value)

    def __getattr__(op: str):
        if op.startswith("__"):
            raise AttributeError(op)

        def missing(*args, **kwargs):
            raise MissingCompiledOp(f"{name}.{op} is a compiled op, and {advice}")

        missing.__name__ = missing.__qualname__ = op
        return missing

    mod.__getattr__ = __getattr__
    return mod


def is_stub(module: types.ModuleType | None) -> bool:
    return bool(getattr(module, STUB_MARK, False))
