"""apical's exceptions for a user's mistake: the CLI prints the message as one line."""


class ApicalError(Exception):
    """Bad input (unknown name, wrong shape, missing file, NaN): the message names the
    problem and what to do about it."""


class ConfigError(ApicalError):
    """A config value of the wrong type or range, or an unknown key (apical.config)."""


class DivergedError(ApicalError):
    """The loss became NaN or inf during training (the message names epoch and step)."""


class Interrupted(ApicalError):
    """SIGINT or SIGTERM stopped a run; the message says what was saved and how to go on."""


class PeerFailed(ApicalError):
    """Another process of a distributed run failed or refused the run (that process says
    why); the CLI of a process other than the lead exits without a line of its own."""
