"""Not-computed cells render as a short ``n/c [k]`` marker with the reason once as footnote ``[k]``;
footnotes never render as Markdown lists."""

from __future__ import annotations

import re

import pandas as pd

from medkit.reporting.tables import markdown_note, render_table, to_csv, to_latex, to_markdown

LONG = ("not computed: needs the RadGraph model weights (StanfordAIMI/RRG_scorers, radgraph-xl, "
        "downloaded once with the metrics extra) and package radgraph==0.1.18")
OTHER = "not computed: needs package bert-score==0.3.13"


def frame() -> pd.DataFrame:
    """Two cells share one long reason, one cell has another; numbers around them to rank."""
    table = pd.DataFrame({"A": [LONG, 0.25, LONG], "B": [0.5, OTHER, 0.125], "C": [0.75, 0.5, "not run"]},
                         index=["RadGraph-F1", "RaTEScore", "1/RadCliQ-v1"], dtype=object)
    table.index.name = "Metric"
    table.attrs.update(caption="Fresh run", decimals=3)
    return table


def paragraphs(markdown: str) -> list[str]:
    return [p.strip("\n") for p in markdown.split("\n\n") if p]


def test_markdown_cells_are_markers_and_each_reason_is_one_footnote():
    md = to_markdown(frame())
    assert "| RadGraph-F1 | n/c [1] | <u>0.500</u> | **0.750** |" in md
    assert "| RaTEScore | <u>0.250</u> | n/c [2] | **0.500** |" in md
    assert "| 1/RadCliQ-v1 | n/c [1] | **0.125** | not run |" in md  # text cells are never ranked
    table_lines = [line for line in md.splitlines() if line.startswith("|")]
    assert not any("not computed" in line for line in table_lines)
    notes = [p for p in paragraphs(md) if re.match(r"\[\d+\] ", p)]
    assert notes == [f"[1] {LONG}", f"[2] {OTHER}"]
    assert md.count(LONG) == 1 and md.count(OTHER) == 1


def test_latex_cells_are_markers_and_each_reason_is_one_footnote():
    tex = to_latex(frame())
    assert r"RadGraph-F1 & n/c [1] & \underline{0.500} & \textbf{0.750} \\" in tex
    assert r"RaTEScore & \underline{0.250} & n/c [2] & \textbf{0.500} \\" in tex
    notes = [line for line in tex.splitlines() if line.startswith(r"\par\footnotesize [")]
    assert len(notes) == 2
    assert notes[0].startswith(r"\par\footnotesize [1] not computed: needs the RadGraph model weights")
    assert r"StanfordAIMI/RRG\_scorers" in notes[0]
    assert notes[1] == r"\par\footnotesize [2] not computed: needs package bert-score==0.3.13"
    assert tex.count("not computed") == 2


def test_csv_keeps_the_full_reason_in_each_cell():
    rows = to_csv(frame()).splitlines()
    assert rows[1] == f'RadGraph-F1,"{LONG}",0.500,0.750'
    assert rows[2] == f"RaTEScore,0.250,{OTHER},0.500"


def test_cell_footnotes_follow_the_frame_footnotes_and_render_deterministically(tmp_path):
    table = frame()
    table.attrs["footnotes"] = ["Higher is better."]
    md = to_markdown(table)
    assert md.index("Higher is better.") < md.index("[1] not computed") < md.index("[2] not computed")
    one, two = render_table(table, "t", tmp_path / "a"), render_table(table, "t", tmp_path / "b")
    for fmt in one:
        assert one[fmt].read_bytes() == two[fmt].read_bytes()


def test_a_bare_not_computed_status_gets_a_marker_too():
    table = pd.DataFrame({"A": ["not computed", 1.0]}, index=["x", "y"], dtype=object)
    md = to_markdown(table)
    assert "| x | n/c [1] |" in md and "\n\n[1] not computed\n" in md


def test_footnote_starting_with_a_list_marker_is_not_a_markdown_list():
    table = pd.DataFrame({"A": [1.0]}, index=["x"])
    table.attrs["footnotes"] = ["* opt = answer options.", "- dash note", "+ plus note", "1. numbered note",
                                "2) numbered note", "  * indented note"]
    md = to_markdown(table)
    for line in md.splitlines():
        assert not re.match(r"^ {0,3}([*+-]|\d+[.)])([ \t]|$)", line), line  # CommonMark list-item start
    assert "\n\n\\* opt = answer options.\n" in md
    assert "\n\n1\\. numbered note\n" in md and "\n\n2\\) numbered note\n" in md


def test_markdown_note_escapes_only_block_markers():
    assert markdown_note("* a") == "\\* a"
    assert markdown_note("*emphasis* stays") == "*emphasis* stays"
    assert markdown_note("-1.5 is a number") == "-1.5 is a number"
    assert markdown_note("2024 was a year") == "2024 was a year"
    assert markdown_note("# heading") == "\\# heading" and markdown_note("> quote") == "\\> quote"
    assert markdown_note("first line\n- second") == "first line\n\\- second"
