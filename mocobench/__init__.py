"""mocobench: pretraining and transfer evaluation for self-supervised visual representations.

This package is the top floor: the ``mocobench`` command table (``cli``) and the pipeline that runs
every stage (``pipeline``). It may import every other package; none imports it.
"""

from mocobench.core import __version__

__all__ = ["__version__"]
