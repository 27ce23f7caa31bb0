"""phenosynth: learn to recognise rare genetic conditions from few facial photos, with synthetic data.

Layers (lower never imports higher):
    errors, registry, progress  ->  data  ->  faces  ->  models, evaluate  ->  synth  ->  training  ->  study, demo  ->  cli
"""

__version__ = "0.1.0"
