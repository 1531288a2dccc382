"""Errors a user can cause: one readable sentence saying what is wrong and what to do."""


class UserError(Exception):
    """A mistake in the user's input or environment. The CLI prints it as one line, the wizard shows it.

    Bugs keep raising their own exceptions; only wrap what a person can fix.
    """


class ConfigError(UserError):
    """The run config is invalid."""


class DataError(UserError):
    """The dataset cannot be used as given."""


class ModelError(UserError):
    """The model cannot be found, read or loaded."""


class HubError(UserError):
    """The Hugging Face Hub refused or could not be reached."""
