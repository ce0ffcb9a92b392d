"""Benches cannot rot: each runs end to end in its quick mode (`--quick`: tiny sizes, the real
code paths) and prints its `RESULT key=value ...` line last. Slow as a set (~20 min: the two orchestration benches
chain collection, training and evaluation, ~4 min each): `-m slow`."""

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
BENCHES = sorted(p.name for p in (REPO / "bench").glob("*.py"))
RESULT_LINE = re.compile(r"^RESULT( [A-Za-z0-9_]+=\S+)+$")


def test_every_bench_has_a_quick_mode_and_named_options():
    for name in BENCHES:
        text = (REPO / "bench" / name).read_text()
        assert "--quick" in text and "options(" in text, f"bench/{name} has no --quick mode (vla.benchopts)"


def test_bench_options_name_what_is_wrong(monkeypatch):
    from vla.benchopts import options

    monkeypatch.setattr(sys, "argv", ["bench/x.py"])
    assert options(["steps=7"], {"steps": 30, "png": "a.png"}, quick={"steps": 3}) == {"steps": 7, "png": "a.png", "quick": False}
    assert options(["--quick"], {"steps": 30}, quick={"steps": 3}) == {"steps": 3, "quick": True}
    for bad, message in ((["stpes=7"], "unknown option 'stpes'; known: steps"), (["steps=x"], "steps='x' is not a int"),
                         (["steps"], "arguments are key=value or --quick")):
        with pytest.raises(SystemExit, match=message):
            options(bad, {"steps": 30})


@pytest.mark.slow
@pytest.mark.parametrize("name", BENCHES)
def test_bench_quick_mode_runs_and_reports(name):
    python = sys.executable
    if name == "robocasa_cost.py":
        python = str(REPO / ".venv-robocasa" / "bin" / "python")
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    done = subprocess.run([python, f"bench/{name}", "--quick"], cwd=REPO, env=env, capture_output=True, text=True,
                          timeout=900)
    assert done.returncode == 0, done.stderr[-3000:]
    last = done.stdout.strip().splitlines()[-1]
    assert RESULT_LINE.match(last), last
    assert "nan" not in last.lower(), last
