"""The one exception type of the checkpoints layer, and the one line its messages are printed as."""


class CheckpointError(ValueError):
    """A checkpoint that cannot be loaded; the message names the file and the problem."""


def one_line(text: object) -> str:
    """A message on one line (pickle's, torch's and timm's can span several); the CLIs print one."""
    return " ".join(str(text).split())
