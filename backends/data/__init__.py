"""Inputs and data sets: images in [0, 1] at the model's size.

Importing the package registers the built-in kinds of data set (``sources/``, one file each)."""
from interpgram.backends.data import sources  # noqa: F401
