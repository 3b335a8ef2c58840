"""The model registry: every model a data folder can inspect with, as immutable versions under
``<home>/models/<name>/<version>/``, the active one, and the audit trail of every switch."""

from visionqc.registry.registry import KINDS, ModelRegistry, ModelVersion, RegistryError

__all__ = ["KINDS", "ModelRegistry", "ModelVersion", "RegistryError"]
