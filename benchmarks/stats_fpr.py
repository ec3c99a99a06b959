"""Benchmark: false-positive rates of the report's paired test against the fold-level Wilcoxon it replaced, on
studies of two equal methods fitted on real folds of one shared data set (``medtransfer.testing.studies``).

    python benchmarks/stats_fpr.py --studies 1000

Prints, per (folds, repeats, shots), the share of studies in which each test calls the equal methods different
at 0.05, with two Monte Carlo standard errors. The exact Wilcoxon is slow at 10 folds (scipy enumerates)."""

from __future__ import annotations

import argparse
import time

import numpy as np
from scipy import stats

from medtransfer.report.stats import paired_pvalues
from medtransfer.testing.studies import simulate_fold_differences

CASES = [(5, 1, 0), (10, 1, 0), (5, 1, 4), (10, 1, 4), (5, 3, 0), (10, 3, 0), (5, 3, 4), (10, 3, 4)]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--studies", type=int, default=1000)
    args = parser.parse_args()
    se2 = 2 * np.sqrt(0.05 * 0.95 / args.studies)
    print(f"{args.studies} studies per row; 2 SE = {se2:.3f}")
    print(f"{'folds':>5} {'repeats':>7} {'shots':>5} {'wilcoxon':>9} {'corrected t':>11} {'seconds':>7}")
    for k, repeats, shots in CASES:
        start = time.perf_counter()
        diff = simulate_fold_differences(np.random.default_rng([k, repeats, shots, 1]), args.studies, k=k,
                                         repeats=repeats, shots=shots)
        tied = np.all(np.isclose(diff, 0.0), axis=1)
        wilcoxon = np.ones(len(diff))
        wilcoxon[~tied] = stats.wilcoxon(diff[~tied], axis=1).pvalue
        corrected = paired_pvalues(diff, n_repeats=repeats)
        print(f"{k:>5} {repeats:>7} {shots:>5} {np.mean(wilcoxon < 0.05):>9.3f} {np.mean(corrected < 0.05):>11.3f} "
              f"{time.perf_counter() - start:>7.1f}")


if __name__ == "__main__":
    main()
