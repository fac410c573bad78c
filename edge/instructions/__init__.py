"""Instructions in plain words: a deterministic parser (no LLM) and the router that carries them out.

`parse()` turns a text into a `Decision` (rule, question, memory, control, delegate or unknown; the
`edge explain` contract); `Router` answers it through the control surface.
"""

from edge.instructions.parse import HELP, Context, Decision, parse, rule_words
from edge.instructions.router import Router

__all__ = ["HELP", "Context", "Decision", "Router", "parse", "rule_words"]
