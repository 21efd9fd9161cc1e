"""Reviewer mode: which of the paper's comparisons its own numbers can carry (no model, no result files).

Two parts, one table (``paper_tables/claims_audit.{md,csv,tex}``):

* **Rows.** For every row of Tables 4-6: the first and second model, their difference in points, a 95%
  interval for it (Newcombe's hybrid score interval) and a two-sided two-proportion z-test, both at the
  row's item count from Table 3, treating the two scores as independent samples. They are not: both models
  answered the same items, and a paired test on per-item predictions (the paired bootstrap medkit runs on
  fresh results, ``medkit.eval.scoring``) would be tighter; the paper publishes no per-item predictions,
  so the unpaired test is the one its numbers allow. A row is "supported at n" when the test gives
  p < 0.05. The printed percentage is also checked against the item count: a score over n items is k/n
  for a whole k, and a printed value no k/n rounds to means the score was not computed on Table 3's n.
  Impression rows are RaTEScores, not proportions: no test without per-item scores.
* **Claims.** The paper's sentences with numbers (``medkit/configs/claims.yaml``), each recomputed from the
  tables: does it hold as printed, and is it significant at n.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path
from typing import Literal

import pandas as pd

from medkit.config import ConfigError, load_yaml
from medkit.profiles import CONFIG_DIR
from medkit.reporting.published import load_published, model_labels, result_spec

CLAIMS_PATH = CONFIG_DIR / "claims.yaml"
ALPHA = 0.05
NOT_A_PROPORTION = "not computed: a RaTEScore is not a proportion; needs per-item scores"
NO_ITEM_SCORES = "not computed: needs per-report scores (the paper prints means only)"
TABLES = ("4", "5", "6")
SUPPORTED = f"Supported at n (p < {ALPHA:g})"  # ASCII: the LaTeX table compiles without a Greek alpha


@dataclass(frozen=True)
class Claim:
    id: str
    where: str  # the paper's section
    kind: Literal["lead", "gap", "first", "beats", "count", "ratio", "exceeds", "change"]
    summary: str
    model: str
    table: int | None = None
    row: str | None = None
    to_row: str | None = None
    metric: str | None = None
    other: str | None = None
    printed: float | list[float] | None = None
    score: float | None = None  # the model's own score as the sentence prints it (rank claims)
    between: list[float] | None = None
    direction: Literal["gain", "loss"] | None = None
    unrankable: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class Claims:
    claims: list[Claim]


REQUIRED = {"lead": ("table", "row", "printed"), "gap": ("table", "row"), "first": ("table", "row"),
            "beats": ("table", "row", "other"), "count": ("printed",), "ratio": ("metric", "other", "between"),
            "exceeds": ("metric", "other"), "change": ("table", "row", "to_row", "printed", "direction")}


@cache
def load_claims(path: str | Path = CLAIMS_PATH) -> list[Claim]:
    claims = load_yaml(Claims, Path(path)).claims
    labels = set(model_labels())
    for claim in claims:
        missing = [name for name in REQUIRED[claim.kind] if getattr(claim, name) is None]
        if missing:
            raise ConfigError(f"{path}: claim {claim.id} ({claim.kind}) needs {', '.join(missing)}")
        for name in (claim.model, claim.other):
            if name is not None and name not in labels:
                raise ConfigError(f"{path}: claim {claim.id}: unknown model {name!r}; models: {sorted(labels)}")
    return claims


# ---------------------------------------------------------------- the test

@dataclass(frozen=True)
class Comparison:
    """Two printed percentages on n items each, as independent proportions."""

    difference: float  # points, as printed (a - b)
    ci_low: float  # points, from the whole counts
    ci_high: float
    p_value: float
    n: int

    @property
    def supported(self) -> bool:
        """Decided by the test (p < alpha); the interval is reported beside it and agrees except within a
        hair of the margin (the two are different approximations)."""
        return self.p_value < ALPHA


def count_of(percent: float, n: int) -> int:
    return round(percent / 100 * n)


def compare_proportions(a: float, b: float, n: int, n_b: int | None = None) -> Comparison:
    """``a`` vs ``b`` (percentages) on ``n`` (and ``n_b``) items: Newcombe's interval for the difference
    and the pooled two-sided z-test (statsmodels), on the nearest whole counts."""
    from statsmodels.stats.proportion import confint_proportions_2indep, proportions_ztest

    n_b = n_b or n
    k_a, k_b = count_of(a, n), count_of(b, n_b)
    low, high = confint_proportions_2indep(k_a, n, k_b, n_b, method="newcomb", compare="diff", alpha=ALPHA)
    if k_a == k_b and n == n_b:
        p_value = 1.0  # the z statistic is 0/0 only when both are 0% or 100%; equal counts never differ
    else:
        p_value = float(proportions_ztest([k_a, k_b], [n, n_b], alternative="two-sided")[1])
    return Comparison(round(a - b, 10), 100 * float(low), 100 * float(high), p_value, n)


def printable_from(percent: float, n: int, decimals: int = 2) -> str | None:
    """``"k/n"`` for the whole k whose percentage prints as ``percent``; None if no k/n does."""
    k = count_of(percent, n)
    for candidate in (k - 1, k, k + 1):
        if 0 <= candidate <= n and abs(100 * candidate / n - percent) <= 0.5 * 10 ** -decimals + 1e-9:
            return f"{candidate}/{n}"
    return None


# ---------------------------------------------------------------- rows of Tables 4-6

def item_counts() -> dict[str, int]:
    """Benchmark -> items, from Table 3 (a printed row covering two variants gives both its count)."""
    return {b: row.examples for row in load_published().table3.rows for b in row.benchmarks}


def ranked(values: dict[str, float]) -> list[tuple[str, float]]:
    """Models by printed value, best first (paper column order among ties)."""
    order = {m: i for i, m in enumerate(values)}
    return sorted(values.items(), key=lambda kv: (-kv[1], order[kv[0]]))


def table_rows() -> list[tuple[str, object]]:
    """(table number, ResultRow) of Tables 4-6, in print order."""
    return [(t, row) for t in TABLES for row in result_spec(t).rows]


def row_values(row) -> dict[str, float]:
    return {m: v for m, v in zip(model_labels(), row.values) if v is not None}


def fmt(value: float, decimals: int = 2) -> str:
    return f"{value:+.{decimals}f}" if value else f"{0:.{decimals}f}"


def interval_text(c: Comparison) -> str:
    return f"[{c.ci_low:+.2f}, {c.ci_high:+.2f}]"


def p_text(p: float) -> str:
    return "< 0.001" if p < 0.001 else f"{p:.3f}"


def row_audit(row, counts: dict[str, int]) -> dict[str, str]:
    n = counts[row.benchmark]
    (first, a), (second, b) = ranked(row_values(row))[:2]
    cells = {"Compared": f"first {first} {a:.2f} vs second {second} {b:.2f}", "Printed": "–", "Holds": "–",
             "Difference (points)": fmt(a - b), "n (Table 3)": f"{n:,}"}
    if row.metric != "accuracy":
        return {**cells, "95% CI (points)": NOT_A_PROPORTION, "p": NOT_A_PROPORTION,
                SUPPORTED: NOT_A_PROPORTION, "Whole counts at n": NOT_A_PROPORTION}
    test = compare_proportions(a, b, n)
    whole = [f"{m} {printable_from(v, n) or 'none'}" for m, v in ((first, a), (second, b))]
    return {**cells, "95% CI (points)": interval_text(test), "p": p_text(test.p_value),
            SUPPORTED: "yes" if test.supported else "no",
            "Whole counts at n": "; ".join(whole)}


# ---------------------------------------------------------------- the paper's sentences

def find_row(table: int | None, label: str | None):
    for t, row in table_rows():
        if (table is None or t == str(table)) and row.label == label:
            return row
    raise ConfigError(f"{CLAIMS_PATH}: no row {label!r} in Table {table}")


def figure2_value(metric: str, model: str) -> float | None:
    row = next((r for r in result_spec("figure2").rows if r.metric == metric), None)
    if row is None:
        raise ConfigError(f"{CLAIMS_PATH}: Figure 2 has no metric {metric!r}")
    return dict(zip(model_labels(), row.values))[model]


def check_claim(claim: Claim, counts: dict[str, int]) -> dict[str, str]:
    """One claim recomputed: what the tables give, whether the sentence holds as printed, and its test."""
    checks = {"lead": rank_claim, "gap": rank_claim, "first": rank_claim, "beats": rank_claim, "count": count_claim,
              "ratio": figure2_claim, "exceeds": figure2_claim, "change": change_claim}
    cells = checks[claim.kind](claim, counts)
    return {"Compared": claim.summary, **cells}


def rank_claim(claim: Claim, counts: dict[str, int]) -> dict[str, str]:
    """lead / first: the model is first (ties count), compared with the best other model; gap: it is
    second, compared with the first. The printed difference must match the tables' to the cent."""
    row = find_row(claim.table, claim.row)
    values = row_values(row)
    ours = values[claim.model]
    others = ranked({m: v for m, v in values.items() if m != claim.model})
    rival, theirs = (claim.other, values[claim.other]) if claim.kind == "beats" else others[0]
    place = 1 + sum(v > ours for v in values.values())
    difference = round(ours - theirs, 2)
    printed_ok = claim.printed is None or math.isclose(difference, claim.printed, abs_tol=1e-9)
    score_ok = claim.score is None or math.isclose(ours, claim.score, abs_tol=1e-9)
    if claim.kind == "beats":
        holds = score_ok and ours > theirs
    else:
        holds = printed_ok and score_ok and place == (2 if claim.kind == "gap" else 1)
    test = compare_proportions(ours, theirs, counts[row.benchmark])
    printed = [fmt(claim.printed)] if claim.printed is not None else []
    printed += [f"score {claim.score:.2f}"] if claim.score is not None else []
    return {"Printed": "; ".join(printed) or "–",
            "Recomputed": f"{claim.model} {ours:.2f} ({ordinal(place)}) vs {rival} {theirs:.2f}",
            "Holds": "yes" if holds else "no", "Difference (points)": fmt(difference),
            "95% CI (points)": interval_text(test), "p": p_text(test.p_value),
            "n (Table 3)": f"{test.n:,}",
            SUPPORTED: significance_word(test, claim.kind, holds)}


