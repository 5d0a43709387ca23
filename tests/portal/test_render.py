"""The portal's rendering helpers: marks from offsets (overlapping, escaped) and the SVG charts."""
from __future__ import annotations

from medassist.portal.render import abc_graph, answer_distribution, bar_chart, literature_spans, marked_text, top_concepts


def test_overlapping_spans_are_cut_into_pieces_with_every_covering_class_and_text_is_escaped():
    text = "Aspirin <b>cut</b> stroke risk."
    spans = [{"start": 0, "end": 7, "cls": "concept", "title": "Aspirin (drug)"},
             {"start": 0, "end": 31, "cls": "summary", "title": "summary sentence"},
             {"start": 40, "end": 50, "cls": "evidence"}]  # outside the text: ignored
    html = str(marked_text(text, spans))
    assert html.startswith('<mark class="concept summary" title="Aspirin (drug); summary sentence">Aspirin</mark>')
    assert '<span class="summary" title="summary sentence"> &lt;b&gt;cut&lt;/b&gt; stroke risk.</span>' in html
    assert "<b>" not in html


def test_literature_spans_cover_mentions_summary_sentences_and_the_answers_conclusion():
    result = {"concepts": [{"name": "Aspirin", "type": "drug", "id": "MESH:D001241",
                            "mentions": [{"start": 0, "end": 7}, {"start": 20, "end": 27}]}],
              "summary": {"sentences": [{"start": 0, "end": 18, "score": 0.5}]},
              "answer": {"evidence": {"conclusion": {"spans": [{"start": 19, "end": 40}]}}}}
    kinds = sorted(s["cls"] for s in literature_spans(result))
    assert kinds == ["concept", "concept", "evidence", "summary"]


def test_bar_chart_and_counts():
    assert top_concepts([[{"name": "Pain"}, {"name": "Fever"}], [{"name": "Pain"}], None]) == [("Pain", 2), ("Fever", 1)]
    assert answer_distribution(["no", "yes", None, "yes", "maybe"]) == [("yes", 2), ("no", 1), ("maybe", 1)]
    svg = str(bar_chart([("<script>", 3), ("Pain", 1)], title="Top concepts"))
    assert svg.startswith("<svg") and svg.count("<rect") == 2 and "<script>" not in svg and "&lt;script&gt;" in svg
    assert "nothing to show" in str(bar_chart([], title="Answers"))


def test_abc_graph_draws_a_start_its_bridges_and_targets_as_a_network():
    result = {"start": {"name": "Migraine Disorders"}, "hypotheses": [
        {"target": {"name": "Magnesium"}, "bridges": [{"id": "B1", "name": "Vasospasm", "contribution": 0.6},
                                                      {"id": "B2", "name": "Epilepsy", "contribution": 0.2}]},
        {"target": {"name": "Stroke"}, "bridges": [{"id": "B2", "name": "Epilepsy", "contribution": 0.4}]}]}
    svg = str(abc_graph(result))
    assert svg.count('class="node-a"') == 1 and svg.count('class="node-b"') == 2 and svg.count('class="node-c"') == 2
    assert svg.count('class="edge-ab"') == 2 and svg.count('class="edge-bc"') == 3
    assert "Migraine Disorders" in svg and "Vasospasm" in svg and "Stroke" in svg
    assert "No connections" in str(abc_graph({"start": {"name": "X"}, "hypotheses": []}))
