"""The package's version, read by setuptools (pyproject.toml) and by `flatgrad --version`."""

__version__ = "0.1.0"
