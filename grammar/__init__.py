"""interpgram.grammar: the spec (pydantic), YAML loading with positions, the compiler and the plan IR.

Imports nothing from interpgram.backends: the pipeline runs one way, spec → plan → results → views.
"""
from interpgram.grammar.spec.errors import Diagnostic, SpecError, did_you_mean, nearest
from interpgram.grammar.spec.load import LoadedSpec, load_spec, load_spec_text
from interpgram.grammar.presentation import PRESENTATIONS, Presentation, register_presentation
from interpgram.grammar.compile import CompileOptions, ModelInfo, compile_spec
from interpgram.grammar.plan import Plan, Target
from interpgram.grammar.spec.nodes import SPEC_VERSION, Spec


def json_schema() -> dict:
    """The spec's JSON Schema (for editor autocompletion), with the registered presentations listed."""
    schema = Spec.model_json_schema(by_alias=True)
    schema["$schema"] = "https://json-schema.org/draft/2020-12/schema"
    schema["title"] = "interpgram spec"
    names = list(PRESENTATIONS)

    def enum_strings(node):  # the string branches of `presentation` name a registered presentation
        if isinstance(node, dict):
            if node.get("type") == "string" and not node.get("enum"):
                node["enum"] = names
            for v in node.values():
                enum_strings(v)
        elif isinstance(node, list):
            for v in node:
                enum_strings(v)

    defs = schema["$defs"]
    enum_strings(defs["Element"]["properties"]["presentation"])
    options = {}
    for n, k in PRESENTATIONS.items():
        sub = k.Options.model_json_schema()
        defs.update(sub.pop("$defs", {}))  # nested option models (icon settings): refs resolve from the root
        options[n] = sub
    defs["PresentationSpec"].update({
        "type": "object", "minProperties": 1, "maxProperties": 1, "propertyNames": {"enum": names},
        "properties": options,
    })
    return schema


__all__ = [
    "CompileOptions", "Diagnostic", "LoadedSpec", "ModelInfo", "PRESENTATIONS", "Plan", "Presentation", "SPEC_VERSION",
    "Spec", "SpecError", "Target", "compile_spec", "did_you_mean", "json_schema", "load_spec",
    "load_spec_text", "nearest", "register_presentation",
]
