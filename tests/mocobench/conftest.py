"""Fixtures of the orchestrator's tests: a real one-node SLURM cluster, the embedded dataset."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

import slurm_cluster


@pytest.fixture(scope="session")
def slurm():
    """A running one-node cluster (munge, slurmctld, slurmd on loopback), its ``SLURM_CONF`` set for
    this process and its children while the session lasts. Skips, naming the reason, where it
    cannot start (packages missing, not root); in CI (CI=true) that is a failure instead."""
    why = slurm_cluster.why_not()
    if why:
        if os.environ.get("CI") == "true":
            pytest.fail(f"SLURM tests cannot run: {why}")
        pytest.skip(why)
    cluster = slurm_cluster.start()
    previous = os.environ.get("SLURM_CONF")
    os.environ["SLURM_CONF"] = str(cluster.conf)
    try:
        yield cluster
    finally:
        cluster.stop()
        if previous is None:
            os.environ.pop("SLURM_CONF", None)
        else:
            os.environ["SLURM_CONF"] = previous
        shutil.rmtree(cluster.root, ignore_errors=True)


@pytest.fixture(scope="session")
def synth_small(tmp_path_factory) -> Path:
    """The embedded dataset at the pipeline's ``small`` scale, generated once per session."""
    from mocobench.datasets.synth import generate

    out = tmp_path_factory.mktemp("synth_small")
    generate(out, seed=0, scale="small")
    return out
