"""Checkpoints in other projects' layouts, built from real torchvision/timm models (tests only).

Each builder takes the source classifier model (its classifier plays the projection head) and
returns ``(object, how)``, ``how`` in {"torch", "pickle", "safetensors"}: the object each project
saves, with its wrapper prefixes and the extra keys it carries (momentum encoders, queues, heads,
optimizer state, metadata).
"""

from __future__ import annotations

import argparse
import copy
import pickle
import sys
import types

import numpy as np
import torch
from torch import nn

from mocobench.checkpoints.keymaps import TORCHVISION_TO_DETECTRON2, apply_rules


def prefixed(state: dict, prefix: str) -> dict:
    return {prefix + k: v.clone() for k, v in state.items()}


def perturbed(state: dict, prefix: str) -> dict:
    """A second copy that differs (momentum encoders must not be what gets loaded)."""
    return {prefix + k: (v + 1 if v.is_floating_point() else v.clone()) for k, v in state.items()}


def mlp_head(dim_in: int, prefix: str) -> dict:
    head = nn.Sequential(nn.Linear(dim_in, 32), nn.ReLU(), nn.Linear(32, 16))
    return prefixed(head.state_dict(), prefix)


def optimizer_state(model: nn.Module) -> dict:
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    return opt.state_dict()


def body(model: nn.Module) -> dict:
    """The source state dict without the classifier (what the backbone must equal)."""
    return {k: v for k, v in model.state_dict().items() if not k.startswith(("fc.", "head."))}


# -- builders -----------------------------------------------------------------------------------
def own_pretrain_moco(m):
    sd = body(m)
    model = prefixed(sd, "encoder_q.") | mlp_head(8, "encoder_q.fc.") | perturbed(sd, "encoder_k.")
    model |= {"queue.keys": torch.randn(64, 16), "queue.ptr": torch.zeros(1, dtype=torch.long),
              "queue.count": torch.zeros(1, dtype=torch.long),
              "queue.labels": torch.full((64,), -1, dtype=torch.long)}
    config = {"method": "unimoco", "arch": "resnet18", "epochs": 800, "label_fraction": 0.1,
              "cifar_stem": False, "img_size": None}
    return {"format": "mocobench-pretrain", "version": 2, "method": "unimoco", "arch": "resnet18",
            "config": config, "step": 10, "epoch": 800, "batch_in_epoch": 0, "world_size": 1,
            "model": model, "optimizer": optimizer_state(m),
            "rng": {"torch": torch.get_rng_state(), "cuda": [], "python": [3, [1, 2], None]},
            "skipped_images": 0}, "torch"


def own_backbone(m):
    """checkpoints.write.save_backbone's file: the backbone under its own names and the spec it was
    built with (a ViT at 32 px: the stated img_size, not the 224 default, must be used)."""
    spec = {"arch": "timm:vit_tiny_patch16_224", "cifar_stem": False, "dilation": [False] * 3,
            "img_size": 32, "extra": {}}
    return {"format": "mocobench-backbone", "version": 1, "spec": spec, "state_dict": body(m),
            "meta": {"method": "moco_v2", "epochs": 200}}, "torch"


def own_pretrain_smog(m):
    sd = body(m)
    model = prefixed(sd, "backbone.") | perturbed(sd, "backbone_k.") | mlp_head(8, "projector.")
    model |= mlp_head(8, "projector_k.") | mlp_head(8, "predictor.")
    model |= {"groups": torch.randn(30, 16), "bank.features": torch.zeros(64, 16),
              "bank.ptr": torch.zeros(1, dtype=torch.long), "bank.count": torch.zeros(1, dtype=torch.long),
              "iteration": torch.zeros(1, dtype=torch.long)}
    return {"format": "mocobench-pretrain", "version": 2, "method": "smog", "arch": "resnet18",
            "config": {"method": "smog", "arch": "resnet18", "epochs": 400}, "step": 5, "epoch": 400,
            "model": model, "optimizer": optimizer_state(m)}, "torch"


