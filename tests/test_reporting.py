"""medkit.reporting: published numbers, table rendering, result-file readers, figures, provenance."""

from __future__ import annotations

import json
import math
import re
import subprocess
from pathlib import Path

import pandas as pd
import pytest

from medkit.eval.benchmarks import all_benchmarks
from medkit.reporting.provenance import UNKNOWN_COMMIT, Stamp, config_hash, git_commit, make_stamp
from medkit.reporting.published import published_figure2, published_table, table3_counts
from medkit.reporting.tables import (
    FIRST,
    SECOND,
    ablation_table,
    compare,
    render_table,
    results_ci_frame,
    results_frame,
    row_marks,
    to_markdown,
)

FIXTURES = Path(__file__).parent / "fixtures" / "reporting"
EVAL_OUT = FIXTURES / "eval_out"
ABLATION = FIXTURES / "ablation_results.json"
# the paper's printed numbers, transcribed once from its tables (a golden file independent of published.yaml)
PRINTED = json.loads((FIXTURES / "paper_printed.json").read_text(encoding="utf-8"))
STAMP = Stamp(profile="tiny", git_commit="0" * 40, config_hash=config_hash({"k": 1}), seed=0, date="2025-01-01")
NUMBER = re.compile(r"\d+\.\d+")


# ---------------------------------------------------------------- published data

def test_table3_counts_match_the_benchmark_registry():
    registry = {b.name: b.expected_count for b in all_benchmarks()}
    assert table3_counts() == registry


def test_published_tables_have_the_paper_shape():
    models = ["MedGPT-OSS", "OctoMed", "Hulu-Med", "Lingshu", "MedGemma", "QoQ-Med"]
    for n, rows in (("4", 6), ("5", 6), ("6", 4)):
        frame = published_table(n)
        assert list(frame.columns) == models
        assert frame.shape == (rows, 6) and not frame.isna().to_numpy().any()
    assert published_table(4).at["MedXQA (multimodal)", "MedGPT-OSS"] == 49.23
    assert published_table(5).at["MedXQA (text)", "QoQ-Med"] == 8.78


def test_figure2_only_printed_values_are_known():
    frame = published_figure2()
    known = {(r, c): frame.at[r, c] for r in frame.index for c in frame.columns if not math.isnan(frame.at[r, c])}
    assert known == {("RadGraph-F1", "MedGPT-OSS"): 0.189, ("RaTEScore", "MedGPT-OSS"): 0.522,
                     ("1/RadCliQ-v1", "MedGPT-OSS"): 0.803, ("RadGraph-F1", "MedGemma"): 0.095,
                     ("RadGraph-F1", "OctoMed"): 0.129}


@pytest.mark.parametrize("n,count", [("4", 6), ("5", 6), ("6", 4)])
def test_rendering_published_tables_reproduces_printed_values(tmp_path, n, count):
    printed_rows = PRINTED[f"table{n}"]
    written = render_table(published_table(n), f"table{n}", tmp_path, STAMP)
    body = [line for line in written["markdown"].read_text().splitlines() if line.startswith("| ")][1:]
    assert len(body) == count == len(printed_rows)
    for printed, line in zip(printed_rows, body):
        assert len(printed) == 6
        assert NUMBER.findall(line) == printed
    csv_rows = written["csv"].read_text().splitlines()[1:]
    assert [NUMBER.findall(r) for r in csv_rows] == printed_rows
    latex_rows = [line for line in written["latex"].read_text().splitlines() if line.endswith(r"\\")][1:]
    assert [NUMBER.findall(r) for r in latex_rows] == printed_rows


def test_published_figure2_and_table3_are_the_printed_numbers():
    frame = published_figure2()
    for model, values in PRINTED["figure2"].items():
        for metric, value in values.items():
            assert frame.at[metric, model] == value
    assert "not printed" in to_markdown(frame)
    table3_md = to_markdown(published_table(3))
    assert re.findall(r"\d\.\d\d ± \d\.\d\d|\d,\d{3}|\b\d{3}\b", table3_md) == PRINTED["table3"]
    assert "| OOD † |" in table3_md and "| In-context learning * |" in table3_md  # the paper's marks
    assert "† OOD" in table3_md and "* In-context" in table3_md


