import pandas as pd


def test_demo_runs_offline_and_says_which_weights(tmp_path, cli):
    result = cli("demo", "--workdir", tmp_path / "demo", "--patients", "60")
    assert result.exit_code == 0, result.output
    assert "weights used:" in result.output and "random initialisation" in result.output
    assert "mean ± std" in result.output and "MCC" in result.output
    results = pd.read_csv(tmp_path / "demo" / "results" / "results.csv")
    assert set(results["regime"]) == {"full", "fewshot"}
    assert results.loc[results["regime"] == "full", "fold"].nunique() == 5
