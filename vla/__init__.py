"""vla: a vision-language model as a robot policy.

    import vla
    policy = vla.load_policy("tiny-libero_spatial")   # a shipped checkpoint, or a checkpoint folder
    actions = policy.act({"images": {"agentview": img, "robot0_eye_in_hand": wrist},   # uint8 [H, W, 3], upright
                          "state": state8, "instruction": "pick up the black bowl ..."})  # -> float32 [1, H, 7]
"""

from __future__ import annotations

from pathlib import Path

CHECKPOINTS = Path(__file__).resolve().parents[1] / "checkpoints"  # the policies shipped in the repository


def shipped_policies() -> list[str]:
    """Names of the checkpoints shipped in `checkpoints/` (each loads by name)."""
    return sorted(p.name for p in CHECKPOINTS.iterdir() if (p / "policy.json").is_file()) if CHECKPOINTS.is_dir() else []


def load_policy(path_or_name: str | Path, device: str = "auto", dtype: str = "auto"):
    """A trained policy, ready to act: `act(obs) -> float32[B, H, 7]` for one observation dict of
    the design (or a batch of them: every leaf with a leading axis B, `instruction` a list).

    `path_or_name`: a checkpoint folder written by `vla.train`, or the name of a shipped one
    (`vla.shipped_policies()`). The checkpoint carries its own preprocessing (cameras, image
    size and crop, prompt, state and action normalisation): pass raw simulator observations."""
    from policies.vla_policy import VLAPolicy

    path = Path(path_or_name)
    if not path.exists() and (CHECKPOINTS / str(path_or_name)).is_dir():
        path = CHECKPOINTS / str(path_or_name)
    if not path.exists():
        raise FileNotFoundError(f"no checkpoint {str(path_or_name)!r}: not a folder, and not one of the shipped "
                                f"policies {shipped_policies()}")
    return VLAPolicy.from_checkpoint(path, device=device, dtype=dtype)


__all__ = ["load_policy", "shipped_policies"]
