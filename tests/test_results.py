"""The README's result tables are generated from docs/results/ (vla.results): a number edited by
hand, or a result folder changed without regenerating, fails here."""

import json

from vla import results


def test_readme_tables_match_their_sources():
    text = (results.ROOT / "README.md").read_text()
    assert results.BLOCK.search(text), "README.md has no generated results block"
    assert results.render(text) == text, "README.md differs from docs/results/: run python -m vla.results"


def test_the_table_reads_each_suite_from_its_result_folder(tmp_path, monkeypatch):
    monkeypatch.setattr(results, "RESULTS", tmp_path)
    assert "| not yet | not yet | not yet | not yet | (0 of 4 suites) |" in results.libero_table()
    for suite, rate in (("libero_spatial", 0.9), ("libero_object", 0.8), ("libero_goal", 0.7), ("libero_10", 0.6)):
        (tmp_path / f"tiny-{suite}").mkdir()
        (tmp_path / f"tiny-{suite}" / "success.json").write_text(json.dumps({"success_rate": rate, "ci95": [rate - 0.03, rate + 0.02]}))
    (tmp_path / "tiny-libero_10" / "provenance.json").write_text(json.dumps({"cpu_hours": {"collection": 1.25, "training": 2.0}}))
    table = results.libero_table()
    assert "| **90.0** (87.0-92.0) | **80.0** (77.0-82.0) | **70.0** (67.0-72.0) | **60.0** (57.0-62.0) | **75.0** |" in table
    assert "|  |  |  | 3.3 (1.3 + 2.0) | |" in table  # rounded half up
    assert "| OpenVLA 7B | 84.7 | 88.4 | 79.2 | 53.7 | 76.5 |" in table and "| pi0 3B (openpi) | 96.8 | 98.8 | 95.8 | 85.2 | 94.2 |" in table
    edited = results.render("<!-- results:libero -->\n| made up |\n<!-- /results:libero -->")
    assert "made up" not in edited and "**75.0**" in edited
