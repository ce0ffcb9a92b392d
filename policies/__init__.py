"""Policies: the Policy protocol, the VLA (backbone + action head) and model-free baselines."""

from .base import Policy, RandomPolicy, ScriptedPolicy

__all__ = ["Policy", "RandomPolicy", "ScriptedPolicy", "VLAPolicy"]


def __getattr__(name):  # VLAPolicy pulls in torch and transformers: import it only when asked
    if name == "VLAPolicy":
        from .vla_policy import VLAPolicy

        return VLAPolicy
    raise AttributeError(name)
