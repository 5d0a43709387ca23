"""Pure rendering helpers for the portal: marked-up abstract text from offsets, and server-side SVG charts.

Everything here returns HTML/SVG strings built from escaped parts (``format_html``/``escape``), so no
text from a job's input or result can inject markup. No JavaScript, no CDN: the charts are plain SVG.
"""
from __future__ import annotations

import math
from collections import Counter

from django.utils.html import escape, format_html
from django.utils.safestring import SafeString, mark_safe

# --- abstract text with concept mentions, summary and evidence sentences marked ----------------------------


def marked_text(text: str, spans: list[dict]) -> SafeString:
    """``text`` as HTML with each ``{"start", "end", "cls", "title"}`` span marked.

    Spans may overlap (a concept mention inside a summary sentence): the text is cut at every span
    boundary and each piece carries the classes of all spans covering it. A piece inside a concept
    mention is a ``<mark>``, the others a ``<span>``; pieces outside every span are plain text.
    """
    n = len(text)
    clean = [s for s in spans if 0 <= s["start"] < s["end"] <= n]
    cuts = sorted({0, n, *(s["start"] for s in clean), *(s["end"] for s in clean)})
    out = []
    for start, end in zip(cuts, cuts[1:], strict=False):
        covering = [s for s in clean if s["start"] <= start and end <= s["end"]]
        piece = escape(text[start:end])
        if not covering:
            out.append(piece)
            continue
        classes = " ".join(sorted({s["cls"] for s in covering}))
        titles = "; ".join(dict.fromkeys(s["title"] for s in covering if s.get("title")))
        tag = "mark" if any(s["cls"] == "concept" for s in covering) else "span"
        out.append(format_html('<{} class="{}" title="{}">{}</{}>', mark_safe(tag), classes, titles, piece, mark_safe(tag)))
    return mark_safe("".join(out))


def literature_spans(result: dict) -> list[dict]:
    """The spans of a ``literature`` result: concept mentions, summary sentences, answer evidence."""
    spans = []
    for concept in result.get("concepts") or []:
        for mention in concept.get("mentions") or []:
            spans.append({"start": mention["start"], "end": mention["end"], "cls": "concept",
                          "title": f"{concept.get('name')} ({concept.get('type')}, {concept.get('id') or 'no id'})"})
    for sentence in (result.get("summary") or {}).get("sentences") or []:
        spans.append({"start": sentence["start"], "end": sentence["end"], "cls": "summary",
                      "title": f"summary sentence (score {sentence.get('score')})"})
    evidence = ((result.get("answer") or {}).get("evidence") or {}).get("conclusion") or {}
    for span in evidence.get("spans") or []:
        spans.append({"start": span["start"], "end": span["end"], "cls": "evidence", "title": "answer evidence"})
    return spans


# --- charts ------------------------------------------------------------------------------------------------

BAR_COLOURS = {"yes": "#2f855a", "no": "#c53030", "maybe": "#b7791f"}


def bar_chart(rows: list[tuple[str, int]], *, title: str, colour: str = "#2b6cb0",
              colours: dict[str, str] | None = None) -> SafeString:
    """A horizontal bar chart as inline SVG: one labelled bar per (label, count), largest first."""
    if not rows:
        return format_html('<p class="muted">{}: nothing to show yet.</p>', title)
    label_w, bar_w, row_h = 210, 300, 24
    height = row_h * len(rows) + 10
    peak = max(count for _, count in rows) or 1
    parts = [format_html('<svg class="chart" role="img" aria-labelledby="{0}-t" viewBox="0 0 {1} {2}" '
                         'width="{1}" height="{2}" xmlns="http://www.w3.org/2000/svg"><title id="{0}-t">{3}</title>',
                         _slug(title), label_w + bar_w + 60, height, title)]
    for i, (label, count) in enumerate(rows):
        y = 5 + i * row_h
        width = max(2, round(bar_w * count / peak))
        fill = (colours or {}).get(label, colour)
        short = label if len(label) <= 30 else label[:29] + "…"
        parts.append(format_html(
            '<text x="{}" y="{}" text-anchor="end" class="chart-label">{}<title>{}</title></text>'
            '<rect x="{}" y="{}" width="{}" height="{}" rx="3" fill="{}"/>'
            '<text x="{}" y="{}" class="chart-value">{}</text>',
            label_w - 8, y + 16, short, label, label_w, y + 3, width, row_h - 8, fill,
            label_w + width + 6, y + 16, count))
    parts.append(mark_safe("</svg>"))
    return mark_safe("".join(parts))


