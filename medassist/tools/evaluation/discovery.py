"""The hypothesis kind's evaluation: how well each discovery measure predicts links (``manage.py
evaluate hypothesis``), and the loaders of the shared research files it reads.

Over a :class:`medassist.knowledge.discovery.CooccurrenceGraph`:

- :func:`edge_holdout_auc`: hide a random share of the edges; positives = hidden pairs, negatives =
  as many random non-edges, both scored on the rest;
- :func:`time_sliced_auc`: graph up to a cutoff year; positives = pairs first linked later;
- :func:`gold_ranks`: rank of each gold target among all candidates of its start concept.

Loaders (they take paths and never copy data anywhere): MEDLINE disease co-occurrence TSV, PubMedQA
MeSH lists, MeSH 2015 terms and the medline-discoveries gold pairs.  The served graphs come from the
database instead (``knowledge.selectors.cooccurrence_graph``).
"""

from __future__ import annotations

import csv
import json
from collections.abc import Iterable, Mapping
from itertools import combinations
from pathlib import Path

import numpy as np

from medassist.knowledge.discovery import CHECK_TAGS, CooccurrenceGraph, Edge, check_measure

__all__ = [
    "edge_holdout_auc",
    "time_sliced_auc",
    "gold_ranks",
    "load_medline_disease_edges",
    "load_pubmedqa_mesh_edges",
    "load_pubmedqa_extracted_edges",
    "load_mesh_terms",
    "load_annotated_relations",
]


def _auc(pos: np.ndarray, neg: np.ndarray) -> float:
    if len(pos) == 0 or len(neg) == 0:
        return float("nan")
    from sklearn.metrics import roc_auc_score  # local: only the evaluation needs sklearn

    y = np.concatenate([np.ones(len(pos)), np.zeros(len(neg))])
    return float(roc_auc_score(y, np.concatenate([pos, neg])))


def _sample_non_edges(n: int, forbidden: np.ndarray, k: int, rng: np.random.Generator) -> np.ndarray:
    """Up to k distinct random node pairs (keys u*n+v, u < v) whose keys are not in sorted ``forbidden``."""
    if k <= 0 or n < 2:
        return np.empty(0, dtype=np.int64)
    possible = n * (n - 1) // 2 - len(forbidden)
    if n <= 3000 or possible <= 4 * k:
        # Small graph: enumerate the complement exactly (<= 4.5M pairs), then draw without replacement.
        u, v = np.triu_indices(n, 1)
        keys = u.astype(np.int64) * n + v
        keys = keys[~np.isin(keys, forbidden, assume_unique=True)]
        return rng.choice(keys, size=min(k, len(keys)), replace=False)
    got = np.empty(0, dtype=np.int64)
    while len(got) < k:
        u = rng.integers(0, n, size=2 * k)
        v = rng.integers(0, n, size=2 * k)
        lo, hi = np.minimum(u, v), np.maximum(u, v)
        keys = (lo * n + hi)[lo != hi]
        keys = keys[~np.isin(keys, forbidden)]
        _, first = np.unique(np.concatenate([got, keys]), return_index=True)
        got = np.concatenate([got, keys])[np.sort(first)]  # dedupe, keep draw order
    return got[:k]


