"""The registry of pretraining methods: a dict literal, one entry per ``--method``.

Each entry names the method's builder (config -> ``nn.Module``), its training step (model or its
DDP wrapper, list of views, labels, what ``prepare`` returned -> ``(loss, pending)``), its commit
(model, pending: the step's state writes, after the backward), its host-side preparation (model ->
keyword arguments of the step, or None), the online encoder whose body is exported as the pretrained
backbone, and the online sub-modules that get SyncBatchNorm with ``--sync_bn``.
``pretrain.fast_paths.TrainStep`` is the one place that calls them in order.
"""

from __future__ import annotations

from typing import Callable, NamedTuple

from mocobench.core.registry import Registry
from mocobench.pretrain import moco, smog, unimoco


class Method(NamedTuple):
    build: Callable
    train_step: Callable
    commit: Callable
    prepare: Callable | None
    online_encoder: Callable
    online_modules: tuple[str, ...]
    uses_labels: bool


METHODS: Registry[Method] = Registry("pretraining method", {
    "moco_v1": Method(moco.build, moco.train_step, moco.commit, None, moco.online_encoder, ("encoder_q",), False),
    "moco_v2": Method(moco.build, moco.train_step, moco.commit, None, moco.online_encoder, ("encoder_q",), False),
    "unimoco": Method(unimoco.build, unimoco.train_step, moco.commit, None, moco.online_encoder, ("encoder_q",), True),
    "smog": Method(smog.build, smog.train_step, smog.commit, smog.SMoG.prepare, smog.online_encoder,
                   ("backbone", "projector", "predictor"), False),
})
