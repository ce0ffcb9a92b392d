"""Command-line options of the benches: `key=value` pairs over a bench's defaults, and `--quick`,
which swaps in tiny sizes that finish in seconds to a minute (tests/test_benches.py runs every
bench that way, so none can rot unnoticed). An unknown key or a value of the wrong type is named.
`toy_policy`: what the quick modes that need a trained policy train instead."""

from __future__ import annotations

import sys
from pathlib import Path


def options(argv: list[str], defaults: dict, quick: dict | None = None) -> dict:
    """The bench's options: `defaults`, then `quick` under --quick, then the key=value arguments
    (each converted to its default's type). Adds "quick": bool."""
    script = Path(sys.argv[0]).name
    is_quick = "--quick" in argv
    opts = {**defaults, **((quick or {}) if is_quick else {})}
    for arg in argv:
        if arg == "--quick":
            continue
        key, eq, value = arg.partition("=")
        if not eq:
            raise SystemExit(f"{script}: arguments are key=value or --quick, got {arg!r}")
        if key not in defaults:
            raise SystemExit(f"{script}: unknown option {key!r}; known: {', '.join(sorted(defaults))}")
        kind = type(defaults[key])
        try:
            opts[key] = (value.lower() in ("1", "true", "yes")) if kind is bool else value if defaults[key] is None else kind(value)
        except ValueError:
            raise SystemExit(f"{script}: {key}={value!r} is not a {kind.__name__}") from None
    return {**opts, "quick": is_quick}


def toy_policy(folder: Path, *overrides: str) -> Path:
    """What a --quick run trains instead of a real policy: a byte-vocabulary tiny VLA, 4 steps on one
    real scripted demonstration of libero_spatial task 0 (agentview, 64 px), in `folder`/run (with
    `overrides` on top, e.g. validation); returns its last checkpoint."""
    from hydra import compose, initialize_config_dir

    from vla.dataset.collection import collect_demos
    from vla.train import train

    data = collect_demos("libero_spatial", folder / "data" / "base", 1, ["agentview"], 64, tasks=[0])
    with initialize_config_dir(config_dir=str(Path(__file__).resolve().parents[1] / "configs"), version_base="1.3"):
        cfg = compose(config_name="config", overrides=[
            "model.vocab=bytes", "train.cameras=[agentview]", "suite.resolution=64", f"train.dataset={data}",
            "train.max_steps=4", "train.save_every=4", "train.eval_trials_per_task=0", f"train.output_dir={folder / 'run'}",
            *overrides])
    return train(cfg)
