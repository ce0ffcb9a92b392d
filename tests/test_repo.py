"""The README's commands are the ones CI and a newcomer run."""

from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def readme_commands():
    text = (ROOT / "README.md").read_text()
    block = text.split("```bash\n", 1)[1].split("```", 1)[0]
    return [line.split("#")[0].strip() for line in block.strip().splitlines()]


def test_readme_starts_with_setup_and_test_commands():
    setup, tests = readme_commands()
    assert setup.startswith("./install.sh && ") and ("vla.train" in setup or "vla.collect" in setup)
    assert "pytest" in tests


def test_ci_runs_install_then_exactly_the_readme_test_command():
    lines = [l for l in (ROOT / ".ci/run").read_text().splitlines() if l and not l.startswith(("#", "set ", "cd "))]
    assert lines == ["bash install.sh", readme_commands()[1]]
