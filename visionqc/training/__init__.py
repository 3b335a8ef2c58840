"""Training: dataset readers, the two-phase trainer, calibration, evaluation, metrics and heatmap localisation.

Imports the model layer (it builds and saves models); the model layer never imports training.
"""
