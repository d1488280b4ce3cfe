"""stv: sensitivity-aware task vectors for many-shot multimodal in-context learning."""

from .data import Example, load_dataset
from .heads import HeadMap, record, replace
from .methods.fit import STVConfig, fit
from .models import LMM, load_model
from .vectors import TaskVectors

__version__ = "0.1.0"
__all__ = ["Example", "HeadMap", "LMM", "STVConfig", "TaskVectors", "fit", "load_dataset", "load_model", "record",
           "replace", "__version__"]
