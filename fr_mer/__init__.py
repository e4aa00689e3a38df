"""fr-mer: facial micro-expression recognition with the Feature Refinement model and its peers."""

__version__ = "0.1.0"
