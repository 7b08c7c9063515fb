"""``hf:PATH`` or ``hf:ORG/NAME``: a Hugging Face ``transformers`` image classifier (the ``hf`` extra).

``PATH`` is a folder written by ``save_pretrained`` (read offline, relative to the spec's folder);
``ORG/NAME`` a hub id, which transformers downloads into its cache when online (offline, or with
``HF_HUB_OFFLINE=1``, only a copy already in that cache loads). The model is built with
``AutoModelForImageClassification``; its forward returns an ``ImageClassifierOutput`` whose ``.logits``
interpgram reads.

- **Preprocessing** comes from the saved image processor (``preprocessor_config.json``): the input size
  (``crop_size`` after a centre crop, else ``size``), ``image_mean`` / ``image_std``, ``rescale_factor``;
  ``size: {height, width}`` without a crop is an exact resize (``resize: stretch``, as the processor
  does), anything else covers the size and crops the centre (``resize: shorter``). The spec's
  ``model: {size, mean, std, resize, crop}`` override it.
- **Class names** are the config's ``id2label``; ``model.labels`` (one name per line) overrides them.
- **Weights** load as transformers loads them: ``model.safetensors`` when present, else
  ``pytorch_model.bin`` read with ``torch.load(weights_only=True)`` (tensors only: a pickle holding
  anything else is refused, as :func:`~interpgram.backends.models.base.load_weights_file` refuses it).
- ``model.weights``: a state_dict / safetensors file of the same architecture, loaded key by key over
  the saved weights (a fine-tuned checkpoint).
- **Custom code** (a config whose ``auto_map`` names Python files, ``trust_remote_code``) runs only with
  ``--allow-code`` (``allow_code=True`` from Python), like ``python:``.
"""
from __future__ import annotations

import hashlib
import json
import re
from pathlib import Path
from typing import Optional

from interpgram.backends.models.base import (LOAD_ERRORS, LoadedModel, ModelSourceError, Preprocess, SourceContext,
                                             finish, fit_state_dict, load_weights_file, make_preprocess, model_source,
                                             read_labels)

#: a Hugging Face hub repository id: NAME or ORG/NAME (letters, digits, ``-``, ``_``, ``.``; at most 96 characters)
HUB_ID = re.compile(r"^(?!.*(--|\.\.))[A-Za-z0-9][\w.-]{0,95}(/[A-Za-z0-9][\w.-]{0,95})?$")
_EXTRA = "install the extra: pip install 'interpgram[hf]'"


def _first(e: BaseException) -> str:
    return (str(e).strip().splitlines() or [type(e).__name__])[0]


def _where(ctx: SourceContext) -> tuple[str, Optional[Path]]:
    """(what transformers is given, the local folder or None for a hub id), or a ModelSourceError."""
    path = ctx.path(ctx.ref)
    if path.is_dir():
        if not (path / "config.json").is_file():
            raise ModelSourceError(f"hf:{ctx.ref}: the folder {path} has no config.json, so it is not a folder written "
                                   "by save_pretrained (model.save_pretrained(folder) writes config.json and the weights)")
        return str(path), path
    if path.exists():
        raise ModelSourceError(f"hf:{ctx.ref}: {path} is a file; hf: takes the folder model.save_pretrained(folder) "
                               "wrote, or a Hugging Face hub id (ORG/NAME)")
    if not HUB_ID.match(ctx.ref):
        raise ModelSourceError(f"hf:{ctx.ref}: no folder {path} (a relative path starts at the spec's folder; on "
                               f"the command line at --base-dir or the current folder), and {ctx.ref!r} is not a "
                               "Hugging Face hub id (ORG/NAME)")
    return ctx.ref, None


