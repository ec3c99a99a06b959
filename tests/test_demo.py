import json

import pandas as pd
from typer.testing import CliRunner

from medtransfer.cli import app


def test_demo_runs_offline_and_says_which_weights(tmp_path):
    """--json (narrow, not a terminal): stdout is the fold table's rows alone (per fold, then mean ± std per regime
    and shot count); the steps and the weights used go to stderr."""
    result = CliRunner(env={"COLUMNS": "40"}).invoke(
        app, ["demo", "--workdir", str(tmp_path / "demo"), "--patients", "60", "--json"], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    assert "weights used:" in result.stderr and "random initialisation" in result.stderr
    rows = json.loads(result.stdout)
    assert [r["fold"] for r in rows if r["row"] == "fold"] == [0, 1, 2, 3, 4]
    assert {(r["regime"], r["shots"]) for r in rows if r["row"] == "mean"} == {
        ("full", 0), ("fewshot", 2), ("fewshot", 4), ("fewshot", 8), ("fewshot", 16)}
    assert all(-1 <= r["mcc"] <= 1 for r in rows)
    results = pd.read_csv(tmp_path / "demo" / "results" / "results.csv")
    assert set(results["regime"]) == {"full", "fewshot"}
    assert results.loc[results["regime"] == "full", "fold"].nunique() == 5
