"""``benchmarks/device_check.py``: the CPU smoke run passes and writes every row, so the GPU check
cannot rot between GPU loans; its goal verdicts follow the issue's figures."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parent.parent.parent
from benchmarks import device_check as dc  # the repository root is on pytest's pythonpath

SECTIONS = {"model step", "input only", "end to end", "features", "detection", "segmentation", "profile",
            "input profile", "engines", "linear", "transformers"}


def test_cpu_smoke_run_measures_every_row(tmp_path):
    out = tmp_path / "device_check.json"
    env = {**os.environ, "OMP_NUM_THREADS": "2", "MOCOBENCH_PROGRESS": "0"}
    t = time.perf_counter()
    proc = subprocess.run([sys.executable, "-m", "benchmarks.device_check", "--device", "cpu", "--smoke", "--out", str(out)],
                          cwd=ROOT, env=env, capture_output=True, text=True, timeout=900)
    seconds = time.perf_counter() - t
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-4000:]
    doc = json.loads(out.read_text())
    rows, sz = doc["rows"], dc.SMOKE
    assert {r["section"] for r in rows} == SECTIONS
    assert not [r for r in rows if "error" in r]
    # every method and variant has its model-step row; compile rows say why they did not run
    for method in dc.METHOD_NAMES:
        got = {r["variant"]: r for r in rows if (r["section"], r["method"]) == ("model step", method)}
        assert set(got) == set(dc.VARIANTS) | ({"official fp32 eager"} if method == "moco_v2" else set())
        assert "--smoke" in got["bf16+channels_last+compile"]["skipped"]
        assert "img_s" in got["bf16+channels_last"]
        e2e = [r for r in rows if (r["section"], r["method"]) == ("end to end", method) and "img_s" in r]
        assert any(r["pipeline"].startswith("device") for r in e2e)
        compiled_e2e = [r for r in rows if (r["section"], r["method"], r["variant"]) == ("end to end", method, "bf16+channels_last+compile")]
        assert len(compiled_e2e) == 1 and "--smoke" in compiled_e2e[0]["skipped"]
    assert [r["variant"] for r in rows if r["section"] == "end to end" and r["method"] == "moco_v2"] == \
        ["bf16+channels_last", "bf16+channels_last", "official fp32 eager", "bf16+channels_last+compile"]
    # each measured figure is a positive rate, img/s = it/s x images per iteration; no GPU memory on CPU
    per_iter = {"detection": sz.det_batch, "segmentation": sz.seg_batch, "engines": 2}
    # the papers' engines through our commands, the linear step, the Transformer presets: each with the
    # GPU-hours of its paper schedule
    engines = {r["method"]: r for r in rows if r["section"] == "engines"}
    assert set(engines) == {"detectron2 Faster R-CNN R50-C4", "detectron2 Mask R-CNN R50-C4", "mmseg FCN R50-D8"}
    assert {(r["method"], r["variant"]) for r in rows if r["section"] == "transformers"} == {
        (m, f"{a}, bf16") for m in ("moco_v2", "smog") for a in ("ViT-S/16", "Swin-T")}
    for r in rows:
        if "img_s" in r and r["section"] not in ("profile", "input profile", "input only"):
            assert r["gpu_h_paper"] > 0 and r["paper_schedule"], r
    profiles = [r for r in rows if r["section"] == "profile"]
    assert len(profiles) == 1 and len(profiles[0]["top_ms_per_step"]) == 12
    assert all(ms >= 0 for _, ms in profiles[0]["top_ms_per_step"]) and profiles[0]["top_ms_per_step"][0][1] > 0
    for r in rows:
        if "skipped" in r or r["section"] in ("profile", "input profile"):
            continue
        assert r["img_s"] > 0 and r["it_s"] > 0
        assert r["img_s"] == pytest.approx(r["it_s"] * per_iter.get(r["section"], sz.batch), rel=1e-6)
        assert r.get("peak_mem_gib") is None
    assert doc["meta"]["smoke"] and doc["meta"]["images"] == sz.batch * (sz.e2e_warmup + sz.e2e_steps)
    assert doc["goals"]["applies"] is False
    assert f"{len(rows)} rows" in proc.stdout and "segmentation" in proc.stdout
    print(f"device_check --device cpu --smoke: {seconds:.1f} s")


def row(section, method, variant, pipeline, img_s):
    return {"section": section, "method": method, "variant": variant, "pipeline": pipeline, "img_s": img_s}


def test_goal_verdicts_follow_the_issues_figures():
    rows = [row("model step", "moco_v2", "fp32 eager", "random views", 900.0),
            row("model step", "moco_v2", "bf16+channels_last", "random views", 1900.0),
            row("model step", "moco_v2", "bf16+channels_last+compile", "random views", 2400.0),
            row("model step", "unimoco", "bf16+channels_last+compile", "random views", 2000.0),
            row("model step", "smog", "bf16+channels_last+compile", "random views", 1000.0),
            row("input only", "moco_v2", "device pipeline", "device (decode_jpeg + tensor ops)", 3000.0),
            row("end to end", "moco_v2", "bf16+channels_last", "PIL, 16 workers", 1200.0),
            row("end to end", "moco_v2", "bf16+channels_last", "device (decode_jpeg + tensor ops)", 2200.0),
            row("end to end", "unimoco", "bf16+channels_last", "device (decode_jpeg + tensor ops)", 1700.0),
            row("end to end", "smog", "bf16+channels_last", "device (decode_jpeg + tensor ops)", 850.0),
            row("end to end", "moco_v2", "official fp32 eager", "PIL, 16 workers", 700.0)]
    g = dc.goals(rows, smoke=False, elapsed_s=470.0)
    assert g["moco_v2_bf16_model_step_img_s"] == 2400.0  # the best bf16 row, fp32 does not count
    assert g["model_step_goal_2000"] and g["input_at_least_model_step"] and g["ratio_goal_1_5"]
    assert g["end_to_end_vs_official"] == pytest.approx(2200 / 700)  # the device path's row, not the PIL one
    assert g["ratio_goal_3"] and g["within_8_minutes"]
    # issue 29: end to end against the compiled step, 0.9 for MoCo v2 and UniMoCo, 0.8 for SMoG
    assert g["moco_v2_end_to_end_vs_compiled_step"] == pytest.approx(2200 / 2400) and g["moco_v2_goal_0.9_of_compiled_step"]
    assert g["unimoco_end_to_end_vs_compiled_step"] == pytest.approx(0.85) and not g["unimoco_goal_0.9_of_compiled_step"]
    assert g["smog_goal_0.8_of_compiled_step"] and g["smog_compiled_step_img_s"] == 1000.0
    assert g["moco_v2_end_to_end_variant"] == "bf16+channels_last"   # no compiled end-to-end row ran
    # the compiled end-to-end row, when it ran, is the one compared with the compiled step
    g = dc.goals(rows + [row("end to end", "unimoco", "bf16+channels_last+compile", "device (decode_jpeg + tensor ops)", 1900.0)],
                 smoke=False, elapsed_s=470.0)
    assert g["unimoco_end_to_end_variant"] == "bf16+channels_last+compile"
    assert g["unimoco_end_to_end_vs_compiled_step"] == pytest.approx(0.95) and g["unimoco_goal_0.9_of_compiled_step"]
    rows[-1]["img_s"] = 1400.0
    rows[5]["img_s"] = 2000.0
    g = dc.goals(rows, smoke=False, elapsed_s=481.0)
    assert g["ratio_goal_1_5"] and not g["ratio_goal_3"] and not g["input_at_least_model_step"]
    assert not g["within_8_minutes"]
    empty = dc.goals([], smoke=True)
    assert empty["applies"] is False and not any(v for k, v in empty.items() if k != "applies")


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the message given without CUDA")
def test_cuda_without_a_gpu_is_refused_clearly(capsys):
    with pytest.raises(SystemExit) as e:
        dc.main(["--device", "cuda", "--out", os.devnull])
    assert e.value.code == 2 and "CUDA is not available" in capsys.readouterr().err


def test_only_runs_the_chosen_groups_and_refuses_unknown_ones(tmp_path, capsys):
    out = tmp_path / "only.json"
    assert dc.main(["--device", "cpu", "--smoke", "--only", "input profile,official", "--out", str(out)]) == 0
    rows = json.loads(out.read_text())["rows"]
    assert {r["section"] for r in rows} == {"input profile", "model step", "end to end"}  # official: both
    assert all(r["variant"] == "official fp32 eager" for r in rows if r["section"] != "input profile")
    prof = [r for r in rows if r["section"] == "input profile"][0]
    assert prof["wall_ms_per_batch"] > 0 and prof["ops_per_batch"] > 0 and len(prof["top_host_ms_per_batch"]) == 12
    with pytest.raises(SystemExit) as e:
        dc.main(["--device", "cpu", "--smoke", "--only", "model steps", "--out", str(out)])
    assert e.value.code == 2 and "choose among" in capsys.readouterr().err


def test_engine_rates_are_read_from_the_engines_own_logs():
    from benchmarks.device_rows import detectron2_rate, mmengine_rate

    d2 = ("[12/07 06:07:12] d2.utils.events INFO:  eta: 0:00:00  iter: 39  total_loss: 3.8  time: 0.4012  "
          "data_time: 0.0171  lr: 0.00025  max_mem: 10785M\n"
          "[12/07 06:07:12] d2.engine.hooks INFO: Overall training speed: 37 iterations in 0:00:14 (0.3913 s / it)\n")
    assert detectron2_rate(d2) == (0.3913, round(10785 / 1024, 2))
    with pytest.raises(RuntimeError, match="Overall training speed"):
        detectron2_rate("iter: 1  time: 0.5")
    mm = "\n".join(f"12/07 06:10:0{i} - mmengine - INFO - Iter(train) [{i}/6]  lr: 1.0e-02  eta: 0:00:01  "
                   f"time: {t}  data_time: 0.0100  memory: {m}  loss: 2.9" for i, (t, m) in
                   enumerate([(2.0, 100), (1.0, 300), (0.9, 200), (0.5, 250), (0.7, 250), (0.6, 250)], start=1))
    s_it, peak = mmengine_rate(mm)
    assert s_it == pytest.approx((0.5 + 0.7 + 0.6) / 3) and peak == round(300 / 1024, 2)   # the first 3 left out
    with pytest.raises(RuntimeError, match="3 training iterations"):
        mmengine_rate("\n".join(mm.splitlines()[:3]))


def test_paper_schedule_hours_of_the_older_rows():
    """GPU-hours of the paper's whole schedule at a row's rate (issue 29: every row)."""
    sz = dc.SMOKE
    det = dc.paper_hours({"section": "detection", "method": "resnet50-C4", "img_s": 16.0}, sz)
    assert det["gpu_h_paper"] == pytest.approx(24000 * 16 / 16.0 / 3600)   # moco-voc-c4-24k: 24k x 16 images
    seg = dc.paper_hours({"section": "segmentation", "method": "resnet50-FCN", "img_s": 64.0}, sz)
    assert seg["gpu_h_paper"] == pytest.approx(90000 * 16 / 64.0 / 3600)   # moco-fcn Cityscapes: 90k x 16 crops
    step = dc.paper_hours({"section": "model step", "method": "unimoco", "img_s": 1000.0}, sz)
    assert step["gpu_h_paper"] == pytest.approx(800 * 1_281_167 / 1000.0 / 3600) and "800 epochs" in step["paper_schedule"]
    assert dc.paper_hours({"section": "input only", "method": "moco_v2", "img_s": 5.0}, sz) == {}
    assert dc.paper_hours({"section": "model step", "method": "smog", "skipped": "--smoke"}, sz) == {}
