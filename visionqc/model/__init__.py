"""The model: the card (``model.json``), the runtimes, the network, the checkpoint format, prediction and heatmaps.

:mod:`~visionqc.model.card`, :mod:`~visionqc.model.runtime` (ONNX graphs in ONNX Runtime) and
:mod:`~visionqc.model.weights` (the OOD bank) need no torch, and neither does
:mod:`~visionqc.model.predict` until the PyTorch network is asked for (the ``torch`` runtime, heatmaps).
Prediction depends only on the model directory's format, never on training.
"""
