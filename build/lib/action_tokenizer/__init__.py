"""Action statistics, q01/q99 normalisation and the 256-bin action tokenizer (numpy only)."""

from .stats import ActionStats, check_actions
from .tokenizer import ActionTokenizer

__all__ = ["ActionStats", "ActionTokenizer", "check_actions"]
