"""Command-line options of the benches: `key=value` pairs over a bench's defaults, and `--quick`,
which swaps in tiny sizes that finish in seconds to a minute (tests/test_benches.py runs every
bench that way, so none can rot unnoticed). An unknown key or a value of the wrong type is named."""

from __future__ import annotations

import sys
from pathlib import Path


def options(argv: list[str], defaults: dict, quick: dict | None = None) -> dict:
    """The bench's options: `defaults`, then `quick` under --quick, then the key=value arguments
    (each converted to its default's type). Adds "quick": bool."""
    script = Path(sys.argv[0]).name
    is_quick = "--quick" in argv
    opts = {**defaults, **(quick or {} if is_quick else {})}
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
