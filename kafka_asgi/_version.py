"""The package's version: the one place it is written (pyproject.toml reads it from
here, ``kafka_asgi.__version__`` re-exports it, and the network layer sends it to the
broker as ApiVersions' client software version without importing the package)."""

__version__ = "0.1.0"
