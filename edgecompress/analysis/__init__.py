"""Analysis of models.

- :mod:`.summary`: ``summary(model, input_shape)``, parameters, bytes and MACs by precision per
  layer (``LayerProfile`` records, rendered by ``Summary``);
- :mod:`.diagnostics`: ``WeightFlipMonitor`` (a trainer callback logging how many deployed
  weight values change each epoch) and plots of flip rates and latent-weight histograms;
- :mod:`.robustness`: ``evaluate_robustness(model, dataset, {family: severities})``, top-1
  under input corruptions (noise, brightness, contrast, rotation, translation), and its plot.
"""

from .diagnostics import WeightFlipMonitor, plot_flip_rates, plot_latent_histograms
from .robustness import RobustnessResult, evaluate_robustness, plot_robustness
from .summary import LayerProfile, Summary, summary

__all__ = ["summary", "Summary", "LayerProfile", "WeightFlipMonitor", "plot_flip_rates",
           "plot_latent_histograms", "evaluate_robustness", "plot_robustness", "RobustnessResult"]