def significance_word(test: Comparison, kind: str, holds: bool = True) -> str:
    """A lead is supported when its test gives p < alpha; a 'small gap' claim is one the test cannot
    contradict, which is not the same as the two being equal."""
    if kind == "gap":
        return ("no: the gap is significant" if test.supported
                else "the gap to the first is not significant at n (nor would a lead of that size be)")
    if not test.supported:
        return f"no: p >= {ALPHA:g}"
    return "yes" if holds else f"no: the opposite is significant (p < {ALPHA:g})"


def ordinal(place: int) -> str:
    return {1: "1st", 2: "2nd", 3: "3rd"}.get(place, f"{place}th")


def count_claim(claim: Claim, counts: dict[str, int]) -> dict[str, str]:
    firsts, testable, supported = [], 0, 0
    rows = table_rows()
    for _, row in rows:
        values = row_values(row)
        best = max(values.values())
        if values.get(claim.model) == best:
            firsts.append(row.label)
            rival = max(v for m, v in values.items() if m != claim.model)
            if row.metric == "accuracy":
                testable += 1
                supported += compare_proportions(best, rival, counts[row.benchmark]).supported
    total = len(rows) + len(claim.unrankable)
    k, printed_total = claim.printed
    holds = len(firsts) == k and total == printed_total
    return {"Printed": f"{k:g} of {printed_total:g}",
            "Recomputed": (f"first on {len(firsts)} of the {len(rows)} rows of Tables 4-6 ({', '.join(firsts)}); "
                           f"{len(claim.unrankable)} more benchmark(s) where the other models are not printed "
                           f"({', '.join(claim.unrankable)}): {len(firsts)} of {total}"),
            "Holds": "yes" if holds else "no", "Difference (points)": "–", "95% CI (points)": "–", "p": "–",
            "n (Table 3)": "per row",
            SUPPORTED: (f"{supported} of the {testable} testable first places (accuracies) are significant at "
                                                     f"their n; {len(firsts) - testable} are RaTEScores (n/c)")}


