"""edgecompress: compress neural networks for edge devices and run them fast."""

__version__ = "0.1.0"
