"""Transformer backbones (issue 18): presets, AdamW's weight-decay exclusions, a tiny ViT that
pretrains with every method and beats its own initialisation on kNN, and its checkpoint through
inspect, the probes, the detector and the leaderboard."""

from __future__ import annotations

import dataclasses
import json

import pytest
import torch

from mocobench.pretrain.config import PRESETS, TINY_VIT, resolve_preset
from mocobench.pretrain.methods import METHODS
from mocobench.pretrain.train import build_optimizer, export_backbone

TRANSFORMER_PRESETS = [name for name, cfg in PRESETS.items() if "vit" in cfg.arch or "swin" in cfg.arch]


def test_transformer_presets_print_their_resolved_config(capsys):
    from mocobench.pretrain.cli import main

    assert {"moco_v2_vit_s_300ep", "unimoco_vit_s_300ep_10pct", "smog_vit_s_300ep", "smog_swin_t_300ep",
            "tiny_vit_moco_v2", "tiny_vit_unimoco", "tiny_vit_smog"} <= set(TRANSFORMER_PRESETS)
    for name in TRANSFORMER_PRESETS:
        cfg = PRESETS[name]
        assert cfg.optimizer == "adamw" and cfg.warmup_epochs > 0 and cfg.weight_decay > 0, name
        assert main(["--method", cfg.method, "--preset", name, "--data", "d", "--out", "o", "--print-config"]) == 0
        assert json.loads(capsys.readouterr().out) == cfg.to_dict(), name
    v2 = PRESETS["moco_v2_vit_s_300ep"]
    assert (v2.arch, v2.lr, v2.weight_decay, v2.batch_size, v2.crop_min_scale) == (
        "timm:vit_small_patch16_224", pytest.approx(1.5e-4 * 16), 0.1, 4096, 0.08)
    assert PRESETS["unimoco_vit_s_300ep_30pct"].label_fraction == 0.3
    smog = PRESETS["smog_swin_t_300ep"]
    assert (smog.n_groups, smog.tau, smog.beta, smog.reset_every, smog.local_crops) == (3000, 0.1, 0.99, 300, 0)
    assert resolve_preset("tiny_vit", "smog") is TINY_VIT["smog"]
    with pytest.raises(ValueError, match="unknown preset 'tiny_vit_moco_v1'"):
        resolve_preset("tiny_vit", "moco_v1")


@pytest.mark.parametrize("arch", ["timm:test_vit", "timm:swin_tiny_patch4_window7_224"])
def test_adamw_decays_only_matrices_that_are_not_positions_or_tokens(arch):
    # With zero gradients AdamW's whole update is the decoupled decay p <- p - lr*wd*p, so a parameter
    # changes exactly when it is in a decayed group.
    from mocobench.checkpoints.backbones import build_classifier_model

    # Swin-T's parameter names at a fraction of its width and depth (an AdamW step on all of it is slow)
    small_swin = {"embed_dim": 16, "depths": (1, 1, 1, 1), "num_heads": (1, 1, 1, 1)}
    model = build_classifier_model(arch, num_classes=8, img_size=64 if "vit" in arch else None,
                                   timm_kwargs=None if "vit" in arch else small_swin)
    cfg = dataclasses.replace(TINY_VIT["moco_v2"], arch=arch, lr=0.5, weight_decay=0.1)
    opt = build_optimizer(cfg, model)
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    for p in model.parameters():
        p.grad = torch.zeros_like(p)
    opt.step()
    changed = {n for n, p in model.named_parameters() if not torch.equal(p, before[n])}
    kept = set(before) - changed
    assert all(before[n].ndim == 1 for n in kept if not n.endswith(
        ("pos_embed", "cls_token", "relative_position_bias_table"))), kept
    assert ({"pos_embed", "cls_token"} <= set(kept) if "vit" in arch
            else any(n.endswith("relative_position_bias_table") for n in kept))
    assert all(before[n].ndim > 1 for n in changed) and {"head.weight", "head.fc.weight"} & changed
    assert any(n.endswith("norm1.weight") for n in kept) and any(n.endswith("qkv.bias") for n in kept)


# -- the tiny ViT on the embedded data ----------------------------------------------------------

def knn_top1(checkpoint, data, results) -> float:
    from mocobench.core.records import load_records
    from mocobench.transfer.cli import eval_main

    assert eval_main(["knn", "--checkpoint", str(checkpoint), "--data", str(data), "--results", str(results),
                      "--img-size", "64", "--workers", "0", "--no-cache", "--device", "cpu"]) == 0
    (rec,), problems = load_records(results)
    assert not problems
    return rec["metrics"]["top1"]