def figure2_claim(claim: Claim, counts: dict[str, int]) -> dict[str, str]:
    ours, theirs = figure2_value(claim.metric, claim.model), figure2_value(claim.metric, claim.other)
    if claim.kind == "ratio":
        low, high = claim.between
        recomputed = f"{ours:.3f} / {theirs:.3f} = {ours / theirs:.2f}x (counted as roughly double in [{low:g}, {high:g}])"
        holds = low <= ours / theirs <= high
    else:
        recomputed = f"{ours:.3f} vs {theirs:.3f}: {ours - theirs:+.3f}"
        holds = ours > theirs
    printed_ok = claim.printed is None or [ours, theirs] == list(claim.printed)
    return {"Printed": " vs ".join(f"{v:.3f}" for v in claim.printed) if claim.printed else "–",
            "Recomputed": recomputed, "Holds": "yes" if holds and printed_ok else "no",
            "Difference (points)": "–", "95% CI (points)": NO_ITEM_SCORES, "p": NO_ITEM_SCORES,
            "n (Table 3)": f"{counts['mimic_cxr_report']:,}", SUPPORTED: NO_ITEM_SCORES}


def change_claim(claim: Claim, counts: dict[str, int]) -> dict[str, str]:
    before_row, after_row = find_row(claim.table, claim.row), find_row(claim.table, claim.to_row)
    before, after = row_values(before_row)[claim.model], row_values(after_row)[claim.model]
    moved = after - before
    direction_ok = moved > 0 if claim.direction == "gain" else moved < 0
    printed_ok = claim.printed is None or [before, after] == list(claim.printed)
    cells = {"Printed": f"{claim.printed[0]:.2f} -> {claim.printed[1]:.2f}",
             "Recomputed": f"{claim.model} {before:.2f} -> {after:.2f}: {fmt(moved)}",
             "Holds": "yes" if direction_ok and printed_ok else "no", "Difference (points)": fmt(moved)}
    n = counts[before_row.benchmark]
    if before_row.metric != "accuracy":
        return {**cells, "95% CI (points)": NOT_A_PROPORTION, "p": NOT_A_PROPORTION, "n (Table 3)": f"{n:,}",
                SUPPORTED: NOT_A_PROPORTION}
    test = compare_proportions(after, before, n)
    return {**cells, "95% CI (points)": interval_text(test), "p": p_text(test.p_value), "n (Table 3)": f"{n:,}",
            SUPPORTED: "yes" if test.supported else f"no: p >= {ALPHA:g}"}


