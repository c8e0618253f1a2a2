"""The package version, in a module of its own so that any subpackage can read it without importing spotsim."""

__version__ = "0.1.0"
