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
    """...then the slow set (README: its time and what CI leaves out of it)."""
    lines = [l for l in (ROOT / ".ci/run").read_text().splitlines() if l and not l.startswith(("#", "set ", "cd "))]
    assert lines[:2] == ["bash install.sh", readme_commands()[1]]
    slow = " ".join(lines[2:])
    assert slow.startswith(readme_commands()[1] + " -m slow") and "slow set" in (ROOT / "README.md").read_text()


PACKAGES = ("vla", "envs", "policies", "action_tokenizer", "eval_rollouts")


def module_name(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def project_imports(path: Path, modules: set[str]) -> set[str]:
    """The project modules a file imports anywhere in it (function-level imports too)."""
    import ast

    me = module_name(path)
    package = me if path.name == "__init__.py" else me.rpartition(".")[0]
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = package.split(".")[:len(package.split(".")) - node.level + 1] if node.level else []
            mod = ".".join(base + ([node.module] if node.module else []))
            names = [mod] + [f"{mod}.{a.name}" for a in node.names]
        else:
            continue
        for name in names:
            while name and name not in modules:
                name = name.rpartition(".")[0]
            if name and name != me and not me.startswith(name + "."):  # a package's own __init__ is no edge
                found.add(name)
    return found


def test_no_import_circle_and_no_file_over_400_lines():
    files = [p for pkg in PACKAGES for p in (ROOT / pkg).rglob("*.py")]
    modules = {module_name(p): p for p in files}
    graph = {m: project_imports(p, set(modules)) for m, p in modules.items()}
    long = {m: n for m, p in modules.items() if (n := len(p.read_text().splitlines())) > 400}
    assert not long, f"files over 400 lines: {long}"

    state: dict[str, int] = {}  # 1: on the current path, 2: done

    def visit(m: str, path: list[str]) -> None:
        state[m] = 1
        for n in sorted(graph[m]):
            if state.get(n) == 1:
                raise AssertionError("import circle: " + " -> ".join(path[path.index(n):] + [m, n]))
            if n not in state:
                visit(n, path + [m])
        state[m] = 2

    for m in sorted(graph):
        if m not in state:
            visit(m, [])


def heading_anchors(text: str) -> set[str]:
    """GitHub's anchors for a markdown file's headings: lowercase, punctuation dropped, spaces to dashes."""
    import re

    anchors = set()
    for line in text.splitlines():
        if line.startswith("#"):
            title = line.lstrip("#").strip().lower()
            anchors.add(re.sub(r"[^\w\- ]", "", title).replace(" ", "-"))
    return anchors


def test_every_relative_link_in_the_docs_leads_somewhere():
    """Docs move (the changelog took the lab-notebook passages): a link to a file or heading that
    is gone fails here."""
    import re

    pages = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
    broken = []
    for page in pages:
        for target in re.findall(r"\]\(([^)\s]+)\)", page.read_text()):
            if target.startswith(("http://", "https://", "mailto:")):
                continue
            path, _, anchor = target.partition("#")
            file = (page.parent / path).resolve() if path else page
            if not file.exists():
                broken.append(f"{page.name}: {target} (no such file)")
            elif anchor and file.suffix == ".md" and anchor not in heading_anchors(file.read_text()):
                broken.append(f"{page.name}: {target} (no such heading)")
    assert not broken, broken