def tiny_vit_config(method: str):
    # 5 epochs of 400 images at batch 32: 60 AdamW steps
    cfg = dataclasses.replace(TINY_VIT[method], epochs=5, warmup_epochs=1, ckpt_every=1000, log_every=12)
    return dataclasses.replace(cfg, label_fraction=0.1) if method == "unimoco" else cfg


@pytest.fixture(scope="module")
def synth_400(tmp_path_factory):
    """The embedded ImageNet-layout classes at 64 px, 40 train and 20 val images per class (the `tiny`
    scale's 4 val images per class make a kNN figure move 2.5 points an image)."""
    from mocobench.datasets.synth import imagenet

    root = tmp_path_factory.mktemp("synth400")
    imagenet.generate(root / "imagenet", 0, 10, 40, 20, 64, lambda jobs, **_: jobs)
    return root


@pytest.fixture(scope="module")
def pretrained_vits(synth_400, tmp_path_factory):
    """``{method: (backbone.pth, kNN top-1, kNN top-1 of the run's own initialisation)}``."""
    from mocobench.pretrain.train import train

    out = {}
    # One thread: a 0.3M-parameter model gains nothing from two, and on a loaded machine two threads
    # that spin-wait for each other made this fixture ten times slower (460 s instead of ~45 s).
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        for method in TINY_VIT:
            cfg = tiny_vit_config(method)
            root = tmp_path_factory.mktemp(f"vit_{method}")
            torch.manual_seed(cfg.seed)  # the initialisation train() starts from
            init = export_backbone(cfg, METHODS[method].build(cfg), root / "init.pth", step=0, epochs_done=0)
            path = train(cfg, synth_400, root / "run")
            out[method] = (path, knn_top1(path, synth_400, root / "knn"),
                           knn_top1(init, synth_400, root / "knn0"))
    finally:
        torch.set_num_threads(threads)
    return out


@pytest.mark.slow
@pytest.mark.parametrize("method", list(TINY_VIT))
def test_tiny_vit_pretraining_beats_its_initialisation_on_knn(method, pretrained_vits):
    from mocobench.checkpoints.load import load_backbone

    path, top1, init_top1 = pretrained_vits[method]
    backbone, report = load_backbone(path)
    assert backbone.arch == "timm:test_vit" and backbone.spec.img_size == 64
    assert report.metadata["config"]["optimizer"] == "adamw" and report.metadata["method"] == method
    # 200 val images: 0.5 points an image; the margins measured are in docs/pretrain.md
    assert top1 >= init_top1 + 4.0, (method, top1, init_top1)


