"""interpgram's own op kernels: importing this module registers one kernel per op type of the plan
(:data:`~interpgram.backends.execute.context.KERNELS`)."""
from interpgram.backends.kernels import content, examples, featurevis, network  # noqa: F401
from interpgram.backends.kernels.atlas import patch_test, run  # noqa: F401
