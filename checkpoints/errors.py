"""The exception types of the checkpoints layer."""

from mocobench.core.errors import UsageError


class CheckpointError(ValueError):
    """A checkpoint that cannot be loaded; the message names the file and the problem."""


class CheckpointUsageError(CheckpointError, UsageError):
    """A checkpoint named wrongly on the command line (``random:`` with no arch, or with options a
    random initialisation has no use for): a usage error to every command."""
