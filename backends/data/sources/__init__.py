"""The built-in kinds of data set, one file each (``shapes``, ``folder``, ``python``): importing this
package registers every module in it."""
from interpgram.grammar.registry import import_folder

import_folder(__name__)
