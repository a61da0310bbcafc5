"""mocobench: pretraining and transfer evaluation for self-supervised visual representations."""

__version__ = "0.1.0"
