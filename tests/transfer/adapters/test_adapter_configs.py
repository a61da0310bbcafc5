"""detectron2 YAML and MMSegmentation configs: MoCo's / mmseg's settings, self-contained."""

from __future__ import annotations

import ast

import pytest
import yaml

from mocobench.transfer.adapters import detectron2, mmseg


@pytest.mark.parametrize("protocol", list(detectron2.PROTOCOLS))
def test_detectron2_config_has_moco_settings(protocol, tmp_path):
    out = detectron2.write_detectron2_config(protocol, "/w/r50.pkl", tmp_path / "c.yaml", dataset_root="/data")
    text = out.read_text()
    assert "_BASE_" not in text and "export DETECTRON2_DATASETS=/data" in text
    cfg = yaml.safe_load(text)
    m = cfg["MODEL"]
    assert m["WEIGHTS"] == "/w/r50.pkl"
    assert m["PIXEL_MEAN"] == [123.675, 116.280, 103.530] and m["PIXEL_STD"] == [58.395, 57.120, 57.375]
    assert cfg["INPUT"]["FORMAT"] == "RGB" and cfg["INPUT"]["MIN_SIZE_TEST"] == 800
    assert m["RESNETS"]["STRIDE_IN_1X1"] is False and m["RESNETS"]["NORM"] == "naiveSyncBN"
    assert m["BACKBONE"]["FREEZE_AT"] == 0 and cfg["TEST"]["PRECISE_BN"]["ENABLED"] is True
    s = cfg["SOLVER"]
    assert (s["IMS_PER_BATCH"], s["BASE_LR"]) == (16, 0.02)
    if "c4" in protocol or "voc" in protocol:
        assert m["ROI_HEADS"]["NAME"] == "Res5ROIHeadsExtraNorm"
        assert (m["RPN"]["PRE_NMS_TOPK_TEST"], m["RPN"]["POST_NMS_TOPK_TEST"]) == (6000, 1000)
    if protocol == "moco-voc-c4-24k":
        assert m["MASK_ON"] is False and m["ROI_HEADS"]["NUM_CLASSES"] == 20
        assert cfg["INPUT"]["MIN_SIZE_TRAIN"] == list(range(480, 801, 32))
        assert (s["STEPS"], s["MAX_ITER"], s["WARMUP_ITERS"]) == ([18000, 22000], 24000, 100)
        assert cfg["DATASETS"] == {"TRAIN": ["voc_2007_trainval", "voc_2012_trainval"], "TEST": ["voc_2007_test"]}
    else:
        assert m["MASK_ON"] is True and m["ROI_HEADS"]["NUM_CLASSES"] == 80
        assert cfg["INPUT"]["MIN_SIZE_TRAIN"] == [640, 672, 704, 736, 768, 800]
        iters = {"1x": ([60000, 80000], 90000), "2x": ([120000, 160000], 180000)}[protocol[-2:]]
        assert (s["STEPS"], s["MAX_ITER"]) == iters


def test_detectron2_config_options(tmp_path):
    cfg = yaml.safe_load(detectron2.write_detectron2_config(
        "moco-voc-c4-24k", "w.pkl", tmp_path / "c.yaml", norm="SyncBN", ims_per_batch=8, num_gpus=2).read_text())
    s = cfg["SOLVER"]
    # linear scaling from batch 16 / lr 0.02 / 24k iterations
    assert (s["BASE_LR"], s["MAX_ITER"], s["STEPS"]) == (0.01, 48000, [36000, 44000])
    assert cfg["MODEL"]["RESNETS"]["NORM"] == "SyncBN"
    short = detectron2.detectron2_config("moco-voc-c4-24k", "w.pkl", max_iter=240)["SOLVER"]
    assert (short["MAX_ITER"], short["STEPS"], short["WARMUP_ITERS"]) == (240, [180, 220], 100)
    with pytest.raises(ValueError, match="unknown detectron2 protocol"):
        detectron2.detectron2_config("voc-fpn", "w.pkl")
    with pytest.raises(ValueError, match="norm"):
        detectron2.detectron2_config("coco-c4-1x", "w.pkl", norm="LayerNorm")


