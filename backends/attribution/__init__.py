"""The built-in attribution methods, one unit per file (``grad_x_act``, ``integrated``): importing this
package registers every module in it. The grammar finds it through interpgram's entry point
``interpgram.attribution_methods: builtin``, as it finds any plug-in's."""
from interpgram.grammar.registry import import_folder

import_folder(__name__)