def moco_v2(m, label_queue=False):
    # official main_moco.py: {'epoch': epoch + 1, 'arch', 'state_dict': DDP model, 'optimizer'}
    sd = body(m)
    state = prefixed(sd, "module.encoder_q.") | mlp_head(8, "module.encoder_q.fc.")
    state |= perturbed(sd, "module.encoder_k.") | mlp_head(8, "module.encoder_k.fc.")
    state |= {"module.queue": torch.randn(16, 64), "module.queue_ptr": torch.zeros(1, dtype=torch.long)}
    if label_queue:  # UniMoCo
        state["module.label_queue"] = torch.full((64,), -1, dtype=torch.long)
    return {"epoch": 200, "arch": "resnet18", "state_dict": state, "optimizer": optimizer_state(m)}, "torch"


def unimoco(m):
    return moco_v2(m, label_queue=True)


def pcl(m):
    # PCL (salesforce/PCL) keeps MoCo's builder and checkpoint layout
    return moco_v2(m)


def moco_v3(m):
    sd = body(m)
    state = prefixed(sd, "module.base_encoder.") | mlp_head(8, "module.base_encoder.head."
                                                             if "blocks.0.norm1.weight" in sd else "module.base_encoder.fc.")
    state |= perturbed(sd, "module.momentum_encoder.") | mlp_head(8, "module.predictor.")
    args = argparse.Namespace(arch="vit_small" if "blocks.0.norm1.weight" in sd else "resnet50", moco_t=0.2)
    return {"epoch": 300, "arch": args.arch, "state_dict": state, "optimizer": optimizer_state(m),
            "scaler": {"scale": 65536.0, "growth_factor": 2.0}}, "torch"


def moco_v3_linear(m):
    # MoCo v3's main_lincls.py: {'epoch': epoch + 1, 'arch', 'state_dict' (DDP: the ViT with a linear
    # head), 'best_acc1' (a tensor), 'optimizer'}
    sd = body(m)
    state = prefixed(sd, "module.") | {"module.head.weight": torch.randn(10, sd["cls_token"].shape[-1]),
                                       "module.head.bias": torch.zeros(10)}
    return {"epoch": 90, "arch": "vit_small", "state_dict": state, "best_acc1": torch.tensor(73.2),
            "optimizer": optimizer_state(m)}, "torch"


def dino(m, ddp=False):
    sd = body(m)
    p = "module." if ddp else ""
    teacher = prefixed(sd, p + "backbone.") | mlp_head(8, p + "head.mlp.")
    student = perturbed(sd, "module.backbone.") | mlp_head(8, "module.head.mlp.")
    args = argparse.Namespace(arch="vit_tiny", patch_size=16, epochs=100, out_dim=65536)
    return {"student": student, "teacher": teacher, "optimizer": optimizer_state(m), "epoch": 100,
            "args": args, "dino_loss": {"center": torch.zeros(1, 16)}}, "torch"


def dino_ddp(m):
    return dino(m, ddp=True)


def swav(m):
    # swav_800ep_pretrain.pth.tar: the DDP model's state dict itself
    sd = body(m)
    return prefixed(sd, "module.") | mlp_head(8, "module.projection_head.") | {
        "module.prototypes.weight": torch.randn(30, 16)}, "torch"


def deepcluster_v2(m):
    sd = body(m)
    state = prefixed(sd, "module.") | mlp_head(8, "module.projection_head.")
    state |= {f"module.prototypes.prototypes{i}.weight": torch.randn(30, 16) for i in range(3)}
    return {"epoch": 400, "state_dict": state, "optimizer": optimizer_state(m)}, "torch"


