"""The errors a request can end with. Each message names the input and says what to do."""


class InputError(ValueError):
    """A request input is missing, inconsistent or unusable; the message names the input."""


class ConfigurationError(ValueError):
    """An environment variable of the server has a value it cannot use; the message names it and the range."""


class WeightsError(RuntimeError):
    """The weights folder is missing a file, or a file is corrupt; the message names the fix."""
