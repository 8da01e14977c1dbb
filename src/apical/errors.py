"""The one exception type for a user's mistake: the CLI prints its message as one line."""


class ApicalError(Exception):
    """Bad input (unknown name, wrong shape, missing file, NaN): the message names the
    problem and what to do about it."""


class DivergedError(ApicalError):
    """The loss became NaN or inf during training (the message names epoch and step)."""
