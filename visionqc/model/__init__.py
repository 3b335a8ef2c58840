"""The model: the card (``model.json``), the network, the checkpoint format, prediction and heatmaps.

:mod:`~visionqc.model.card` is plain JSON and needs no torch; every other module here does. Prediction depends
only on the checkpoint format, never on training.
"""