def _preprocess(proc: dict, config, name: str) -> tuple[Preprocess, list[str]]:
    """The :class:`Preprocess` a saved image processor describes, and notes on what it could not say."""
    notes: list[str] = []
    if not proc:
        size = getattr(config, "image_size", 224)
        size = tuple(size) if isinstance(size, (list, tuple)) else (size, size)
        notes.append(f"{name} has no preprocessor_config.json: inputs are {size[1]}×{size[0]} px (the config's "
                     "image_size), raw [0, 1] pixels; set model: {size, mean, std} in the spec")
        return make_preprocess(Preprocess(), {"size": list(size)}, f"{name}: config.json"), notes
    where = f"{name}: preprocessor_config.json"
    size, crop = proc.get("size"), proc.get("crop_size")
    s = {}
    if proc.get("do_center_crop") and crop is not None:
        s["size"] = [crop["height"], crop["width"]] if isinstance(crop, dict) else crop
        s["resize"] = "shorter"
    elif isinstance(size, dict) and "height" in size and "width" in size:
        s["size"] = [size["height"], size["width"]]
        s["resize"] = "stretch" if proc.get("do_resize", True) else "shorter"
    elif isinstance(size, dict) and "shortest_edge" in size:
        s["size"] = size["shortest_edge"]
        pct = proc.get("crop_pct")
        # ConvNeXt's processor: below 384 px it resizes the shorter side to size / crop_pct, then crops
        # size; from 384 px on it resizes to size × size
        s["resize"] = "stretch" if pct is not None and size["shortest_edge"] >= 384 else "shorter"
        if pct is not None and size["shortest_edge"] < 384 and pct != 1:
            notes.append(f"{name}'s processor resizes the shorter side to {int(size['shortest_edge'] / pct)} px "
                         f"(crop_pct {pct:g}) before its centre crop; here the shorter side is resized to "
                         f"{size['shortest_edge']} px, so the whole shorter side is kept")
    elif isinstance(size, int):
        s["size"] = size
    else:
        s["size"] = getattr(config, "image_size", 224)
        notes.append(f"{name}: the processor's size {size!r} is not a form interpgram reads; using the config's "
                     f"image_size; set model.size in the spec")
    if proc.get("do_normalize", True):
        s["mean"] = proc.get("image_mean") or [0.5, 0.5, 0.5]
        s["std"] = proc.get("image_std") or [0.5, 0.5, 0.5]
    factor = float(proc.get("rescale_factor", 1 / 255)) if proc.get("do_rescale", True) else 1.0
    if abs(255 * factor - 1) > 1e-6:  # pixels as 0…255 × factor, not [0, 1]
        s["value_range"] = [0.0, 255 * factor]
    return make_preprocess(Preprocess(), s, where), notes


@model_source("hf", "hf:PATH (a save_pretrained folder) or hf:ORG/NAME (a hub id): a transformers image "
                    "classifier (needs the hf extra)")
