"""Action statistics, q01/q99 normalisation and the 256-bin action tokenizer (numpy only)."""

from .stats import ActionStats, check_actions
from .tokenizer import ActionTokenizer, action_token_names

__all__ = ["ActionStats", "ActionTokenizer", "action_token_names", "check_actions"]
