"""The one exception type of configuration problems (its own module so that the loader, ``mmalign.config``, and
the value checks, ``mmalign.validate``, both raise it without importing each other)."""


class ConfigError(ValueError):
    """A configuration problem, raised before any model is loaded. The message names the key."""
