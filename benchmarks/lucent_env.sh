#!/usr/bin/env bash
# Creates .venv-lucent: interpgram (editable) + torch-lucent, for benchmarks/vs_lucent.py.
#
#     bash benchmarks/lucent_env.sh          # then: .venv-lucent/bin/python benchmarks/vs_lucent.py
#
# torch is pinned with -c constraints.txt (torch==2.13.0, which pip resolves to the local CPU wheel).
# An unpinned torch, or torchvision, would make pip download a multi-GB CUDA build, so:
#   * torch-lucent is installed with --no-deps (its metadata asks for torch, torchvision, kornia,
#     tqdm, ipython, scikit-learn, ...), then only what `lucent.optvis` imports is added;
#   * kornia==0.4.1, the newest that torch-lucent 0.1.8 allows (kornia<=0.4.1), with --no-deps (its
#     only deps are torch and numpy). Newer kornia (0.9) imports fine but lacks the top-level
#     kornia.get_rotation_matrix2d / kornia.warp_affine that transform.random_rotate calls, so
#     standard_transforms would fail at the first step;
#   * lucent.optvis also imports decorator (objectives), tqdm (render) and IPython.display (render ->
#     lucent.misc.io.showing); numpy and PIL come with interpgram.
#
# Workaround: torchvision is NOT installed (its wheels don't load with this CPU torch), but
# lucent/optvis/transform.py does `from torchvision.transforms import Normalize` at import time. It
# uses Normalize only in transform.normalize() (ImageNet normalisation, i.e. render_vis(...,
# preprocess=True)); the benchmark passes preprocess=False and normalises inside its model wrapper.
# So this script writes a two-file stand-in package `torchvision` into .venv-lucent's site-packages
# only (never into .venv): `torchvision.transforms.Normalize` done in plain torch, the same maths as
# torchvision's ((x - mean) / std per channel), and nothing else. lucent itself is left unpatched.
set -euo pipefail
cd "$(dirname "$0")/.."

VENV=.venv-lucent
PY=${PYTHON:-python3}
C=(-c constraints.txt)

[ -x "$VENV/bin/python" ] || "$PY" -m venv "$VENV"
PIP=("$VENV/bin/python" -m pip install --disable-pip-version-check)

"${PIP[@]}" "${C[@]}" torch                 # the pinned CPU build, first, so nothing else picks one
"${PIP[@]}" "${C[@]}" -e .                  # interpgram itself (its deps: numpy, pydantic, ...)
"${PIP[@]}" --no-deps torch-lucent          # no torchvision / CUDA torch
"${PIP[@]}" --no-deps "kornia==0.4.1"      # lucent.optvis.transform imports kornia
"${PIP[@]}" "${C[@]}" tqdm decorator ipython  # the rest of lucent.optvis's imports

# The torchvision stand-in (see the top of this file). Skipped if a real torchvision is there.
SITE=$("$VENV/bin/python" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')
if [ ! -d "$SITE/torchvision" ] || [ -f "$SITE/torchvision/LUCENT_STUB" ]; then
  mkdir -p "$SITE/torchvision"
  echo "stand-in written by benchmarks/lucent_env.sh; not the real torchvision" > "$SITE/torchvision/LUCENT_STUB"
  cat > "$SITE/torchvision/__init__.py" <<'PYEOF'
"""Stand-in written by interpgram's benchmarks/lucent_env.sh: NOT torchvision.

It exists only so that `lucent.optvis.transform` (which does `from torchvision.transforms import
Normalize` at import time) imports with a CPU-only torch that has no matching torchvision wheel.
Only torchvision.transforms.Normalize is provided."""
__version__ = "0.0.0+lucent-stub"
from . import transforms  # noqa: E402,F401
PYEOF
  cat > "$SITE/torchvision/transforms.py" <<'PYEOF'
"""Stand-in (see torchvision/__init__.py): torchvision.transforms.Normalize in plain torch."""
import torch


class Normalize(torch.nn.Module):
    def __init__(self, mean, std, inplace=False):
        super().__init__()
        self.mean, self.std, self.inplace = list(mean), list(std), inplace

    def forward(self, tensor):
        mean = torch.as_tensor(self.mean, dtype=tensor.dtype, device=tensor.device).view(-1, 1, 1)
        std = torch.as_tensor(self.std, dtype=tensor.dtype, device=tensor.device).view(-1, 1, 1)
        return tensor.sub_(mean).div_(std) if self.inplace else (tensor - mean) / std
PYEOF
fi

# Fails loudly if something lucent.optvis imports is still missing, or if torchvision crept in.
"$VENV/bin/python" - <<'EOF'
import importlib.util, sys
import torch
from lucent.optvis import render, param, transform, objectives  # noqa: F401
x = torch.rand(2, 3, 64, 64)
for t in transform.standard_transforms:  # exercises kornia (translate, rotate)
    x = t(x)
assert "+cpu" in torch.__version__ or not torch.cuda.is_available(), torch.__version__
import torchvision
assert torchvision.__version__.endswith("lucent-stub"), "a real torchvision got in: remove .venv-lucent"
import importlib.metadata as md
print(f"ok: torch {torch.__version__}, torch-lucent {md.version('torch-lucent')}, kornia {md.version('kornia')}")
EOF