def test_table1_prints_counts_like_the_paper_and_keeps_plain_csv(tmp_path):
    from medkit.reporting.tables import table1

    written = render_table(table1(), "table1", tmp_path, STAMP)
    markdown = written["markdown"].read_text()
    assert "| II-Medical-Reasoning | 2,197,741 | IT |" in markdown
    assert "(R): the dataset carries reasoning traces" in markdown
    assert "MedTrinity (accessible),18525974,MT" in written["csv"].read_text()
    assert "18,525,974" in written["latex"].read_text()


# ---------------------------------------------------------------- marks

def test_bold_first_underline_second_on_a_fixture(tmp_path):
    frame = pd.DataFrame({"A": [10.0, 1.0, 5.0], "B": [30.0, 2.0, 5.0], "C": [20.0, "not computed", 4.0]},
                         index=["r1", "r2", "r3"], dtype=object)
    frame.attrs["decimals"] = 2
    md = render_table(frame, "t", tmp_path)["markdown"].read_text()
    assert "| r1 | 10.00 | **30.00** | <u>20.00</u> |" in md
    assert "| r2 | <u>1.00</u> | **2.00** | n/c [1] |" in md  # text is never ranked
    assert "| r3 | **5.00** | **5.00** | <u>4.00</u> |" in md  # ties share the mark
    tex = render_table(frame, "t", tmp_path)["latex"].read_text()
    assert r"r1 & 10.00 & \textbf{30.00} & \underline{20.00} \\" in tex


def test_ties_are_judged_on_printed_values():
    assert row_marks([52.341, 52.339, 50.0], 2) == [FIRST, FIRST, SECOND]
    assert row_marks([float("nan"), 1.0, None], 2) == [None, FIRST, None]


def test_published_table4_marks_follow_the_numbers():
    md = to_markdown(published_table(4))
    assert "| MMMU-Med-Pro (4 opt)* | 52.34 | 44.62 | <u>52.45</u> | **52.67** |" in md
    assert "**49.23**" in md and "Lingshu †" in md


# ---------------------------------------------------------------- result files

def test_results_frame_from_fixture_files():
    frame = results_frame(EVAL_OUT, "4")
    assert list(frame.columns) == ["MedGPT-OSS", "OctoMed"]  # adapter folders mapped, paper order
    assert frame.at["SLAKE", "MedGPT-OSS"] == pytest.approx(42.0)
    assert frame.at["MedFrameQA", "MedGPT-OSS"] == pytest.approx(25.0)
    assert math.isnan(frame.at["MedFrameQA", "OctoMed"])
    ci = results_ci_frame(EVAL_OUT, "4")
    assert ci.at["SLAKE", "OctoMed"] == pytest.approx((36.0, 64.0))
    impression = results_frame(EVAL_OUT, "6")
    assert impression.at["Impression (0-shot)", "MedGPT-OSS"] == pytest.approx(40.0)  # RaTEScore x 100


def test_not_computed_stays_text(tmp_path):
    frame = results_frame(EVAL_OUT, "figure2")
    assert frame.at["RadGraph-F1", "MedGPT-OSS"] == "not computed: needs the radgraph package"
    assert frame.at["RaTEScore", "MedGPT-OSS"] == pytest.approx(0.3125)
    written = render_table(frame, "figure2_fresh", tmp_path, STAMP)
    md, csv = written["markdown"].read_text(), written["csv"].read_text()
    assert "| RadGraph-F1 | n/c [1] |" in md  # a short marker; the reason once, as footnote [1]
    assert "\n\n[1] not computed: needs the radgraph package\n" in md
    assert "**0.312**" in md and "0.312" in csv
    assert "not computed: needs the RadCliQ-v1" in csv
    cmp = compare(frame, published_figure2(), results_ci_frame(EVAL_OUT, "figure2"))
    assert cmp.loc[("RadGraph-F1", "MedGPT-OSS"), "fresh"].startswith("not computed")
    assert math.isnan(cmp.loc[("RadGraph-F1", "MedGPT-OSS"), "delta"])
    assert cmp.loc[("RaTEScore", "MedGPT-OSS"), "delta"] == pytest.approx(0.3125 - 0.522)
    assert cmp.loc[("RaTEScore", "MedGPT-OSS"), "ci_low"] == pytest.approx(0.25)


