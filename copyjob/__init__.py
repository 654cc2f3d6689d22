"""copyjob: move tables and files between systems from one small YAML job file."""

__version__ = "0.1.0"
__all__ = ["__version__"]