def _keys_to_pairs(graph: CooccurrenceGraph, keys: np.ndarray) -> list[tuple[str, str]]:
    n = len(graph.ids)
    return [(graph.ids[int(k) // n], graph.ids[int(k) % n]) for k in keys]


def edge_holdout_auc(edges: list[Edge], *, measure: str, holdout_fraction: float = 0.1, seed: int = 0) -> dict:
    """Link-prediction AUC: hide a random ``holdout_fraction`` of the (deduplicated) edges.

    Only edges whose two endpoints keep degree >= 1 are hidden (so every held-out pair is scored
    between nodes the training graph knows).  Positives = hidden pairs scored on the training graph;
    negatives = as many random node pairs of the training graph that are not edges of the full graph.
    """
    check_measure(measure)
    rng = np.random.default_rng(seed)
    full = CooccurrenceGraph.from_edges(edges)
    u, v, w = full.edge_arrays()
    m = len(w)
    target = int(round(holdout_fraction * m))
    deg = full.degree.copy()
    held = np.zeros(m, dtype=bool)
    n_held = 0
    for e in rng.permutation(m):  # evaluation only: one pass over the edges
        if n_held >= target:
            break
        if deg[u[e]] > 1 and deg[v[e]] > 1:
            deg[u[e]] -= 1
            deg[v[e]] -= 1
            held[e] = True
            n_held += 1
    train = CooccurrenceGraph.from_index_arrays(full.ids, u[~held], v[~held], w[~held])
    pos_pairs = [(full.ids[a], full.ids[b]) for a, b in zip(u[held], v[held], strict=True)]
    neg_keys = _sample_non_edges(len(full.ids), full.edge_keys(), len(pos_pairs), rng)
    neg_pairs = _keys_to_pairs(full, neg_keys)
    pos = train.score_pairs(pos_pairs, measure=measure)
    neg = train.score_pairs(neg_pairs, measure=measure)
    return {
        "auc": _auc(pos, neg),
        "positives": len(pos_pairs),
        "negatives": len(neg_pairs),
        "measure": measure,
        "nodes": len(full.ids),
        "train_edges": train.n_edges,
    }


def time_sliced_auc(edges: list[Edge], *, cutoff_year: int, measure: str, seed: int = 0) -> dict:
    """Future-link AUC: graph from edges up to ``cutoff_year`` (plus undated ones).

    Positives = pairs first co-occurring after the cutoff, both concepts already in the pre-cutoff
    graph, not linked in it.  Negatives = as many random pre-cutoff node pairs that link neither
    before nor after the cutoff.  Both are scored on the pre-cutoff graph.
    """
    check_measure(measure)
    rng = np.random.default_rng(seed)
    train = CooccurrenceGraph.from_edges(edges, until_year=cutoff_year)
    n = len(train.ids)
    post: set[int] = set()
    for e in edges:
        if e.year is None or e.year <= cutoff_year or e.count <= 0 or e.a == e.b:
            continue
        i, j = train.index.get(e.a), train.index.get(e.b)
        if i is None or j is None:
            continue
        post.add(min(i, j) * n + max(i, j))
    pre_keys = train.edge_keys()
    post_keys = np.array(sorted(post), dtype=np.int64)
    pos_keys = post_keys[~np.isin(post_keys, pre_keys, assume_unique=True)]
    forbidden = np.union1d(pre_keys, post_keys)
    neg_keys = _sample_non_edges(n, forbidden, len(pos_keys), rng)
    pos = train.score_pairs(_keys_to_pairs(train, pos_keys), measure=measure)
    neg = train.score_pairs(_keys_to_pairs(train, neg_keys), measure=measure)
    return {
        "auc": _auc(pos, neg),
        "positives": len(pos_keys),
        "negatives": len(neg_keys),
        "measure": measure,
        "cutoff_year": cutoff_year,
        "nodes": n,
        "train_edges": train.n_edges,
    }


def gold_ranks(graph: CooccurrenceGraph, gold_pairs: list[tuple[str, str]], *, measure: str) -> list[dict]:
    """Rank of each gold target C among all C candidates of its start A (1 = best).

    Every pair gets a dict with ``start``, ``target``, ``covered`` and either ``rank``, ``ties``,
    ``candidates``, ``percentile`` (100 = ranked first, by mid-rank among ties), ``score``, or a
    ``reason`` why it is not covered: a concept missing from the graph, the pair already directly
    linked (not a discovery for this graph), or no linking term (C is not a candidate of A).
    """
    check_measure(measure)
    by_start: dict[str, list[int]] = {}
    out: list[dict] = []
    for k, (a, c) in enumerate(gold_pairs):
        rec: dict = {"start": a, "target": c, "covered": False}
        out.append(rec)
        if a not in graph:
            rec["reason"] = "start not in graph"
        elif c not in graph:
            rec["reason"] = "target not in graph"
        elif a == c:
            rec["reason"] = "start == target"
        elif graph.has_edge(a, c):
            rec["reason"] = "already directly linked"
        else:
            by_start.setdefault(a, []).append(k)
    for a, ks in by_start.items():  # one candidate scoring per distinct start
        n, infos = graph.candidate_ranks(a, [gold_pairs[k][1] for k in ks], measure=measure)
        for k, info in zip(ks, infos, strict=True):
            out[k]["candidates"] = n
            if info is None:
                out[k]["reason"] = "no linking term (target is not a candidate)"
            else:
                out[k].update(info, covered=True)
    return out


# ---------------------------------------------------------------------- loaders (plain files)
def load_medline_disease_edges(path: str | Path) -> tuple[list[Edge], dict[str, str]]:
    """dhimmel/medline ``disease-disease-cooccurrence.tsv`` -> (undated edges, DOID -> name).

    The file lists every pair in both orientations (and pairs that never co-occur, count 0):
    keep one row per unordered pair, since :meth:`CooccurrenceGraph.from_edges` sums duplicates.
    """
    edges: list[Edge] = []
    names: dict[str, str] = {}
    seen: set[tuple[str, str]] = set()
    with open(path, newline="", encoding="utf-8") as fh:
        for row in csv.DictReader(fh, delimiter="\t"):
            a, b = row["doid_code_0"], row["doid_code_1"]
            names[a], names[b] = row["doid_name_0"], row["doid_name_1"]
            key = (a, b) if a < b else (b, a)
            if key in seen:
                continue
            seen.add(key)
            edges.append(Edge(a, b, float(row["cooccurrence"])))
    return edges, names


def load_mesh_terms(path: str | Path) -> dict[str, str]:
    """MeSH ``terms.tsv`` (mesh_id, mesh_name) -> {preferred name: descriptor id}."""
    with open(path, newline="", encoding="utf-8") as fh:
        return {r["mesh_name"]: r["mesh_id"] for r in csv.DictReader(fh, delimiter="\t")}


def load_pubmedqa_mesh_edges(
    path: str | Path,
    *,
    name_to_id: Mapping[str, str] | None = None,
    exclude: Iterable[str] = CHECK_TAGS,
    include_undated: bool = False,
) -> list[Edge]:
    """PubMedQA records -> one Edge(count=1, year=record YEAR) per pair of its MeSH headings.

    Concepts are MeSH names, or descriptor ids where ``name_to_id`` knows the name (unmapped names
    stay names).  Records without a year are skipped unless ``include_undated`` (then year=None,
    i.e. visible at every cutoff).
    """
    excluded = set(exclude)
    data = json.loads(Path(path).read_text(encoding="utf-8"))
    edges: list[Edge] = []
    for rec in data.values():
        year = rec.get("YEAR")
        if year is None and not include_undated:
            continue
        year = int(year) if year is not None else None
        concepts = sorted({(name_to_id.get(m, m) if name_to_id else m) for m in (rec.get("MESHES") or []) if m not in excluded})
        edges.extend(Edge(a, b, 1.0, year) for a, b in combinations(concepts, 2))
    return edges


def load_pubmedqa_extracted_edges(path: str | Path, *, version: str | None = None, chunk_size: int = 256) -> list[Edge]:
    """PubMedQA records -> one Edge(count=1, year) per pair of the concepts that the literature kind's extractor
    (``concepts.extract_texts`` under ``version``, ids resolved as the kind stores them) finds in the record's
    question and abstract: the corpus graph the product builds from submitted abstracts, here on dated
    records so that it can be time-sliced. Concepts without a MeSH id are left out (they cannot meet the
    gold pairs); undated records are skipped."""
    from medassist.knowledge import concepts, selectors

    data = json.loads(Path(path).read_text(encoding="utf-8"))
    records = [r for r in data.values() if r.get("YEAR") is not None]
    edges: list[Edge] = []
    for start in range(0, len(records), chunk_size):
        chunk = records[start:start + chunk_size]
        texts = [" ".join([r.get("QUESTION") or "", *(r.get("CONTEXTS") or [])]) for r in chunk]
        found = concepts.extract_texts(texts, version=version)
        resolver = selectors.concept_resolver_for(found=(c for f in found for c in f))
        for record, per_text in zip(chunk, found, strict=True):
            ids = sorted({c["mesh_id"] for c in (selectors.concept_with_resolved_id(found=f, resolver=resolver)
                                                  for f in per_text) if c.get("mesh_id")})
            edges.extend(Edge(a, b, 1.0, int(record["YEAR"])) for a, b in combinations(ids, 2))
    return edges


def load_annotated_relations(path: str | Path) -> list[dict]:
    """medline-discoveries ``annotated-relations.tsv`` rows (year -> int, gold.year -> int | None)."""
    out = []
    with open(path, newline="", encoding="utf-8") as fh:
        for row in csv.DictReader(fh, delimiter="\t"):
            row = dict(row)
            row["year"] = int(row["year"]) if row.get("year") not in (None, "", "NA") else None
            gy = row.get("gold.year")
            row["gold.year"] = int(gy) if gy not in (None, "", "NA") else None
            out.append(row)
    return out
