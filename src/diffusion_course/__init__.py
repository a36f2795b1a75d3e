"""Shared, tested helpers for the diffusion-models course (see notebooks/ and CONTRIBUTING.md,
"Architecture", for the layers of this package)."""
__version__ = "0.1.0"