def _slug(text: str) -> str:
    return "".join(c if c.isalnum() else "-" for c in text.lower())[:40]


def top_concepts(concept_lists, limit: int = 12) -> list[tuple[str, int]]:
    """(name, number of items that mention it) for the most frequent concepts."""
    counts: Counter = Counter()
    for concepts in concept_lists:
        counts.update({c.get("name") for c in concepts or [] if isinstance(c, dict) and c.get("name")})
    return counts.most_common(limit)


def answer_distribution(labels) -> list[tuple[str, int]]:
    counts = Counter(label for label in labels if label)
    return [(label, counts[label]) for label in ("yes", "no", "maybe") if counts[label]] + \
        [(label, n) for label, n in counts.most_common() if label not in ("yes", "no", "maybe")]


def abc_graph(result: dict, *, max_targets: int = 6, max_bridges: int = 8) -> SafeString:
    """A hypothesis result's A-B-C network as SVG: A on the left, bridges B in the middle, targets C on the right;
    edge width follows the bridge's contribution to the target's score."""
    hypotheses = (result or {}).get("hypotheses") or []
    start = ((result or {}).get("start") or {}).get("name") or "A"
    if not hypotheses:
        return format_html('<p class="muted">No connections found for {}.</p>', start)
    targets = hypotheses[:max_targets]
    bridges: dict[str, str] = {}
    for h in targets:
        for b in h.get("bridges") or []:
            if len(bridges) < max_bridges:
                bridges.setdefault(b["id"], b["name"])
    width, row = 820, 46
    height = max(len(targets), len(bridges), 1) * row + 40

    def ys(count):
        top = (height - (count - 1) * row) / 2 if count else height / 2
        return [top + i * row for i in range(count)]

    a_pos = (110, height / 2)
    b_pos = dict(zip(bridges, ((410, y) for y in ys(len(bridges))), strict=True))
    c_pos = [(710, y) for y in ys(len(targets))]
    top = max((b.get("contribution") or 0) for h in targets for b in h.get("bridges") or [{}]) or 1
    parts = [format_html('<svg class="chart graph" role="img" aria-labelledby="abc-t" viewBox="0 0 {0} {1}" width="{0}" '
                         'height="{1}" xmlns="http://www.w3.org/2000/svg"><title id="abc-t">A-B-C connections from {2}'
                         '</title>', width, height, start)]
    for bx, by in b_pos.values():
        parts.append(format_html('<line x1="{}" y1="{}" x2="{}" y2="{}" class="edge-ab"/>', a_pos[0], a_pos[1], bx, by))
    for h, (cx, cy) in zip(targets, c_pos, strict=True):
        for b in h.get("bridges") or []:
            if b["id"] in b_pos:
                bx, by = b_pos[b["id"]]
                stroke = 1 + 5 * math.sqrt(max(b.get("contribution") or 0, 0) / top)
                parts.append(format_html('<line x1="{}" y1="{}" x2="{}" y2="{}" class="edge-bc" stroke-width="{}"/>',
                                         bx, by, cx, cy, round(stroke, 2)))
    parts.append(_node(a_pos, start, "node-a"))
    for bid, pos in b_pos.items():
        parts.append(_node(pos, bridges[bid], "node-b"))
    for h, pos in zip(targets, c_pos, strict=True):
        parts.append(_node(pos, (h.get("target") or {}).get("name") or "?", "node-c"))
    parts.append(mark_safe("</svg>"))
    return mark_safe("".join(parts))


def _node(pos, label: str, cls: str) -> SafeString:
    x, y = pos
    short = label if len(label) <= 28 else label[:27] + "…"
    return format_html('<g class="{}"><rect x="{}" y="{}" width="190" height="30" rx="15"/>'
                       '<text x="{}" y="{}" text-anchor="middle">{}<title>{}</title></text></g>',
                       cls, x - 95, y - 15, x, y + 5, short, label)
