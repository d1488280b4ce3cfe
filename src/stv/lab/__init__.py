"""The lab: a small LLaVA-architecture model, trained here on digits, that learns in context."""

from .model import LAB_CHECKPOINT, build_lab_model, load_lab

__all__ = ["LAB_CHECKPOINT", "build_lab_model", "load_lab"]
