"""The compiler: spec → plan (``interface``), in pieces that follow its work: what it is told about the
model (``model_info``), its vocabulary (``vocab``), the builder of nodes and checks (``builder``), content
lowering (``content``), elements (``element``) and links (``links``)."""
from interpgram.grammar.compile.builder import Builder, option_error
from interpgram.grammar.compile.interface import compile_all, compile_spec, compile_variants
from interpgram.grammar.compile.model_info import CompileOptions, ModelInfo
from interpgram.grammar.compile.vocab import (
           CAPTURE_ID,
           COLLECT_ID,
           Content,
           Invalid,
           Selection,
           freeze,
           map_position,
           top_rank,
)

__all__ = ["CAPTURE_ID", "COLLECT_ID", "Builder", "CompileOptions", "Content", "Invalid", "ModelInfo", "Selection",
           "compile_all", "compile_spec", "compile_variants", "freeze", "map_position", "option_error", "top_rank"]
