"""Helpers to write records the way ``transfer/`` does (through ``new_record``/``write_record``)."""

from __future__ import annotations

import pytest

from mocobench.core.records import new_record, write_record


def make_checkpoint(run: str, method: str = "moco_v2", label_fraction=None, arch: str = "resnet18") -> dict:
    if run.startswith("random"):
        return {"name": run, "path": f"random:{arch}", "sha256": None, "format": "random", "arch": arch,
                "method": "random-init", "epochs": 0}
    return {"name": "backbone", "path": f"outputs/runs/{run}/backbone.pth", "sha256": (run * 64)[:64],
            "format": "mocobench-backbone", "arch": arch, "method": method, "epochs": 3,
            "label_fraction": label_fraction}


def add(results, name: str, task: str, protocol: str, metrics: dict, *, seed: int = 0,
        dataset: str = "synth-tiny/imagenet", config: dict | None = None, run: dict | None = None,
        engine: str = "torchvision",
        method: str = "moco_v2", label_fraction=None, splits=None) -> dict:
    rec = new_record(checkpoint=make_checkpoint(name, method, label_fraction), task=task, protocol=protocol,
                     dataset={"name": dataset, "path": "/data", "splits": splits or {"train": 100, "val": 40}},
                     metrics=metrics, config=config if config is not None else {"epochs": 10},
                     run=run if run is not None else {"workers": 2},
                     seed=seed, wall_time_s=1.0, device="cpu", engine=engine)
    write_record(results, rec)
    return rec


@pytest.fixture
def add_record():
    return add
