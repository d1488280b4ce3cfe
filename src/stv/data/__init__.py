"""Datasets as lists of Example records, and k-shot episode sampling."""

from .digits import DIGIT_TASKS, DigitImages, DigitTask, digit_examples, digit_images
from .example import Example

__all__ = ["DIGIT_TASKS", "DigitImages", "DigitTask", "Example", "digit_examples", "digit_images"]