def test_compare_side_by_side():
    cmp = compare(results_frame(EVAL_OUT, "4"), published_table(4), results_ci_frame(EVAL_OUT, "4"))
    row = cmp.loc[("SLAKE", "OctoMed")]
    assert (row["fresh"], row["published"]) == (pytest.approx(50.0), 65.07)
    assert row["delta"] == pytest.approx(50.0 - 65.07)
    assert list(cmp.columns) == ["fresh", "published", "delta", "ci_low", "ci_high"]


def test_ablation_table():
    frame = ablation_table(ABLATION)
    assert list(frame.index) == ["clip", "siglip", "biomedclip", "medsiglip"]
    assert frame.at["clip", "Accuracy (%)"] == pytest.approx(40.0)
    assert frame.at["siglip", "Loss CI high"] == pytest.approx(2.4)


# ---------------------------------------------------------------- figures

def test_figures_rerender_byte_identical(tmp_path):
    from medkit.reporting.figures import figure1, figure2

    fresh = results_frame(EVAL_OUT, "figure2")
    outputs = []
    for run in ("a", "b"):
        written = figure1(ABLATION, tmp_path / run, STAMP)
        written2 = figure2(tmp_path / run, fresh=fresh, stamp=STAMP)
        outputs.append({f"1.{k}": p.read_bytes() for k, p in written.items()}
                       | {f"2.{k}": p.read_bytes() for k, p in written2.items()})
    assert set(outputs[0]) == {"1.png", "1.pdf", "2.png", "2.pdf"}
    for key in outputs[0]:
        assert outputs[0][key] == outputs[1][key], key
    assert outputs[0]["1.png"].startswith(b"\x89PNG") and outputs[0]["1.pdf"].startswith(b"%PDF")
    assert STAMP.config_hash.encode() in outputs[0]["1.png"]  # stamp in the PNG metadata


# ---------------------------------------------------------------- provenance

def test_stamp_is_deterministic_and_hash_is_canonical(tmp_path):
    assert config_hash({"a": 1, "b": [1, 2]}) == config_hash({"b": [1, 2], "a": 1})
    assert config_hash({"a": 1}) != config_hash({"a": 2})
    one, two = make_stamp("tiny", {"x": 1}, 0), make_stamp("tiny", {"x": 1}, 0)
    assert one == two and one.date is None and "date=not recorded" in one.line()
    first = render_table(published_table(5), "t5", tmp_path / "a", one)
    second = render_table(published_table(5), "t5", tmp_path / "b", two)
    for fmt in first:
        assert first[fmt].read_bytes() == second[fmt].read_bytes()
    assert first["markdown"].read_text().rstrip().endswith(f"<!-- {one.line()} -->")
    assert first["latex"].read_text().rstrip().endswith(f"% {one.line()}")
    assert '"config_hash"' in first["provenance"].read_text()


def test_git_commit_falls_back_outside_git(tmp_path):
    assert git_commit(tmp_path) == UNKNOWN_COMMIT


def committed_repo(folder, name: str, text: str) -> None:
    """A git repository in ``folder`` whose one commit holds the file ``name``."""
    def git(*args):
        subprocess.run(["git", *args], cwd=folder, check=True, capture_output=True)

    git("init", "-q")
    (folder / name).write_text(text)
    git("add", name)
    git("-c", "user.email=t@t", "-c", "user.name=t", "commit", "-qm", "one")


