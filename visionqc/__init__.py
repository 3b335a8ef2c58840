"""VisionQC: offline visual quality control: defect, severity, location and action from product photos."""

__version__ = "0.1.0"
