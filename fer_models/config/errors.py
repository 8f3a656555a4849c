"""The one error a run setting raises: unknown, of the wrong type, out of range or unsafe together."""


class ConfigError(ValueError):
    """A run setting that is unknown, of the wrong type or out of range."""
