"""stv: sensitivity-aware task vectors for many-shot multimodal in-context learning."""

from .heads import HeadMap, record, replace
from .models import LMM, load_model

__version__ = "0.1.0"
__all__ = ["HeadMap", "LMM", "load_model", "record", "replace", "__version__"]
