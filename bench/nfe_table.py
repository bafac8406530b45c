"""One table of the few-step samplers at fixed NFE budgets on every path, from the JSON files that

    for p in vp subvp ve ddpm cosine edm rectified_flow; do
        nice -n 10 python bench/samplers.py --sde $p --num 2000 --only "fast:" --nfe 5,10,15,20,50 \\
            --out bench/results/fast_nfe_$p
    done

writes (the exact score of the 2-D 'gmm2d' mixture, 2,000 samples, seed 0). Each cell: the gap of the samples' mean
exact log-density to its expectation in units of its Monte-Carlo standard error (|z| < 2: within error), and the
sliced W2 to the truth as a multiple of an exact sample set's (its floor).

    python bench/nfe_table.py > bench/results/fast_nfe.md
    python bench/nfe_table.py bench/results sa_nfe > bench/results/sa_nfe.md   # the SA-Solver rows, run apart
"""

from __future__ import annotations

import glob
import json
import os
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
PATHS = ("vp", "subvp", "ve", "ddpm", "cosine", "edm", "rectified_flow")
BUDGETS = (5, 10, 15, 20, 50)


def load(folder: str, prefix: str = "fast_nfe") -> dict:
    """{path: JSON record} of the <prefix>_<path>.json files in `folder`."""
    found = {}
    for name in glob.glob(os.path.join(folder, f"{prefix}_*.json")):
        record = json.load(open(name))
        found[record["sde"]] = record
    return found


def table(records: dict) -> str:
    """A markdown table: one row per (path, sampler), one column per NFE budget (a run's NFE in brackets when it
    is below the budget)."""
    budgets = BUDGETS
    lines = ["| path | sampler | " + " | ".join(f"{n} NFE" for n in budgets) + " |"]
    lines.append("|---|---|" + "---:|" * len(budgets))
    for path in [p for p in PATHS if p in records]:
        rec = records[path]
        se, floor = rec["floors"]["logp_se"], rec["floors"]["sw_floor"]
        for label in dict.fromkeys(r["sampler"] for r in rec["rows"]):
            mine = [r for r in rec["rows"] if r["sampler"] == label]
            row = []
            for n in budgets:  # the run with the most calls within the budget (EDM's Heun: odd counts)
                r = max((r for r in mine if r["nfe"] <= n), key=lambda r: r["nfe"], default=None)
                shown = "" if r is None or r["nfe"] == n else f" ({r['nfe']})"
                row.append("" if r is None else f"z {r['dlogp'] / se:+.1f}, W {r['sw'] / floor:.2f}{shown}")
            lines.append(f"| {path} | {label.removeprefix('fast: ')} | " + " | ".join(row) + " |")
    return "\n".join(lines)


if __name__ == "__main__":  # [folder [file prefix]], e.g. `bench/results sa_nfe` for the SA-Solver rows
    print(table(load(sys.argv[1] if len(sys.argv) > 1 else os.path.join(HERE, "results"), *sys.argv[2:3])))
