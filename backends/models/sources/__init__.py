"""The built-in model sources, one file each (``builtin``, ``inceptionv1``, ``torchvision``, ``timm``, ``hf``,
``file``, ``python``): importing this package registers every module in it."""
from interpgram.grammar.registry import import_folder

import_folder(__name__)
