"""Concept extraction measured against gold annotations (``manage.py evaluate concepts``).

- :func:`read_pubtator`: the PubTator format of the gold corpora in ``../shared/data/ner-gold``
  ("PMID|t|title", "PMID|a|abstract", then tab-separated "PMID start end mention type ids"; the
  offsets count in title + " " + abstract; "-1" = not normalised; "|" or "+" join the ids of a
  composite mention; BC5CDR's relation lines "PMID CID chemical disease" are skipped).
- :func:`extract_documents`: the literature kind's own extraction path on each document's
  title + " " + abstract: ``concepts.extract_texts`` under a concepts version (the call the kind
  makes per chunk), then the ids resolved against this database's imported MeSH by
  ``selectors.concept_resolver_for`` / ``concept_with_resolved_id``, as the kind reports them.
- :func:`score`: by type (BC5CDR "Chemical" = the system's ``drug`` type; "Disease" and the NCBI
  disease types = ``disease`` and ``symptom``: BC5CDR annotates signs such as "pain" as diseases):

  * mention level, exact span and overlapping span: a predicted mention is right when a gold
    mention of the same type has the same span (exact) or shares a character (overlap); recall
    counts the gold mentions matched the same way;
  * normalisation level, the BioCreative V CDR measure: per document the set of (type, MeSH id),
    micro-averaged over documents; a gold mention with several ids ("D001943|D010051") adds each;
    "-1" adds none; ids the system cannot produce (OMIM in NCBI, supplementary concepts "C...")
    stay in the gold sets and count as misses;
  * concept coverage: the share of gold mentions with an id that the system finds in the same
    document under one of the mention's ids, whatever the span and type.
"""
from __future__ import annotations

import re
import time
from collections import defaultdict
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

__all__ = [
    "GOLD_TYPES",
    "SYSTEM_TYPES",
    "TYPES",
    "GoldMention",
    "GoldDocument",
    "Predicted",
    "read_pubtator",
    "predictions_from_concepts",
    "extract_documents",
    "score",
    "gold_examples",
    "evaluate_version",
    "report_table",
    "ANCHORS",
]

# Published document-level normalisation F1 on the BC5CDR *test* set, recalled (not re-read here):
# TaggerOne (Leaman & Lu, Bioinformatics 2016) about 0.81 disease and 0.91 chemical; DNorm-class
# disease normalisation and the best BioCreative V DNER runs (Wei et al., BioCreative V 2015) about
# 0.80-0.86; chemical normalisation of tmChem/TaggerOne-class systems about 0.88-0.93.
ANCHORS = {"disease": "0.80-0.86 (DNorm/TaggerOne class, BC5CDR test; recalled)",
           "chemical": "0.88-0.93 (tmChem/TaggerOne class, BC5CDR test; recalled)"}

TYPES = ("disease", "chemical")
# gold annotation type -> evaluated type
GOLD_TYPES = {"Chemical": "chemical", "Disease": "disease", "SpecificDisease": "disease",
              "DiseaseClass": "disease", "Modifier": "disease", "CompositeMention": "disease"}
# the literature kind's concept type -> evaluated type
SYSTEM_TYPES = {"drug": "chemical", "disease": "disease", "symptom": "disease"}

_ID_SPLIT = re.compile(r"[|+]")


@dataclass(frozen=True, slots=True)
class GoldMention:
    start: int
    end: int
    text: str  # from the document by offset (NCBI's mention column has a known typo)
    type: str  # "disease" | "chemical"
    ids: tuple[str, ...]  # MeSH ids ("D009203", "C012345") or "OMIM:..."; empty where "-1"


@dataclass(slots=True)
class GoldDocument:
    pmid: str
    title: str
    abstract: str
    mentions: list[GoldMention] = field(default_factory=list)

    @property
    def text(self) -> str:
        """What the offsets count in, and what the extractor reads."""
        return f"{self.title} {self.abstract}"


@dataclass(frozen=True, slots=True)
class Predicted:
    """One extracted concept as scored: evaluated type, id (None: no id) and mention spans."""

    type: str
    id: str | None
    spans: tuple[tuple[int, int], ...]
    other_id: str | None = None  # an id outside MeSH (DrugBank) where there is no MeSH id


def _gold_ids(raw: str) -> tuple[str, ...]:
    ids = []
    for part in _ID_SPLIT.split(raw):
        part = part.strip().removeprefix("MESH:")
        if part and part != "-1" and part not in ids:
            ids.append(part)
    return tuple(ids)


