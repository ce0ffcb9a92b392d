"""The README's result tables are generated from docs/results/ (vla.results): a number edited by
hand, or a result folder changed without regenerating, fails here."""

import json

from vla import results


def test_readme_and_docs_tables_match_their_sources():
    for doc in results.DOCUMENTS:
        text = doc.read_text()
        assert results.BLOCK.search(text), f"{doc} has no generated results block"
        assert results.render(text) == text, f"{doc} differs from docs/results/: run python -m vla.results"


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


def test_each_shipped_policy_line_reads_its_result_per_task_and_held_out_layouts(tmp_path, monkeypatch):
    monkeypatch.setattr(results, "RESULTS", tmp_path)

    def write(folder, successes, episodes, per_task=()):
        (tmp_path / folder).mkdir()
        rate = successes / episodes
        (tmp_path / folder / "success.json").write_text(json.dumps({
            "successes": successes, "episodes": episodes, "success_rate": rate, "ci95": [rate - 0.05, rate + 0.04],
            "tasks": [{"successes": k, "episodes": 50} for k in per_task]}))

    write("tiny-libero_goal", 45, 100, per_task=(20, 25))
    write("tiny-libero_goal-heldout_layouts", 9, 10)
    (tmp_path / "tiny-libero_goal" / "provenance.json").write_text(json.dumps({"how": "recipe=cpu", "chosen_on": "10 layouts"}))
    lines = results.libero_policies().splitlines()
    assert lines[0] == "- **Spatial**: not yet." and lines[3] == "- **Long**: not yet."
    assert lines[2] == ("- **Goal**, `checkpoints/tiny-libero_goal`: 45/100 (45.0%, CI 40.0-49.0) over the protocol; "
                        "per task 20, 25 of 50 (`docs/results/tiny-libero_goal/`); 9/10 (90.0%, CI 85.0-94.0) on held-out "
                        "fresh layouts (`docs/results/tiny-libero_goal-heldout_layouts/`). Made by recipe=cpu; chosen on 10 layouts.")
