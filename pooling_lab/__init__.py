"""pooling-lab: a research harness for learnable pooling layers."""

__version__ = "0.1.0"