def read_pubtator(source: Path | str | Iterable[str], *, types: Sequence[str] = TYPES) -> list[GoldDocument]:
    """The documents of a PubTator file (a path, or its lines), with their mentions of ``types``.

    A document repeated with the same text (the NCBI training file lists PMID 8528200 twice) is read
    once.  Raises ``ValueError`` on a mention line whose offsets fall outside its document.
    """
    lines = Path(source).read_text(encoding="utf-8").splitlines() if isinstance(source, str | Path) else source
    documents: list[GoldDocument] = []
    seen: set[tuple[str, str]] = set()
    current: GoldDocument | None = None
    skip = False

    def finish():
        nonlocal current, skip
        if current is not None and not skip:
            documents.append(current)
        current, skip = None, False

    for number, line in enumerate(lines, 1):
        line = line.rstrip("\r\n")
        if not line.strip():
            finish()
            continue
        head = line[:40]
        if "|t|" in head:
            finish()
            pmid, _, title = line.partition("|t|")
            current = GoldDocument(pmid=pmid.strip(), title=title, abstract="")
            continue
        if "|a|" in head and current is not None:
            current.abstract = line.partition("|a|")[2]
            key = (current.pmid, current.text)
            skip = key in seen
            seen.add(key)
            continue
        parts = line.split("\t")
        if current is None or len(parts) < 6 or not parts[1].isdigit():
            continue  # relation lines ("CID") and anything else
        start, end = int(parts[1]), int(parts[2])
        text = current.text
        if not 0 <= start < end <= len(text):
            raise ValueError(f"line {number}: offsets {start}-{end} outside document {current.pmid}")
        kind = GOLD_TYPES.get(parts[4])
        if kind is None or kind not in types:
            continue
        current.mentions.append(GoldMention(start=start, end=end, text=text[start:end], type=kind,
                                            ids=_gold_ids(parts[5])))
    finish()
    return documents


def predictions_from_concepts(concepts: Iterable[dict], *, types: Sequence[str] = TYPES) -> list[Predicted]:
    """The literature kind's concept dicts as scored: id = ``mesh_id``; a concept without one (a drug known
    only by its DrugBank id) is a mention without a MeSH id, which the document level ignores as it
    ignores gold "-1"."""
    out = []
    for concept in concepts:
        kind = SYSTEM_TYPES.get(concept.get("type"))
        if kind is None or kind not in types:
            continue
        concept_id = concept.get("mesh_id")  # a DrugBank id alone is no MeSH normalisation: like BC5CDR's "-1"
        out.append(Predicted(type=kind, id=concept_id,
                             spans=tuple((m["start"], m["end"]) for m in concept.get("mentions", ())),
                             other_id=None if concept_id else concept.get("id")))
    return out


def extract_documents(documents: Sequence[GoldDocument], *, version: str | None = None, chunk_size: int = 256,
                      progress: Callable | None = None) -> tuple[list[list[dict]], float]:
    """(the literature kind's concept dicts per document, seconds spent) for ``version`` (a concepts
    version label or name; None: the current built-in extractor).

    Chunk by chunk as a job runs: extraction (``concepts.extract_texts``), then one resolver per chunk
    for the MeSH ids (``selectors``), exactly the kind's calls; seconds include both.
    """
    from medassist.knowledge import concepts, selectors

    concepts.load(version=version)  # load once, outside the timing, as a worker does at start
    chunks = [documents[i:i + chunk_size] for i in range(0, len(documents), chunk_size)]
    if progress is not None:
        chunks = progress(chunks, len(chunks))
    results: list[list[dict]] = []
    seconds = 0.0
    for chunk in chunks:
        started = time.perf_counter()
        found = concepts.extract_texts([d.text for d in chunk], version=version)
        resolver = selectors.concept_resolver_for(found=(c for f in found for c in f))
        results += [[selectors.concept_with_resolved_id(found=c, resolver=resolver) for c in f] for f in found]
        seconds += time.perf_counter() - started
    return results, seconds


def gold_examples(documents: Iterable[GoldDocument]) -> list[tuple[str, list[tuple[int, int, str, tuple[str, ...]]]]]:
    """``(text, [(start, end, type, ids), ...])`` per document: what ``concepts.learn_lexicon`` reads."""
    return [(d.text, [(m.start, m.end, m.type, m.ids) for m in d.mentions]) for d in documents]


def _prf(tp_pred: int, n_pred: int, tp_gold: int, n_gold: int) -> dict:
    precision = tp_pred / n_pred if n_pred else 0.0
    recall = tp_gold / n_gold if n_gold else 0.0
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    return {"precision": precision, "recall": recall, "f1": f1, "predicted": n_pred, "gold": n_gold,
            "tp_predicted": tp_pred, "tp_gold": tp_gold}


