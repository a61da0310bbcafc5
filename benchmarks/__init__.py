"""Benchmarks: each module prints (and writes) measured figures; run one as ``python -m benchmarks.NAME``
from the repository root, with mocobench installed (``./run_all.sh`` installs it into ``.venv``).

The top floor of the layers contract (``pyproject.toml``): a benchmark may import every package of
``mocobench``; nothing imports a benchmark but the tests.
"""
