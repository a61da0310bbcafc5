"""The usage error every command shares: a command line that cannot run (an option that does not
apply, a value it cannot take) exits 2, before anything is read or written; a failure while running
exits 1."""

EXIT_USAGE = 2


class UsageError(ValueError):
    """A command line that cannot run; the message names the option and the problem."""
