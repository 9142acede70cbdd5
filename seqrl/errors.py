"""Errors a user can cause: the CLI turns them into one line on stderr and exit code 2."""


class UserError(Exception):
    """A problem with the user's input (config, arguments, files): shown as one line, exit 2."""


class ConfigError(UserError):
    """An invalid configuration key, type or value."""


class NonFiniteError(UserError):
    """Training produced NaN or inf in the loss, the gradients or the parameters (usually a
    hyperparameter such as the learning rate is too large): one line, exit 2."""
