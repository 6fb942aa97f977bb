"""lit_robust: adversarially robust training as plug-in PyTorch Lightning modules."""

__version__ = "0.1.0"