def pycontrast(m):
    # PyContrast (InsDis / PIRL / InfoMin): model = encoder + head, EMA model, memory bank, opt
    sd = body(m)
    model = prefixed(sd, "module.encoder.") | mlp_head(8, "module.head.")
    ema = perturbed(sd, "module.encoder.") | mlp_head(8, "module.head.")
    opt = argparse.Namespace(method="InfoMin", arch="resnet18", epochs=200)
    return {"model": model, "model_ema": ema, "contrast": {"memory": torch.randn(64, 16)},
            "optimizer": optimizer_state(m), "epoch": 200, "opt": opt}, "torch"


def solo_learn(m):
    sd = body(m)
    state = prefixed(sd, "backbone.") | perturbed(sd, "momentum_backbone.")
    state |= mlp_head(8, "projector.") | mlp_head(8, "momentum_projector.")
    state |= {"classifier.weight": torch.randn(10, 8), "classifier.bias": torch.zeros(10),
              "queue": torch.randn(2, 16, 64), "queue_ptr": torch.zeros(1, dtype=torch.long)}
    # saved by solo-learn's Checkpointer in on_train_epoch_end of the last of 400 epochs (Lightning 2:
    # current_epoch 399; the epoch is processed, not yet completed)
    progress = {"ready": 400, "started": 400, "processed": 400, "completed": 399}
    loops = {"fit_loop": {"epoch_progress": {"total": dict(progress), "current": dict(progress)},
                          "epoch_loop.batch_progress": {"is_last_batch": True}}}
    return {"epoch": 399, "global_step": 1000, "pytorch-lightning_version": "2.0.7",
            "state_dict": state, "loops": loops,
            "callbacks": {}, "optimizer_states": [optimizer_state(m)], "lr_schedulers": [{"last_epoch": 5}],
            "hyper_parameters": {"method": "mocov2plus", "max_epochs": 400,
                                 "backbone": {"name": "resnet18", "kwargs": {}}}}, "torch"


class _FakeHistoryBuffer:
    pass


def mmselfsup(m):
    # mmengine checkpoint: meta with numpy scalars and the logger's HistoryBuffer objects
    sd = body(m)
    state = prefixed(sd, "backbone.") | mlp_head(8, "neck.mlp.") | perturbed(sd, "momentum_encoder.backbone.")
    state |= mlp_head(8, "momentum_encoder.neck.mlp.")
    state |= {"queue": torch.randn(16, 64), "queue_ptr": torch.zeros(1, dtype=torch.long),
              "data_preprocessor.mean": torch.zeros(3, 1, 1)}
    buf = _fake_history_buffer()
    meta = {"epoch": 200, "iter": 1000, "mmengine_version": "0.7.0", "mmselfsup_version": "1.0.0",
            "seed": np.int64(0), "lr": np.float64(0.03),
            "message_hub": {"log_scalars": {"train/loss": buf}, "runtime_info": {"epoch": 200}}}
    return {"meta": meta, "state_dict": state, "optimizer": optimizer_state(m),
            "param_schedulers": [{"last_step": 5}]}, "torch"


def mmselfsup_0x(seq: str, momentum: str | None, extra: dict | None = None):
    """OpenSelfSup / mmselfsup 0.x: ``<seq> = Sequential(backbone, neck)`` and ``self.backbone =
    <seq>[0]``, so every backbone tensor is saved twice (``<seq>.0.*`` and ``backbone.*``), the neck
    too (``<seq>.1.*``, ``neck.*``); mmselfsup 1.x's MoCo v3 (``base_encoder``) saves the same."""
    def build(m):
        sd = body(m)
        neck = mlp_head(8, "")
        state = prefixed(sd, seq + ".0.") | prefixed(neck, seq + ".1.") | prefixed(sd, "backbone.")
        state |= prefixed(neck, "neck.")
        if momentum:
            state |= perturbed(sd, momentum + ".0.") | prefixed(neck, momentum + ".1.")
        state |= extra or {}
        return {"meta": {"epoch": 200, "iter": 1000, "mmselfsup_version": "0.9.1"}, "state_dict": state,
                "optimizer": optimizer_state(m)}, "torch"
    return build


