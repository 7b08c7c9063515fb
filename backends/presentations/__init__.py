"""The built-in presentations, one unit per file (``heatmap``, ``bars``, ``groups``, ``featurevis``,
``semantic_dictionary``, ``activation_grid``, ``examples``, ``atlas``): importing this package
registers every module in it. The grammar finds it through interpgram's entry point
``interpgram.presentations: builtin``, as it finds any plug-in's."""
from interpgram.grammar.registry import import_folder

import_folder(__name__)
