"""Comparison methods, one module each, registered under the names the paper's tables use."""
