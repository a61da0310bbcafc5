"""``--engine mmseg``: run MMSegmentation's own FCN R50-D8 training and testing on a converted backbone.

Used only when MMSegmentation and mmcv with compiled ops import; otherwise :func:`why_unavailable`
says why and the CLI stops before doing any work. Two traps met when installing it:

1. mmsegmentation 1.2.2 asserts ``mmcv<2.2.0`` at import time and needs ``ftfy`` and ``regex``
   without declaring them: each is checked separately so the message names the fix.
2. mmengine saves its own checkpoints with pickled Python objects (message hub, history buffers)
   and loads them with a bare ``torch.load``; under torch >= 2.6 that defaults to
   ``weights_only=True`` and fails on resume. :func:`_trusted_torch_load` lets ``torch.load``
   unpickle only files inside this run's own work dir (written by mmengine in this run), and
   keeps ``weights_only=True`` for everything else. The converted backbone we hand to mmseg is a
   plain tensor dict that loads under ``weights_only=True`` anyway.
"""

from __future__ import annotations

import contextlib
import importlib
import os
from pathlib import Path

# our protocol -> the mmseg config it reproduces (a key of transfer.adapters.mmseg.PROTOCOLS)
MMSEG_PROTOCOLS = {
    "mmseg-fcn-40k": "fcn-r50-d8-cityscapes-40k",
    "mmseg-fcn-80k": "fcn-r50-d8-cityscapes-80k",
}


def why_unavailable() -> str | None:
    """None when mmseg can run here; else one line saying what is missing and how to fix it."""
    for mod, fix in (("mmengine", "pip install mmengine"),
                     ("mmcv", "pip install 'mmcv>=2.0.0,<2.2.0' -f https://download.openmmlab.com/mmcv/dist/<cu>/<torch>/index.html"),
                     ("ftfy", "pip install ftfy (mmsegmentation needs it but does not declare it)"),
                     ("regex", "pip install regex (mmsegmentation needs it but does not declare it)")):
        try:
            importlib.import_module(mod)
        except ImportError as e:
            return f"{mod} is not importable ({e}); {fix}"
    import mmcv

    version = tuple(int(x) for x in mmcv.__version__.split(".")[:2] if x.isdigit())
    if version >= (2, 2):
        return (f"mmcv {mmcv.__version__} is installed but mmsegmentation 1.2.x asserts mmcv<2.2.0; "
                "install mmcv 2.1.x built for this torch")
    try:
        importlib.import_module("mmcv._ext")
    except ImportError as e:
        return (f"mmcv {mmcv.__version__} has no compiled ops (mmcv._ext: {e}); install the full mmcv "
                "wheel for this torch/CUDA, not mmcv-lite")
    try:
        importlib.import_module("mmseg")
    except (ImportError, AssertionError) as e:
        return f"mmsegmentation is not importable ({type(e).__name__}: {e}); pip install mmsegmentation"
    try:
        importlib.import_module("transfer.adapters.mmseg")
    except ImportError as e:
        return f"the mmseg adapter (transfer.adapters.mmseg) is not available ({e})"
    return None


@contextlib.contextmanager
def _trusted_torch_load(work_dir: Path):
    """Within the block, ``torch.load`` of a file under ``work_dir`` defaults to weights_only=False."""
    import torch

    original = torch.load
    root = Path(work_dir).resolve()

    def load(f, *args, **kwargs):
        if "weights_only" not in kwargs and isinstance(f, (str, os.PathLike)):
            try:
                inside = Path(f).resolve().is_relative_to(root)
            except OSError:
                inside = False
            if inside:
                kwargs["weights_only"] = False
        return original(f, *args, **kwargs)

    torch.load = load
    try:
        yield
    finally:
        torch.load = original


def run_mmseg(*, checkpoint: str, protocol: str, data_root: str, work_dir: str, seed: int,
              resume: bool = False, iters: int | None = None, batch_size: int = 8) -> dict:
    """Convert, write the config, train and test with mmseg; returns ``{"mIoU", "mAcc", "aAcc"}``
    in percent as mmseg's ``IoUMetric`` reports them (rounded to 0.01 by mmseg)."""
    reason = why_unavailable()
    if reason:
        raise RuntimeError(f"--engine mmseg is not usable here: {reason}")
    if protocol not in MMSEG_PROTOCOLS:
        raise ValueError(f"--engine mmseg runs {', '.join(MMSEG_PROTOCOLS)}, not {protocol!r}")
    from mmengine.config import Config
    from mmengine.runner import Runner

    from checkpoints.load import load_backbone
    from transfer.adapters import mmseg as adapter

    work = Path(work_dir)
    work.mkdir(parents=True, exist_ok=True)
    backbone, report = load_backbone(checkpoint)
    ckpt_path = work / "backbone_mmseg.pth"
    adapter.write_mmseg_checkpoint(ckpt_path, backbone.net.state_dict(),
                                   {"arch": backbone.arch, **report.record_fields()})
    world = int(os.environ.get("WORLD_SIZE", "1"))
    default_iters = adapter.PROTOCOLS[MMSEG_PROTOCOLS[protocol]][0]
    cfg_path = adapter.write_mmseg_config(
        MMSEG_PROTOCOLS[protocol], ckpt_path, work / f"{protocol}.py", data_root=data_root,
        # SyncBN needs a process group; a single process trains with plain BN
        norm="SyncBN" if world > 1 else "BN", batch_size=max(batch_size // world, 1),
        max_iters=iters if iters and iters != default_iters else None)
    cfg = Config.fromfile(str(cfg_path))
    cfg.work_dir = str(work)
    cfg.launcher = "pytorch" if world > 1 else "none"
    cfg.randomness = dict(seed=seed, deterministic=False)
    cfg.resume = bool(resume)
    with _trusted_torch_load(work):
        runner = Runner.from_cfg(cfg)
        runner.train()
        results = runner.test()
    out = {}
    for key in ("mIoU", "mAcc", "aAcc"):
        if key not in results:
            raise RuntimeError(f"mmseg test results have no {key}: {sorted(results)}")
        out[key] = float(results[key])
    return out
