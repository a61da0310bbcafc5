"""The fast paths (bf16 autocast, channels_last, torch.compile) run on CPU and give fp32 eager's loss.

Tolerances, per step of a few pretraining steps from the same weights and views:
- channels_last: 5e-4 absolute after 3 steps (the same fp32 arithmetic, other conv kernels:
  summation order only);
- bf16 autocast: 3 % relative, each step from the fp32 run's state (bf16 keeps 8 significant bits,
  2^-8 = 0.4 % per rounding, over a dozen layers; the logits themselves are computed in fp32, see
  ``moco.info_nce_logits``; SMoG's argmax group assignments can flip, its largest gap seen is
  2.4 %); a whole bf16 + channels_last run of ``train()``: 0.05 absolute after 2 steps;
- torch.compile (inductor, fp32): 1e-4 absolute (fused kernels reorder the sums).
Each test also checks that its path actually ran (differs from eager, weights are NHWC, dynamo made
graphs), so a path that is silently skipped fails.
"""

from __future__ import annotations

import copy
import dataclasses
import functools
import json
import time

import pytest
import torch
import torch._dynamo

from mocobench.core import precision
from mocobench.pretrain import fast_paths
from mocobench.pretrain import train as train_module
from mocobench.pretrain.config import TINY
from mocobench.pretrain.methods import METHODS
from mocobench.pretrain.moco import MoCo
from mocobench.pretrain.moco import train_step as moco_train_step
from pretrain_helpers import TinyEncoder, write_image_folder

STEPS = 3


def cfg_for(method: str, **kw):
    # NOTE: 32 px, not 16: at 16 px timm's test_resnet reaches layer4 with a 1x1 map, where CPU bf16
    # autocast gives a NaN weight gradient in layer4.0.conv1 at random steps (even with one thread);
    # docs/performance.md has the details.
    small = dict(img_size=32, batch_size=4, K=16, n_groups=8, hidden_dim=32, bank_size=64)
    return dataclasses.replace(TINY[method], **{**small, **kw})


def losses(model, cfg, steps: int = STEPS, device: str = "cpu", probe=None, graphs: list | None = None):
    """Per-step losses of ``steps`` SGD steps of ``model`` (as built from seed 0) under the config's
    fast paths, on fixed views (SMoG's local crops at ``local_size``). With ``probe`` (another
    config), also the losses that the probe's fast paths give at each step on a copy of the same
    state (no compounding over steps). ``graphs``: gets the count of graphs compiled so far after
    each step."""
    g = torch.Generator().manual_seed(1)
    sizes = [cfg.img_size] * 2 + ([cfg.local_size] * cfg.local_crops if cfg.method == "smog" else [])
    views = [torch.randn(cfg.batch_size, 3, size, size, generator=g) for size in sizes]
    labels = torch.tensor([0, 1, -1, -1])[: cfg.batch_size]
    fmt = fast_paths.memory_format(cfg)
    model.to(memory_format=fmt)
    if cfg.compile:
        fast_paths.compile_in_place(model)
    opt = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=0.01, momentum=0.9)

    def loss_of(net, c):
        torch.manual_seed(100 + step)  # shuffle-BN and k-means draws, as train.step_seed
        with precision.autocast(c.precision, torch.device(device)):
            return METHODS[c.method].train_step(net, [v.contiguous(memory_format=fmt) for v in views], labels)

    out, probed = [], []
    for step in range(steps):
        if probe is not None:
            probed.append(float(loss_of(copy.deepcopy(model), probe).detach()))
        loss = loss_of(model, cfg)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        out.append(float(loss.detach()))
        if graphs is not None:
            graphs.append(torch._dynamo.utils.counters["stats"]["unique_graphs"])
    return (out, probed) if probe is not None else out


def built(cfg):
    torch.manual_seed(0)
    return METHODS[cfg.method].build(cfg)


# moco_v1 runs the very builder and step of moco_v2 (only its config differs), so it is not repeated
@pytest.mark.parametrize("method", [m for m in METHODS if m != "moco_v1"])
def test_bf16_and_channels_last_give_the_fp32_eager_loss(method):
    cfg = cfg_for(method)
    # fp32 eager, and bf16 autocast at each of its steps from the same state
    ref, bf16 = losses(built(cfg), cfg, probe=dataclasses.replace(cfg, precision="bf16"))
    assert bf16 == pytest.approx(ref, rel=0.03)
    assert bf16 != ref  # autocast ran: bf16 rounding shows in the loss
    nhwc_cfg = dataclasses.replace(cfg, channels_last=True)
    nhwc_model = built(nhwc_cfg)
    nhwc = losses(nhwc_model, nhwc_cfg)
    conv = next(m for m in nhwc_model.modules() if isinstance(m, torch.nn.Conv2d))
    assert conv.weight.is_contiguous(memory_format=torch.channels_last) and conv.weight.stride()[1] == 1
    assert nhwc == pytest.approx(ref, abs=5e-4)