def _hf(ctx: SourceContext) -> LoadedModel:
    name = f"hf:{ctx.ref}"
    try:
        import transformers
        from transformers import AutoConfig, AutoModelForImageClassification
        from transformers.image_processing_base import ImageProcessingMixin
    except ImportError as e:
        raise ModelSourceError(f"{name} needs transformers ({type(e).__name__}: {e}); {_EXTRA}") from None
    if ctx.factory:
        raise ModelSourceError(f"{name}: the architecture comes from its config.json; model.factory is for file: "
                               "state_dicts (drop it, or give the weights as model.weights)")
    target, folder = _where(ctx)
    fetch = "" if folder else (" (a hub id: transformers downloads it when online, or finds it in its cache; "
                               "offline, give the folder save_pretrained wrote)")

    def refused(e: BaseException, what: str) -> ModelSourceError:
        msg = str(e)
        if "trust_remote_code" in msg:
            return ModelSourceError(f"{name} runs custom Python code from its repository (its config's auto_map); "
                                    "load it only if you trust that code, by passing --allow-code (or "
                                    "allow_code=True from Python)")
        return ModelSourceError(f"{name}: {what}: {_first(e)}{fetch}")

    try:
        config = AutoConfig.from_pretrained(target, trust_remote_code=ctx.allow_code)
    except (OSError, ValueError, KeyError) as e:  # missing / not JSON / offline / unknown model_type / remote code
        raise refused(e, "its config does not load") from None
    kinds = AutoModelForImageClassification._model_mapping
    if not ctx.allow_code or not getattr(config, "auto_map", None):
        if type(config) not in kinds.keys():
            raise ModelSourceError(
                f"{name} is a {getattr(config, 'model_type', type(config).__name__)!r} model, not an image classifier: "
                "hf: loads models AutoModelForImageClassification builds (ViT, ConvNeXt, ResNet, Swin, DeiT, BEiT, "
                "EfficientNet, MobileNet, …)")
    if getattr(config, "num_channels", 3) != 3:
        raise ModelSourceError(f"{name} takes {config.num_channels}-channel images; interpgram feeds RGB images "
                               "(3 channels)")
    bars = transformers.utils.logging.is_progress_bar_enabled()
    transformers.utils.logging.disable_progress_bar()  # "Loading weights: 100%" on every load, in every report's log
    try:
        module, info = AutoModelForImageClassification.from_pretrained(
            target, config=config, trust_remote_code=ctx.allow_code, weights_only=True, dtype="float32",
            output_loading_info=True)
    except (ImportError, *LOAD_ERRORS) as e:  # no weights, damaged weights, a pickle with objects, a missing package
        raise refused(e, "the model does not load") from None
    finally:
        if bars:
            transformers.utils.logging.enable_progress_bar()
    # transformers fills weights the checkpoint lacks with random values and only logs it (a base model saved
    # without its classifier head gets a random head): that is not the model the user named
    missing = sorted(info.get("missing_keys") or [])
    mismatched = [f"{k}: {tuple(a)} vs {tuple(b)}" for k, a, b in sorted(info.get("mismatched_keys") or [])]
    if missing or mismatched:
        said = [f"{len(missing)} missing keys {missing[:5]}"] if missing else []
        said += [f"{len(mismatched)} shape mismatches: " + "; ".join(mismatched[:5])] if mismatched else []
        raise ModelSourceError(f"{name}: its weights do not fit the model its config describes (transformers would "
                               f"fill them with random values): " + "; ".join(said))
    if ctx.weights:  # a state_dict of this architecture (a fine-tuned checkpoint) over the saved weights
        path = ctx.path(ctx.weights)
        fit_state_dict(module, load_weights_file(path), path, f"the model {name}'s config describes")
    try:
        proc, _ = ImageProcessingMixin.get_image_processor_dict(target)
    except OSError:  # no preprocessor_config.json: the config's image_size, raw pixels, with a note
        proc = {}
    except ValueError as e:  # not valid JSON
        raise ModelSourceError(f"{name}: its preprocessor_config.json does not load: {_first(e)}") from None
    pre, notes = _preprocess(proc, config, name)
    if any(ctx.preprocess.get(k) is not None for k in ("size", "mean", "std")):
        notes = [n for n in notes if "no preprocessor_config.json" not in n]
    n_out = int(getattr(config, "num_labels", 0) or 0)
    id2label = {int(k): str(v) for k, v in (getattr(config, "id2label", None) or {}).items()}
    classes = [id2label.get(i, f"LABEL_{i}") for i in range(n_out)]
    if ctx.labels:
        names = read_labels(ctx.path(ctx.labels))
        if len(names) != n_out:
            raise ModelSourceError(f"labels file {ctx.path(ctx.labels)} has {len(names)} names, but {name} has "
                                   f"{n_out} outputs (config.num_labels)")
        classes = names
    elif all(c == f"LABEL_{i}" for i, c in enumerate(classes)):
        notes.append(f"{name}'s config.id2label holds no names (LABEL_0 …); give model.labels for the real ones")
    model = finish(name, module, pre, classes, notes)
    h = hashlib.sha256(f"{model.digest}|{transformers.__version__}|{config.to_json_string()}|"
                       f"{json.dumps(proc, sort_keys=True, default=str)}".encode())
    model.digest = h.hexdigest()[:32]
    return model
