"""The one error type every layer raises for a person to read (shared, so it sits at the bottom)."""


class ConfigError(ValueError):
    """A preset, a notebook parameter or an input path is invalid; the message is one line for a person."""