MM_0X_QUEUES = {"queue": torch.randn(16, 64), "queue_ptr": torch.zeros(1, dtype=torch.long)}
MM_0X_PREDICTOR = mlp_head(16, "head.predictor.mlp.")


STANDIN = "__mocobench_test_standin__"


def _fake_history_buffer():
    """An object pickled as mmengine.logging.history_buffer.HistoryBuffer: the real class where
    mmengine is installed (the engine tests need the real package, so no stand-in may shadow it),
    else a stand-in registered under that name (``STANDIN`` marks it: tests/conftest.py removes it
    from ``sys.modules`` after the test, so it never shadows the real package's absence)."""
    try:
        from mmengine.logging.history_buffer import HistoryBuffer as cls
    except ImportError:
        name = "mmengine.logging.history_buffer"
        for part in ("mmengine", "mmengine.logging", name):
            if part not in sys.modules:
                sys.modules[part] = types.ModuleType(part)
                setattr(sys.modules[part], STANDIN, True)
        cls = type("HistoryBuffer", (), {"__module__": name})
        sys.modules[name].HistoryBuffer = cls
    buf = cls.__new__(cls)
    buf._log_history = np.array([1.0, 2.0])
    buf.max_length = 1000000
    return buf


def vissl(m):
    sd = body(m)
    heads = {"0.clf.0.weight": torch.randn(10, 8)}
    model = {"trunk": prefixed(sd, "_feature_blocks."), "heads": heads}
    return {"phase_idx": 199, "iteration": 1000, "train_phase_idx": 199, "iteration_num": 1000,
            "loss": {}, "classy_state_dict": {"train": True, "base_model": {"model": model, "meta": {}},
                                              "meta": {}, "optimizer": optimizer_state(m)}}, "torch"


def detectron2_moco_converter(m):
    # MoCo's convert-pretrain-to-detectron2.py output: numpy arrays, fc kept as stem.fc.*, no
    # num_batches_tracked written by older torch
    sd = {k: v for k, v in m.state_dict().items() if not k.endswith("num_batches_tracked")}
    model = {apply_rules(k, TORCHVISION_TO_DETECTRON2): v.numpy() for k, v in sd.items()}
    return {"model": model, "__author__": "MOCO", "matching_heuristics": True}, "pickle"


def safetensors_plain(m):
    # e.g. a Hugging Face export of a torchvision model, DDP prefix included
    return prefixed(body(m), "module."), "safetensors"


def torchvision_plain(m):
    return dict(m.state_dict()), "torch"


def timm_train_checkpoint(m):
    # timm's train.py checkpoint: {'epoch', 'arch', 'state_dict', 'optimizer', 'version', ...}
    return {"epoch": 299, "arch": "vit_tiny_patch16_224", "state_dict": dict(m.state_dict()),
            "optimizer": optimizer_state(m), "version": 2, "metric": 71.2}, "torch"