# ---------------------------------------------------------------- the table

COLUMNS = ["Compared", "Printed", "Recomputed", "Holds", "Difference (points)", "95% CI (points)", "p",
           "n (Table 3)", SUPPORTED, "Whole counts at n"]


def claims_audit() -> pd.DataFrame:
    """Every row of Tables 4-6 (first vs second) and every claim of ``claims.yaml``, recomputed."""
    counts = item_counts()
    records, index = [], []
    for table, row in table_rows():
        records.append(row_audit(row, counts))
        index.append(f"Table {table} · {row.label}")
    for claim in load_claims():
        records.append(check_claim(claim, counts))
        index.append(f"Sec. {claim.where} · {claim.id}")
    frame = pd.DataFrame(records, index=index, columns=COLUMNS).fillna("–")
    frame.index.name = "Row or claim"
    frame.attrs.update(
        caption="Claims audit: the paper's comparisons tested at Table 3's item counts (published numbers only).",
        rank=False, missing="–",
        footnotes=["Two-proportion tests treat the two scores as independent samples of n items (Newcombe "
                   "interval, pooled z-test on the nearest whole counts). Both models answered the same items, "
                   "so a paired test on per-item predictions would be tighter; medkit runs one (paired "
                   "bootstrap) on fresh results, the paper publishes none.",
                   "Whole counts at n: the k/n that prints as the published percentage; 'none' means no whole "
                   "count of Table 3's n items prints as it: that score is not a share of those n items (fewer "
                   "were scored, or it is an average of shares)."])
    return frame
