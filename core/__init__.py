"""The ground floor of mocobench: helpers and data readers that every other package may use.

Nothing here imports any other package of the project (``pyproject.toml``'s import-linter
contract checks it): atomic file writing and progress bars (``io``), ``--key=value`` overrides,
device and distributed setup (``dist``), the result-record schema (``records``) and the dataset
readers and generator (``data``).
"""

__version__ = "0.1.0"
