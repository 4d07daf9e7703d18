"""Analysis of models: the model summary (parameters, bytes and MACs by precision)."""

from .diagnostics import WeightFlipMonitor, plot_flip_rates, plot_latent_histograms
from .summary import LayerProfile, Summary, summary

__all__ = ["summary", "Summary", "LayerProfile", "WeightFlipMonitor", "plot_flip_rates",
           "plot_latent_histograms"]
