"""The package's version, in a file of its own that imports nothing: setup.cfg reads it without importing
the package (and torch) when it builds, and `alexnet2gpu.__version__` is this."""
__version__ = "0.1.0"
