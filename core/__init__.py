"""The ground floor of mocobench: helpers that every other package may use.

Nothing here imports any other package of the project (``pyproject.toml``'s import-linter
contract checks it): atomic file writing and progress bars (``io``), ``--key=value`` overrides,
device and distributed setup (``dist``) and the result-record schema (``records``). The dataset
readers and generator are one floor up, in ``mocobench.datasets``.
"""

__version__ = "0.1.0"
