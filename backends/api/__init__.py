"""The Python API behind ``import interpgram`` (see :mod:`.interface`): an interface from a spec
path, YAML text or dict, with a model and inputs in memory; numbers out; inline display."""
from interpgram.backends.api.inputs import APIError, to_inputs
from interpgram.backends.api.interface import Interface, Model, Results, Text

__all__ = ["APIError", "Interface", "Model", "Results", "Text", "to_inputs"]