def test_git_commit_says_when_tracked_files_changed(tmp_path):
    committed_repo(tmp_path, "a.txt", "one")
    clean = git_commit(tmp_path)
    assert len(clean) == 40 and "+dirty" not in clean
    (tmp_path / "untracked.txt").write_text("ignored by the check")
    assert git_commit(tmp_path) == clean
    (tmp_path / "a.txt").write_text("two")
    assert git_commit(tmp_path) == clean + "+dirty"


def test_git_commit_never_claims_a_clean_tree_it_could_not_check(tmp_path, monkeypatch):
    """A git status that times out (a fresh clone running its notebook filter) once read as clean."""
    import medkit.reporting.provenance as provenance

    real = provenance._git
    monkeypatch.setattr(provenance, "_git", lambda folder, *args: None if args[0] == "status" else real(folder, *args))
    commit = git_commit()
    assert commit.endswith("+unverified") and len(commit.split("+")[0]) == 40


def test_git_commit_leaves_notebooks_out_of_the_dirty_check(tmp_path):
    committed_repo(tmp_path, "a.ipynb", "{}")
    clean = git_commit(tmp_path)
    (tmp_path / "a.ipynb").write_text('{"outputs": 1}')  # executed in place: narration, not code
    assert git_commit(tmp_path) == clean


def test_stamp_hash_covers_table1_and_the_encoder_registry():
    from medkit.reporting.assemble import config_files

    names = {p.name for p in config_files("tiny")}
    assert {"tiny.yaml", "encoders.yaml", "table1.yaml", "baselines.yaml", "published.yaml",
            "pretrain.yaml"} <= names


def test_figure2_draws_not_printed_values_as_markers_never_as_bars(tmp_path, monkeypatch):
    """A published value the paper does not print is a marker on the axis: a drawn bar of any height
    would read as a score (the old full-height hatched outline made unprinted models look best)."""
    import medkit.reporting.figures as figures
    from medkit.reporting.published import published_figure2

    captured = {}
    monkeypatch.setattr(figures, "_save", lambda fig, out_dir, name, stamp: captured.setdefault("fig", fig))
    published = published_figure2()
    figures.figure2(tmp_path, published=published)
    ax = captured["fig"].axes[0]
    heights = sorted(round(p.get_height(), 3) for p in ax.patches if p.get_height() > 0)
    printed = sorted(round(float(v), 3) for v in published.to_numpy().ravel() if figures.is_number(v))
    assert heights == printed  # one bar per printed number, none for the unprinted ones
    markers = [line for line in ax.lines if line.get_marker() == figures.NOT_PRINTED_MARKER and len(line.get_xdata())]
    unprinted = sum(not figures.is_number(v) for v in published.to_numpy().ravel())
    assert len(markers) == unprinted
    assert min(t.get_fontsize() for t in ax.texts) >= 7


def test_figure1_caption_gives_the_item_counts_and_which_differences_exceed_the_cis():
    import pandas as pd

    from medkit.reporting.figures import items_line, separation_line

    table = pd.DataFrame({"Acc. CI low": [10.0, 40.0, 12.0], "Acc. CI high": [30.0, 60.0, 35.0],
                          "Loss CI low": [1.0, 1.1, 1.05], "Loss CI high": [1.2, 1.3, 1.25],
                          "n (MC)": [100, 100, 100], "n (loss)": [50, 50, 50]}, index=["clip", "siglip", "medsiglip"])
    assert items_line(table) == "each encoder: 100 held-out MC items, 50 held-out loss samples"
    line = separation_line(table)
    assert "accuracy: CIs disjoint for clip vs siglip, siglip vs medsiglip" in line
    assert "loss: every pair of CIs overlaps" in line