# layout -> (builder, source model "resnet" | "vit", expected format, reasons that must be reported)
LAYOUTS = {
    "mocobench-backbone": (own_backbone, "vit", "mocobench-backbone", set()),
    "mocobench-pretrain-unimoco": (own_pretrain_moco, "resnet", "mocobench-pretrain",
                                   {"momentum encoder (encoder_k)", "queue (and its pointer)", "label queue",
                                    "optimizer state"}),
    "mocobench-pretrain-smog": (own_pretrain_smog, "resnet", "mocobench-pretrain",
                                {"momentum encoder (backbone_k)", "SMoG group features", "projection head"}),
    "moco-v2": (moco_v2, "resnet", "moco", {"momentum encoder (encoder_k)", "queue (and its pointer)",
                                             "optimizer state", "head (classifier / projection MLP)"}),
    "unimoco": (unimoco, "resnet", "moco", {"label queue", "momentum encoder (encoder_k)"}),
    "pcl": (pcl, "resnet", "moco", {"momentum encoder (encoder_k)"}),
    "moco-v3-resnet": (moco_v3, "resnet", "moco-v3", {"momentum encoder", "predictor MLP",
                                                      "head (classifier / projection MLP)", "AMP grad-scaler state"}),
    "moco-v3-vit": (moco_v3, "vit", "moco-v3", {"momentum encoder", "head (classifier / projection MLP)"}),
    "moco-v3-linear-vit": (moco_v3_linear, "vit", "moco-v3-linear", {"head (classifier / projection MLP)",
                                                                      "optimizer state"}),
    "dino-resnet": (dino_ddp, "resnet", "dino", {"DINO projection head", "student network (DINO evaluates the teacher)",
                                                  "DINO loss state (center)"}),
    "dino-vit": (dino, "vit", "dino", {"DINO projection head", "student network (DINO evaluates the teacher)"}),
    "swav": (swav, "resnet", "swav", {"projection head", "prototypes"}),
    "deepcluster-v2": (deepcluster_v2, "resnet", "swav", {"projection head", "prototypes", "optimizer state"}),
    "pycontrast-infomin": (pycontrast, "resnet", "pycontrast", {"projection head", "momentum (EMA) encoder",
                                                                 "memory bank / contrast state"}),
    "solo-learn": (solo_learn, "resnet", "solo-learn", {"momentum encoder", "projection head", "online linear classifier",
                                                          "queue (and its pointer)", "optimizer state"}),
    "mmselfsup": (mmselfsup, "resnet", "mmpretrain", {"neck (projection)", "momentum encoder",
                                                       "queue (and its pointer)", "data preprocessor buffers"}),
    "mmselfsup-0.x-moco": (mmselfsup_0x("encoder_q", "encoder_k", MM_0X_QUEUES), "resnet", "mmselfsup-0.x",
                           {"momentum encoder", "queue (and its pointer)", "neck (projection)"}),
    "mmselfsup-0.x-byol": (mmselfsup_0x("online_net", "target_net", MM_0X_PREDICTOR), "resnet", "mmselfsup-0.x",
                           {"momentum encoder", "head", "neck (projection)"}),
    "mmselfsup-0.x-simsiam": (mmselfsup_0x("encoder", None, MM_0X_PREDICTOR), "resnet", "mmselfsup-0.x",
                              {"head", "neck (projection)"}),
    "mmselfsup-1.x-mocov3": (mmselfsup_0x("base_encoder", "momentum_encoder.module", MM_0X_PREDICTOR), "resnet",
                             "mmselfsup-0.x", {"momentum encoder", "head", "neck (projection)"}),
    "vissl": (vissl, "resnet", "vissl", {"heads"}),
    "detectron2-pkl": (detectron2_moco_converter, "resnet", "detectron2", {"head (classifier / projection MLP)"}),
    "safetensors": (safetensors_plain, "resnet", "safetensors", set()),
    "torchvision": (torchvision_plain, "resnet", "torchvision", {"head (classifier / projection MLP)"}),
    "timm": (timm_train_checkpoint, "vit", "timm", {"head (classifier / projection MLP)", "optimizer state"}),
}


def save(obj, how: str, path) -> None:
    if how == "torch":
        torch.save(obj, path)
    elif how == "pickle":
        with open(path, "wb") as f:
            pickle.dump(obj, f, protocol=2)
    else:
        from safetensors.torch import save_file

        save_file({k: v.contiguous() for k, v in obj.items()}, str(path))


def delete_key(obj, key: str) -> bool:
    """Remove ``key`` wherever it sits in the nested checkpoint object (every occurrence: DINO's
    student and teacher share names)."""
    if not isinstance(obj, dict):
        return False
    found = obj.pop(key, None) is not None
    return any([delete_key(v, key) for v in obj.values()]) or found


def deep_copy(obj):
    return copy.deepcopy(obj)
