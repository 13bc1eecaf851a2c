"""Planning: a request in words becomes a pipeline, through a grammar whose every sentence is one.

`plan_grammar` writes the grammar for a catalogue and a set of files, `plan_to_pipeline` reads a
sentence of it back as a validated `Pipeline`, and `check_files_usable` refuses, before any model
runs, files that no task takes. docs/planning.md explains the design.
"""

from .calls import PLAN, check_files_usable, parse_files
from .grammar import max_chars, plan_grammar, plan_rules
from .terms import plan_to_pipeline

__all__ = ["PLAN", "check_files_usable", "max_chars", "parse_files", "plan_grammar", "plan_rules",
           "plan_to_pipeline"]