@pytest.mark.slow
def test_vit_checkpoint_through_inspect_linear_and_detection(pretrained_vits, synth_tiny, tmp_path, capsys):
    from mocobench.checkpoints.cli import inspect_main
    from mocobench.core.records import load_records
    from mocobench.transfer.cli import eval_main

    path = pretrained_vits["moco_v2"][0]
    assert inspect_main([str(path), "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["arch"] == "timm:test_vit" and report["format"] == "mocobench-backbone"
    assert eval_main(["linear", "--checkpoint", str(path), "--data", str(synth_tiny), "--protocol", "fast",
                      "--results", str(tmp_path / "lin"), "--img-size", "64", "--workers", "0", "--no-cache",
                      "--device", "cpu"]) == 0
    # a plain ViT goes through the FPN detector (parameter-free pyramid from its stride-16 map)
    small = ["--max-iters", "2", "--min_size_train=64", "--min_size_test=64", "--max_size_train=96",
             "--max_size_test=96", "--precise_bn_iters=1", "--warmup_iters=1"]
    assert eval_main(["detection", "--checkpoint", str(path), "--dataset", "voc", "--data",
                      str(synth_tiny / "VOCdevkit"), "--protocol", "tiny-fpn", "--results", str(tmp_path / "det"),
                      "--device", "cpu", *small]) == 0
    records, problems = load_records(tmp_path)
    assert not problems and {r["task"] for r in records} == {"linear", "detection"}
    assert all(r["checkpoint"]["arch"] == "timm:test_vit" for r in records)


# -- the leaderboard keeps Transformer rows apart from ResNet rows -------------------------------

def test_leaderboard_rows_keep_the_arch(tmp_path):
    from mocobench.core.records import new_record, write_record
    from mocobench.leaderboard.table import load_table, to_csv

    def add(name, path, sha, arch, method, top1):
        ck = {"name": name, "path": path, "sha256": sha, "format": "mocobench-backbone" if sha else "random",
              "arch": arch, "method": method, "epochs": 5 if sha else 0, "label_fraction": 0.0}
        write_record(tmp_path, new_record(
            checkpoint=ck, task="knn", protocol="dino-knn", metrics={"top1": top1, "top5": 90.0},
            dataset={"name": "synth-tiny/imagenet", "path": "/data", "splits": {"train": 400, "val": 200}},
            config={"k": 20}, run={}, seed=0, wall_time_s=1.0, device="cpu", engine="torchvision"))

    # the same run folder name for both archs (two OUT trees), and a random init of each arch
    add("backbone", "a/runs/smog/backbone.pth", "a" * 64, "timm:test_resnet", "smog", 50.0)
    add("backbone", "b/runs/smog/backbone.pth", "b" * 64, "timm:test_vit", "smog", 31.0)
    add("random-timm-test_resnet", "random:timm:test_resnet", None, "timm:test_resnet", "random-init", 40.0)
    add("random-timm-test_vit", "random:timm:test_vit", None, "timm:test_vit", "random-init", 25.0)
    table = load_table(tmp_path, reported=False)
    col = next(c for c in table.columns if c.metric == "top1")
    by_arch = {(r.method, r.arch): table.cell(r, col).mean for r in table.rows}
    assert by_arch == {("smog", "timm:test_resnet"): 50.0, ("smog", "timm:test_vit"): 31.0,
                       ("random-init", "timm:test_resnet"): 40.0, ("random-init", "timm:test_vit"): 25.0}
    assert len({r.name for r in table.rows}) == 4 and all(table.cell(r, col).n == 1 for r in table.rows)
    assert "timm:test_vit" in to_csv(table)


def test_swin_stage_maps_are_its_own_strides_not_the_plain_vit_pyramid():
    from mocobench.checkpoints.backbones import BackboneSpec, build_backbone

    small_swin = {"embed_dim": 16, "depths": (1, 1, 1, 1), "num_heads": (1, 1, 1, 1)}
    swin = build_backbone(BackboneSpec("timm:swin_tiny_patch4_window7_224", img_size=224,
                                       extra={"timm_kwargs": small_swin})).eval()
    vit = build_backbone("timm:test_vit", img_size=64).eval()
    with torch.no_grad():
        s = swin.feature_maps(torch.zeros(1, 3, 224, 224))
        v = vit.feature_maps(torch.zeros(1, 3, 64, 64))
    assert {k: (m.shape[1], 224 // m.shape[-1]) for k, m in s.items()} == {
        "res2": (16, 4), "res3": (32, 8), "res4": (64, 16), "res5": (128, 32)}
    assert {k: 64 // m.shape[-1] for k, m in v.items()} == {"res2": 4, "res3": 8, "res4": 16, "res5": 32}


def test_moco_v2_heads_a_swin_through_its_classifier_heads_fc():
    """timm's Swin (and ConvNeXt) keep their Linear in ``head.fc`` (a ClassifierHead around it): MoCo v2's
    MLP replaces that Linear, and the backbone's export drops it with the rest of ``head.``."""
    from mocobench.checkpoints.backbones import build_classifier_model
    from mocobench.checkpoints.keymaps import HEAD_PREFIXES
    from mocobench.pretrain.moco import add_mlp_head, classifier_name

    model = build_classifier_model("timm:swin_tiny_patch4_window7_224", num_classes=8,
                                   timm_kwargs={"embed_dim": 16, "depths": (1, 1, 1, 1), "num_heads": (1, 1, 1, 1)})
    assert classifier_name(model) == "head.fc"
    add_mlp_head(model)
    assert model(torch.randn(2, 3, 224, 224)).shape == (2, 8)
    heads = [k for k in model.state_dict() if k.startswith("head.")]
    assert heads == ["head.fc.0.weight", "head.fc.0.bias", "head.fc.2.weight", "head.fc.2.bias"]
    assert all(k.startswith(HEAD_PREFIXES) for k in heads)
    vit = build_classifier_model("timm:test_vit", num_classes=8, img_size=64)
    assert classifier_name(vit) == "head"