@pytest.mark.parametrize("protocol", list(mmseg.MMSEG_CONFIGS))
def test_mmseg_config_is_python_mmseg_reads(protocol, tmp_path):
    out = mmseg.write_mmseg_config(protocol, "/w/r50_mmseg.pth", tmp_path / "fcn.py", data_root="/data/cityscapes/")
    text = out.read_text()
    assert "_base_" not in text
    namespace: dict = {}
    exec(compile(ast.parse(text), str(out), "exec"), namespace)  # plain Python, no imports needed
    model = namespace["model"]
    backbone = model["backbone"]
    assert backbone["type"] == "ResNet" and backbone["depth"] == 50 and backbone["style"] == "pytorch"
    assert backbone["dilations"] == (1, 1, 2, 4) and backbone["strides"] == (1, 2, 1, 1)
    assert backbone["init_cfg"] == {"type": "Pretrained", "checkpoint": "/w/r50_mmseg.pth", "prefix": "backbone."}
    # mmseg's configs: Cityscapes 19 classes, 512x1024 crops, 2 per GPU; VOC 21, 512x512, 4 per GPU
    classes, crop, per_gpu = (19, (512, 1024), 2) if "cityscapes" in protocol else (21, (512, 512), 4)
    assert model["decode_head"]["num_classes"] == classes and model["decode_head"]["type"] == "FCNHead"
    assert namespace["crop_size"] == crop and namespace["data_root"] == "/data/cityscapes/"
    iters = int(protocol.rsplit("-", 1)[-1][:-1]) * 1000
    assert namespace["train_cfg"]["max_iters"] == iters
    assert namespace["param_scheduler"][0]["end"] == iters
    assert namespace["train_dataloader"]["batch_size"] == per_gpu


@pytest.mark.parametrize("name", list(mmseg.MMSEG_CONFIGS))
def test_mmseg_configs_derived_from_our_protocols_equal_mmsegs_own(name, tmp_path):
    """The configs we write are derived from our segmentation protocols (one copy of the numbers);
    read back, they run what MMSegmentation's own config of that name runs (its installed file)."""
    import importlib.util
    from pathlib import Path

    from mmengine.config import Config

    from mocobench.transfer.segmentation.mmseg_engine import MMSEG_PROTOCOLS

    published = {"fcn-r50-d8-cityscapes-40k": "fcn_r50-d8_4xb2-40k_cityscapes-512x1024.py",
                 "fcn-r50-d8-cityscapes-80k": "fcn_r50-d8_4xb2-80k_cityscapes-512x1024.py",
                 "fcn-r50-d8-voc12aug-20k": "fcn_r50-d8_4xb4-20k_voc12aug-512x512.py",
                 "fcn-r50-d8-voc12aug-40k": "fcn_r50-d8_4xb4-40k_voc12aug-512x512.py"}[name]
    root = Path(importlib.util.find_spec("mmseg").origin).parent   # found, not imported
    theirs = Config.fromfile(str(root / ".mim" / "configs" / "fcn" / published)).to_dict()
    train = theirs["train_dataloader"]
    if train["dataset"].get("type") == "ConcatDataset":   # VOC 2012 + SBD (aug): one pipeline for both
        train["dataset"] = train["dataset"]["datasets"][0]
    out = mmseg.write_mmseg_config(name, "/w/r50_mmseg.pth", tmp_path / "fcn.py")
    ours: dict = {}
    exec(compile(ast.parse(out.read_text()), str(out), "exec"), ours)
    assert mmseg.describe(ours, 4) == mmseg.describe(theirs, 4)
    assert name in MMSEG_PROTOCOLS.values()