def score(documents: Sequence[GoldDocument], predictions: Sequence[Sequence[Predicted]], *,
          types: Sequence[str] = TYPES) -> dict:
    """Mention (exact, overlap), document-level normalisation and coverage figures, by type.

    Returns ``{type: {"exact": prf, "overlap": prf, "normalisation": prf, "normalisation_strict": prf,
    "coverage": {"covered", "mentions", "share"}}}`` (strict: a concept with only a DrugBank id counts as a
    wrong id instead of none) where prf = ``{"precision", "recall", "f1", "predicted", "gold", "tp"}``
    (``tp``: true positives on the predicted side; for recall, ``recall * gold``).
    """
    if len(documents) != len(predictions):
        raise ValueError(f"{len(documents)} documents but {len(predictions)} predictions")
    counts = {t: defaultdict(int) for t in types}
    for doc, predicted in zip(documents, predictions, strict=True):
        found_ids = {p.id for p in predicted if p.id}
        for kind in types:
            c = counts[kind]
            gold_spans = sorted({(m.start, m.end) for m in doc.mentions if m.type == kind})
            pred_spans = sorted({s for p in predicted if p.type == kind for s in p.spans})
            gold_set, pred_set = set(gold_spans), set(pred_spans)
            c["exact_tp"] += len(gold_set & pred_set)
            c["pred_spans"] += len(pred_spans)
            c["gold_spans"] += len(gold_spans)
            c["overlap_pred"] += sum(any(s < ge and gs < e for gs, ge in gold_spans) for s, e in pred_spans)
            c["overlap_gold"] += sum(any(ps < e and s < pe for ps, pe in pred_spans) for s, e in gold_spans)
            gold_ids = {i for m in doc.mentions if m.type == kind for i in m.ids}
            pred_ids = {p.id for p in predicted if p.type == kind and p.id}
            c["norm_tp"] += len(gold_ids & pred_ids)
            c["norm_pred"] += len(pred_ids)
            c["norm_gold"] += len(gold_ids)
            c["strict_pred"] += len(pred_ids | {p.other_id for p in predicted if p.type == kind and p.other_id})
            with_ids = [m for m in doc.mentions if m.type == kind and m.ids]
            c["cov_mentions"] += len(with_ids)
            c["cov_covered"] += sum(any(i in found_ids for i in m.ids) for m in with_ids)
    out = {}
    for kind, c in counts.items():
        out[kind] = {
            "exact": _prf(c["exact_tp"], c["pred_spans"], c["exact_tp"], c["gold_spans"]),
            "overlap": _prf(c["overlap_pred"], c["pred_spans"], c["overlap_gold"], c["gold_spans"]),
            "normalisation": _prf(c["norm_tp"], c["norm_pred"], c["norm_tp"], c["norm_gold"]),
            # the same, with concepts known only by a non-MeSH id (DrugBank) counted as wrong ids
            "normalisation_strict": _prf(c["norm_tp"], c["strict_pred"], c["norm_tp"], c["norm_gold"]),
            "coverage": {"covered": c["cov_covered"], "mentions": c["cov_mentions"],
                         "share": c["cov_covered"] / c["cov_mentions"] if c["cov_mentions"] else 0.0},
        }
    return out


def evaluate_version(documents: Sequence[GoldDocument], version: str | None, *, types: Sequence[str] = TYPES,
                     chunk_size: int = 256, progress: Callable | None = None) -> dict:
    """``{"scores": score(...), "seconds", "abstracts_per_s", "documents"}`` of one concepts version."""
    found, seconds = extract_documents(documents, version=version, chunk_size=chunk_size, progress=progress)
    scores = score(documents, [predictions_from_concepts(f, types=types) for f in found], types=types)
    return {"scores": scores, "seconds": seconds, "documents": len(documents),
            "abstracts_per_s": len(documents) / seconds if seconds else float("inf")}


def _triple(prf: dict) -> str:
    return f"{prf['precision']:.3f} / {prf['recall']:.3f} / **{prf['f1']:.3f}**"


def report_table(results: dict[str, dict], *, types: Sequence[str] = TYPES) -> str:
    """A markdown table: one row per (version, type), the anchors in the last column."""
    from medassist.tools.reports import format_table

    rows = []
    for label, result in results.items():
        for kind in types:
            s = result["scores"][kind]
            cov = s["coverage"]
            rows.append([label, kind, _triple(s["exact"]), _triple(s["overlap"]), _triple(s["normalisation"]),
                         f"{s['normalisation_strict']['f1']:.3f}", f"{cov['share']:.3f} ({cov['covered']}/{cov['mentions']})",
                         f"{result['abstracts_per_s']:.0f}", ANCHORS[kind]])
    return format_table(["extractor", "type", "mentions, exact span P / R / F1", "mentions, overlap P / R / F1",
                         "document-level (type, MeSH id) P / R / F1", "document-level F1, DrugBank-only counted wrong",
                         "coverage", "abstracts/s",
                         "anchor, document-level F1"], rows)
