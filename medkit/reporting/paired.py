"""The claims audit on fresh results (``paper_tables/claims_audit_fresh.*``): first vs second place per
benchmark with the paired bootstrap on the same items.

The published-number audit (:mod:`medkit.reporting.claims`) can only treat two models' scores as
independent. Fresh result files keep per-item correctness (``<model>/<benchmark>.items.json``), so where a
run evaluated two or more models on one multiple-choice benchmark, the difference between the two best is
tested on the items themselves (:func:`medkit.eval.scoring.paired_bootstrap`): per-item difficulty cancels
and the interval is tighter than the unpaired one at the same n.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pandas as pd

from medkit.reporting.inputs import ITEMS_SUFFIX, ResultFileError, read_json
from medkit.reporting.tables import NOT_COMPUTED, column_names

N_BOOT = 2000
ALPHA = 0.05


def item_correctness(eval_out: Path, model: str, benchmark: str) -> dict[str, float] | None:
    """Item id -> 1.0 / 0.0 (strict) from a result's per-item file; None when there is none."""
    path = eval_out / "results" / model / f"{benchmark}{ITEMS_SUFFIX}"
    if not path.is_file():
        return None
    rows = read_json(path)
    if not isinstance(rows, list):
        raise ResultFileError(f"{path}: expected a list of per-item rows")
    scores = {}
    for i, row in enumerate(rows):
        if not isinstance(row, dict) or not isinstance(row.get("id"), str) or not isinstance(row.get("correct"), bool):
            raise ResultFileError(f"{path}: row {i} needs a string 'id' and a boolean 'correct'")
        scores[row["id"]] = float(row["correct"])
    return scores


def paired_row(eval_out: Path, first: dict[str, Any], second: dict[str, Any], seed: int) -> dict[str, Any]:
    from medkit.eval.scoring import paired_bootstrap

    a = item_correctness(eval_out, first["model"], first["benchmark"])
    b = item_correctness(eval_out, second["model"], second["benchmark"])
    if a is None or b is None:
        missing = first["model"] if a is None else second["model"]
        reason = f"{NOT_COMPUTED}: {missing} has no per-item file for it"
        return dict.fromkeys(("Difference", "CI low", "CI high", "p (paired)", "p < 0.05"), reason)
    try:
        test = paired_bootstrap(a, b, n_boot=N_BOOT, seed=seed, alpha=ALPHA)
    except ValueError as e:  # scored on different items: no pairing is possible
        reason = f"{NOT_COMPUTED}: {e}"
        return dict.fromkeys(("Difference", "CI low", "CI high", "p (paired)", "p < 0.05"), reason)
    return {"Difference": 100 * test["diff"], "CI low": 100 * test["ci_low"], "CI high": 100 * test["ci_high"],
            "p (paired)": f"{test['p_value']:.3f}", "p < 0.05": "yes" if test["p_value"] < ALPHA else "no"}


def fresh_claims_audit(results: list[dict[str, Any]], eval_out: Path, seed: int = 0) -> pd.DataFrame | None:
    """One row per multiple-choice benchmark that two or more models were evaluated on (same item source);
    None when there is no such benchmark."""
    labels = column_names(r["model"] for r in results)
    groups: dict[tuple[str, str], list[dict[str, Any]]] = {}
    for r in results:
        if "accuracy" in r.get("metrics", {}):
            groups.setdefault((r["benchmark"], r.get("source", "–")), []).append(r)
    rows, index = [], []
    for (benchmark, source), records in sorted(groups.items()):
        if len(records) < 2:
            continue
        first, second = sorted(records, key=lambda r: (-r["metrics"]["accuracy"], r["model"]))[:2]
        rows.append({"Items from": source, "Models": len(records), "n": first["n"],
                     "First": labels[first["model"]], "First (%)": 100 * first["metrics"]["accuracy"],
                     "Second": labels[second["model"]], "Second (%)": 100 * second["metrics"]["accuracy"],
                     **paired_row(eval_out, first, second, seed)})
        index.append(first.get("title", benchmark))
    if not rows:
        return None
    frame = pd.DataFrame(rows, index=index)
    frame.index.name = "Benchmark"
    frame.attrs.update(
        caption="Claims audit on this run's results: first vs second place per benchmark, paired on the same "
                "items (strict accuracy, %).",
        decimals=2, rank=False, missing="–",
        footnotes=[f"Difference: first minus second, with its {100 * (1 - ALPHA):.0f}% paired-bootstrap interval "
                   f"({N_BOOT} resamples of the items, seed {seed}); p: twice the share of resampled "
                   "differences on the far side of zero (resolution 1/2000). Ties in accuracy are broken by "
                   "model name."])
    return frame