def test_an_unknown_precision_is_refused():
    with pytest.raises(ValueError, match="precision='fp16'"):
        precision.autocast(dataclasses.replace(TINY["moco_v2"], precision="fp16").precision, torch.device("cpu"))


def test_torch_compile_on_cpu_gives_the_eager_loss():
    """Inductor on CPU (gcc) compiles MoCo v2's two encoders; a one-conv encoder keeps the cold
    compile to ~20 s of CPU time (timm's test_resnet takes ~85 s on 2 cores)."""
    import torch._dynamo

    cfg = dataclasses.replace(cfg_for("moco_v2"), compile=True)

    def tiny_moco():
        torch.manual_seed(0)
        return MoCo(functools.partial(TinyEncoder, width=6), dim=8, K=16, m=0.99, T=0.2, mlp=True)

    eager = losses(tiny_moco(), dataclasses.replace(cfg, compile=False))
    torch._dynamo.reset()
    torch._dynamo.utils.counters.clear()
    t = time.perf_counter()
    graphs: list[int] = []
    compiled = losses(tiny_moco(), cfg, graphs=graphs)
    seconds = time.perf_counter() - t
    assert graphs[0] >= 2, "nothing was compiled"
    # compiled once per run (issue 29): every graph at the first step (the query encoder with grad,
    # the key encoder without), none after it; a recompile per step would cost a GPU run its speed
    assert graphs == [graphs[0]] * STEPS, graphs
    assert compiled == pytest.approx(eager, abs=1e-4)
    print(f"compile + {STEPS} steps: {seconds:.1f} s")
    assert METHODS["moco_v2"].train_step is moco_train_step  # the step the loss above went through


def test_smog_with_local_crops_compiles_at_its_first_step_only():
    """SMoG's multi-crop (issue 29): two global views and two local ones of another size go through
    the compiled backbone; its graphs (one per view size and grad mode, the projector's and the
    predictor's) are all made at the first step, and the run gives eager's losses."""
    import torch._dynamo

    from mocobench.pretrain.smog import SMoG

    cfg = dataclasses.replace(cfg_for("smog"), compile=True, local_crops=2, local_size=16, batch_size=8)

    def tiny_smog():
        torch.manual_seed(0)
        return SMoG(TinyEncoder(num_classes=6), num_features=6, dim=4, hidden=8, n_groups=3, beta=0.9, tau=0.1,
                    m=0.9, reset_every=2, bank_size=64, kmeans_iters=2)

    eager = losses(tiny_smog(), dataclasses.replace(cfg, compile=False))
    torch._dynamo.reset()
    torch._dynamo.utils.counters.clear()
    graphs: list[int] = []
    t = time.perf_counter()
    compiled = losses(tiny_smog(), cfg, graphs=graphs)   # the group reset at step 2 included
    seconds = time.perf_counter() - t
    assert graphs[0] >= 4 and graphs == [graphs[0]] * STEPS, graphs
    assert compiled == pytest.approx(eager, abs=1e-4)
    print(f"SMoG: compile ({graphs[0]} graphs) + {STEPS} steps: {seconds:.1f} s")


@pytest.mark.filterwarnings("ignore:skipping unreadable image")
def test_train_runs_the_fast_paths_and_the_device_pipeline_on_cpu(tmp_path):
    """train() end to end: bf16 + channels_last and input_pipeline=device each take effect and are
    recorded in config.json; the loss stays near the fp32/PIL run's."""
    data = write_image_folder(tmp_path / "data", n_classes=2, per_class=6, size=20, corrupt=1)

    def run(name: str, **kw) -> list[float]:
        cfg = dataclasses.replace(TINY["moco_v2"], img_size=32, batch_size=4, K=8, epochs=1, log_every=1,
                                  max_steps_per_epoch=2, **kw)
        train_module.train(cfg, data, tmp_path / name)
        assert all(json.loads((tmp_path / name / "config.json").read_text())[k] == v for k, v in kw.items())
        lines = [json.loads(line) for line in (tmp_path / name / "log.jsonl").read_text().splitlines()]
        return [x["loss"] for x in lines if "loss" in x]

    ref = run("fp32")
    fast = run("bf16", precision="bf16", channels_last=True)
    assert fast == pytest.approx(ref, abs=0.05) and fast != ref
    device = run("device", input_pipeline="device")
    assert len(device) == len(ref) and device != ref  # other crops: the device path drew them
    with pytest.raises(ValueError, match="input_pipeline='gpu'"):
        run("bad", input_pipeline="gpu")
