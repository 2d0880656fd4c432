"""echobench: a benchmark harness for learning with noisy labels, built around EchoAlign."""

__version__ = "0.1.0"
