"""The one error of a bad config: unknown key, ill-typed value, bad file, malformed override.
Its message is one line naming the full dotted key and the fix."""

__all__ = ["ConfigError"]


class ConfigError(ValueError):
    """A configuration problem: unknown key, ill-typed value, bad file or malformed override."""
