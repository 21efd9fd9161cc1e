"""Patient-trial loading time, 1-shot against 0-shot, at N and 4N items (finding 9: 1-shot was quadratic).

Writes a generated native release to a temporary folder, three cohorts of invented patients with
``--pairs-per-patient`` graded trials each (the real retrieved_trials.json averages about 27), then times
``load_benchmark`` for ``patient_trial_0shot`` and ``patient_trial_1shot`` (best of ``--repeats``). The
1-shot loader renders the same items plus one exemplar each, so a linear loader keeps the 1-shot/0-shot
ratio about constant from N to 4N and grows both times about 4x; drawing each exemplar by re-filtering
the whole pool (the quadratic loader) multiplies the ratio by about 4 instead.

``--layout judged`` writes queries.jsonl + qrels/test.tsv + corpus.jsonl instead of retrieved_trials.json,
the only layout the loader read before the fix, so the same script can time the old code.

    python benchmarks/icl_loading.py [--n 5000] [--pairs-per-patient 25] [--repeats 3] [--layout retrieved]
"""

from __future__ import annotations

import argparse
import json
import random
import tempfile
import time
from pathlib import Path

from medkit.eval.benchmarks import load_benchmark
from medkit.eval.benchmarks.in_context import COHORTS, TRIAL_DIR

CONDITIONS = ["asthma", "type 2 diabetes", "heart failure", "gout", "migraine", "COPD", "hypertension"]


def invented_note(rng: random.Random, patient: int) -> str:
    """A note shaped like the TREC ones: a paragraph, then a numbered history list and a bulleted one."""
    history = rng.sample(CONDITIONS, 3)
    return (f"Invented patient {patient}, {rng.randrange(20, 90)} years old, presents with {history[0]}. "
            f"Symptoms began {rng.randrange(2, 30)} days ago.\nPast Medical History:\n"
            + "".join(f"{k}. {c.capitalize()}\n" for k, c in enumerate(history[1:], start=1))
            + "Medications:\n- invented drug A\n- invented drug B")


def invented_trial(rng: random.Random, nct: str) -> dict:
    condition = rng.choice(CONDITIONS)
    return {"NCTID": nct, "brief_title": f"Invented {condition} study {nct}", "diseases_list": [condition],
            "drugs_list": [f"Drug {nct[-3:]}"], "brief_summary": f"Tests an invented treatment for {condition}.",
            "inclusion_criteria": f"Inclusion Criteria:\n\n  - Diagnosis of {condition}\n\n  - Age 18 or older\n",
            "exclusion_criteria": "Exclusion Criteria:\n\n  - Pregnancy\n\n  - Dialysis\n"}


def cohort_patients(rng: random.Random, n_pairs: int, per_patient: int, cohort: int) -> list[dict]:
    """retrieved_trials.json entries of cohort number ``cohort``, ``n_pairs`` (patient, trial) pairs in all."""
    entries = []
    for patient in range(-(-n_pairs // per_patient)):
        count = min(per_patient, n_pairs - patient * per_patient)
        grades: dict[str, list[dict]] = {"0": [], "1": [], "2": []}
        for t in range(count):
            nct = f"NCT{cohort}{patient:04d}{t:03d}"  # unique within the cohort
            grades[rng.choice("001112")].append(invented_trial(rng, nct))
        entries.append({"patient_id": f"{COHORTS[cohort]}-{patient}", "patient": invented_note(rng, patient),
                        **grades})
    return entries


def write_retrieved(folder: Path, entries: list[dict]) -> None:
    (folder / "retrieved_trials.json").write_text(json.dumps(entries))


def write_judged(folder: Path, entries: list[dict]) -> None:
    (folder / "qrels").mkdir()
    queries, corpus, qrels = [], {}, ["query-id\tcorpus-id\tscore"]
    for entry in entries:
        queries.append(json.dumps({"_id": entry["patient_id"], "text": entry["patient"]}))
        for grade in "210":
            for trial in entry[grade]:
                qrels.append(f"{entry['patient_id']}\t{trial['NCTID']}\t{grade}")
                corpus[trial["NCTID"]] = json.dumps({"_id": trial["NCTID"], "title": trial["brief_title"], "text": "",
                                                     "metadata": {k: v for k, v in trial.items() if k != "NCTID"}})
    (folder / "queries.jsonl").write_text("\n".join(queries) + "\n")
    (folder / "corpus.jsonl").write_text("\n".join(corpus.values()) + "\n")
    (folder / "qrels" / "test.tsv").write_text("\n".join(qrels) + "\n")


def write_release(root: Path, n_items: int, per_patient: int, layout: str, seed: int) -> None:
    rng = random.Random(seed)
    for i, cohort in enumerate(COHORTS):
        folder = root / TRIAL_DIR / cohort
        folder.mkdir(parents=True)
        share = n_items // len(COHORTS) + (i < n_items % len(COHORTS))
        entries = cohort_patients(rng, share, per_patient, i)
        (write_retrieved if layout == "retrieved" else write_judged)(folder, entries)


def best_load_seconds(name: str, root: Path, repeats: int, expected: int) -> float:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        items = load_benchmark(name, data_root=root).items
        times.append(time.perf_counter() - start)
        if len(items) != expected:
            raise SystemExit(f"{name}: loaded {len(items)} items, expected {expected}")
    return min(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=5000, help="items at the small size (the large one is 4N)")
    parser.add_argument("--pairs-per-patient", type=int, default=25)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--layout", choices=("retrieved", "judged"), default="retrieved")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    rows = []
    for n_items in (args.n, 4 * args.n):
        with tempfile.TemporaryDirectory() as tmp:
            write_release(Path(tmp), n_items, args.pairs_per_patient, args.layout, args.seed)
            zero = best_load_seconds("patient_trial_0shot", Path(tmp), args.repeats, n_items)
            one = best_load_seconds("patient_trial_1shot", Path(tmp), args.repeats, n_items)
        rows.append((zero, one))
        print(f"{n_items:>7,} items ({args.layout}): 0-shot {zero:6.2f} s, 1-shot {one:6.2f} s, "
              f"1-shot/0-shot {one / zero:5.2f}x")
    (zero_n, one_n), (zero_4n, one_4n) = rows
    print(f"4N/N: 0-shot {zero_4n / zero_n:.2f}x, 1-shot {one_4n / one_n:.2f}x (4.00x is linear); "
          f"1-shot/0-shot ratio grew {(one_4n / zero_4n) / (one_n / zero_n):.2f}x (1.00x is linear, ~4x quadratic)")


if __name__ == "__main__":
    main()
