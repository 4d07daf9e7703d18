"""Analysis of models: the model summary (parameters, bytes and MACs by precision)."""

from .summary import LayerProfile, Summary, summary

__all__ = ["summary", "Summary", "LayerProfile"]
