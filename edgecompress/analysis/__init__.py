"""Analysis of models.

- :mod:`.summary`: ``summary(model, input_shape)``, parameters, bytes and MACs by precision per
  layer (``LayerProfile`` records, rendered by ``Summary``);
- :mod:`.diagnostics`: ``WeightFlipMonitor`` (a trainer callback logging how many deployed
  weight values change each epoch) and plots of flip rates and latent-weight histograms.
"""

from .diagnostics import WeightFlipMonitor, plot_flip_rates, plot_latent_histograms
from .summary import LayerProfile, Summary, summary

__all__ = ["summary", "Summary", "LayerProfile", "WeightFlipMonitor", "plot_flip_rates",
           "plot_latent_histograms"]
