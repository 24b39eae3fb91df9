"""The version, in a leaf module: every module can import it without importing the package root."""

__version__ = "0.1.0"
