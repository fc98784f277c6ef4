"""Analysis over MLflow runs: pandas tables, pivots and matplotlib plots."""