def test_figure2_shows_this_run_s_lexical_metrics_beside_the_paper_s_values(tmp_path):
    """On a machine without the model-based metrics' weights, BLEU and ROUGE-L are the fresh run's only
    report scores, and the paper's Figure 2 has no slot for them: a panel of their own, with CIs."""
    from medkit.reporting.figures import figure2
    from medkit.reporting.tables import lexical_frame

    lexical = lexical_frame(EVAL_OUT)
    assert lexical.to_dict("records") == [
        {"model": "MedGPT-OSS", "metric": "BLEU-2", "value": 0.11, "ci_low": 0.08, "ci_high": 0.14},
        {"model": "MedGPT-OSS", "metric": "BLEU-4", "value": 0.03, "ci_low": 0.01, "ci_high": 0.05},
        {"model": "MedGPT-OSS", "metric": "ROUGE-L", "value": 0.2, "ci_low": 0.15, "ci_high": 0.25}]
    fresh = results_frame(EVAL_OUT, "figure2")
    with_panel = figure2(tmp_path / "a", fresh=fresh, stamp=STAMP, lexical=lexical)
    again = figure2(tmp_path / "b", fresh=fresh, stamp=STAMP, lexical=lexical)
    without = figure2(tmp_path / "c", fresh=fresh, stamp=STAMP)
    assert with_panel["png"].read_bytes() == again["png"].read_bytes()  # deterministic with the panel too
    assert with_panel["png"].read_bytes() != without["png"].read_bytes()
    from matplotlib.image import imread

    assert imread(with_panel["png"]).shape[1] > imread(without["png"]).shape[1]  # the panel widens the figure
    assert lexical_frame([]).empty  # no Figure 2 results: no panel


def test_figure1_draws_chance_and_says_how_many_encoders_clear_it():
    """Above chance is what the tiny bars must show: the figure draws the items' chance rate and counts the
    encoders whose whole CI lies above it; a results file without the rate (older) draws no line."""
    import pandas as pd

    from medkit.reporting.figures import chance_line, common_chance_rate

    rows = [{"mc_accuracy": {"chance_rate": 0.25}}, {"mc_accuracy": {"chance_rate": 0.25}}]
    assert common_chance_rate({"encoders": rows}) == 0.25
    assert common_chance_rate({"encoders": rows + [{"mc_accuracy": {}}]}) is None
    assert common_chance_rate({"encoders": rows + [{"mc_accuracy": {"chance_rate": 0.2}}]}) is None
    table = pd.DataFrame({"Acc. CI low": [26.0, 24.0]}, index=["clip", "siglip"])
    assert chance_line(table, 0.25) == "Dashed line: chance on these items (25.0%); CI wholly above it for 1 of 2 encoders. "
    assert chance_line(table, None) == ""


def test_markdown_footnotes_render_as_text_not_bullets_and_stay_apart():
    from medkit.reporting.published import published_table
    from medkit.reporting.tables import to_markdown

    text = to_markdown(published_table(3))
    assert "\n\n† OOD: out of distribution.\n\n\\* In-context learning statistics" in text
    assert "\n* " not in text


def test_figures_draw_in_seaborn_style_without_touching_global_settings(tmp_path):
    import matplotlib
    import seaborn as sns

    from medkit.reporting.figures import bar_centre, figure2, figure_style

    before = dict(matplotlib.rcParams)
    figure2(tmp_path, fresh=results_frame(EVAL_OUT, "figure2"), stamp=STAMP)
    assert dict(matplotlib.rcParams) == before  # a notebook's own plots keep their settings
    with figure_style():
        assert matplotlib.rcParams["axes.grid"] and matplotlib.rcParams["font.family"] == ["DejaVu Sans"]
        assert matplotlib.rcParams["axes.edgecolor"] == sns.axes_style("whitegrid")["axes.edgecolor"]
    assert [round(bar_centre(0, i, 3), 4) for i in range(3)] == [-0.2667, 0.0, 0.2667]  # seaborn's dodge
