"""One registry type: every named table of the project answers an unknown name with one error text."""

from __future__ import annotations

import pytest

from mocobench.core.registry import Registry, UnknownName


def test_lookup_names_the_kind_the_name_and_the_known_names():
    reg = Registry("detection protocol", {"a": 1, "b": 2}, also=("tiny",))
    assert reg.lookup("b") == 2 and reg["a"] == 1 and list(reg) == ["a", "b"] and len(reg) == 2
    with pytest.raises(UnknownName, match=r"^unknown detection protocol 'c' \(known: tiny, a, b\)$"):
        reg.lookup("c")
    assert isinstance(UnknownName("x"), ValueError)    # a command line answers it with exit 2
    with pytest.raises(KeyError):
        reg["c"]                                       # plain indexing keeps the mapping contract


def _project_registries():
    from mocobench.modes import MODES
    from mocobench.pretrain.config import PRESETS
    from mocobench.pretrain.methods import METHODS
    from mocobench.transfer.adapters.cli import WRITERS
    from mocobench.transfer.adapters.detectron2 import PROTOCOLS as D2
    from mocobench.transfer.adapters.mmseg import DATASETS as MM_DATASETS, MMSEG_CONFIGS
    from mocobench.transfer.classification.protocols import PROTOCOLS as CLS
    from mocobench.transfer.detection.protocols import PROTOCOLS as DET
    from mocobench.transfer.segmentation.data import DATASETS as SEG_DATASETS
    from mocobench.transfer.segmentation.model import HEADS
    from mocobench.transfer.segmentation.protocols import PROTOCOLS as SEG

    return [MODES, PRESETS, METHODS, WRITERS, D2, MM_DATASETS, MMSEG_CONFIGS, CLS, *CLS.values(), DET, SEG_DATASETS,
            HEADS, SEG, *SEG.values()]


def test_every_named_table_is_a_registry_with_the_one_error_text():
    regs = _project_registries()
    assert all(isinstance(r, Registry) for r in regs)
    for reg in regs:
        with pytest.raises(UnknownName, match=rf"^unknown {reg.kind} 'nope' \(known: .*{list(reg)[-1]}"):
            reg.lookup("nope")


def test_the_lookup_functions_use_it():
    from mocobench.pretrain.config import resolve_preset
    from mocobench.transfer.classification.protocols import get_preset
    from mocobench.transfer.detection.protocols import ProtocolError, resolve_protocol
    from mocobench.transfer.segmentation.protocols import get_protocol

    with pytest.raises(UnknownName, match="unknown preset 'nope' \\(known: tiny, tiny_vit, moco_v1_200ep"):
        resolve_preset("nope", "moco_v2")
    with pytest.raises(UnknownName, match="unknown knn protocol 'nope'"):
        get_preset("knn", "nope")
    with pytest.raises(ProtocolError, match="unknown detection protocol 'nope'"):
        resolve_protocol("nope")
    with pytest.raises(UnknownName, match="unknown dataset of segmentation protocol 'mmseg-fcn-20k' 'cityscapes' "
                                          "\\(known: voc2012\\)"):
        get_protocol("mmseg-fcn-20k", "cityscapes")
