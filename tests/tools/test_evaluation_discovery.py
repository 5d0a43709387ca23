"""Tests for medassist.tools.evaluation.discovery: edge hold-out and time-sliced AUC, gold-pair ranks,
and the loaders of the shared research files.  Numbers are printed (run with ``-s`` to see them).
"""

from __future__ import annotations

from collections import Counter

import pytest

from medassist.knowledge.discovery import MEASURES, CooccurrenceGraph, Edge
from medassist.tools.evaluation.discovery import (
    edge_holdout_auc,
    gold_ranks,
    load_annotated_relations,
    load_medline_disease_edges,
    load_mesh_terms,
    load_pubmedqa_mesh_edges,
    time_sliced_auc,
)
from tests.conftest import require_shared_data as _shared
from tests.knowledge.test_discovery import EDGES  # the handmade graph, drawn there


@pytest.fixture(scope="module")
def small() -> CooccurrenceGraph:
    return CooccurrenceGraph.from_edges(EDGES)


def test_time_sliced_and_gold_ranks_on_handmade_graph(small):
    # Before 2002: A-B1, A-B2, A-B3, B1-C1, B2-C1, C1-E, C2-F.  After: B1-C2 (both nodes known before,
    # unlinked before: positive), B3-C2 (positive), B3-D (D unknown before: not a positive).
    res = time_sliced_auc(EDGES, cutoff_year=2001, measure="linking_terms")
    assert res["positives"] == 2 and res["negatives"] == 2
    assert res["measure"] == "linking_terms" and 0.0 <= res["auc"] <= 1.0

    ranks = gold_ranks(small, [("A", "C1"), ("A", "D"), ("A", "B1"), ("A", "E"), ("Q", "C1")], measure="adamic_adar")
    assert ranks[0]["covered"] and ranks[0]["rank"] == 1 and ranks[0]["candidates"] == 3
    assert ranks[0]["percentile"] == pytest.approx(100.0)
    assert ranks[1]["rank"] == 3 and ranks[1]["percentile"] == pytest.approx(0.0)
    assert ranks[2]["reason"] == "already directly linked"
    assert ranks[3]["reason"].startswith("no linking term")
    assert ranks[4]["reason"] == "start not in graph"
    tied = gold_ranks(small, [("A", "C2")], measure="jaccard")[0]  # C1 and C2 tie at 0.5
    assert tied["rank"] == 1 and tied["ties"] == 1


def test_edge_holdout_keeps_endpoints():
    # A star plus a triangle: hiding a leaf edge would isolate the leaf, so only triangle edges qualify.
    edges = [Edge("hub", f"leaf{i}", 1) for i in range(10)] + [Edge("x", "y", 1), Edge("y", "z", 1), Edge("x", "z", 1)]
    res = edge_holdout_auc(edges, measure="adamic_adar", holdout_fraction=0.5, seed=1)
    assert res["positives"] == 1  # removing one triangle edge leaves the other two endpoints with degree 1
    assert res["negatives"] == 1


# ---------------------------------------------------------------------- real data
@pytest.fixture(scope="module")
def medline():
    edges, names = load_medline_disease_edges(_shared("medline-cooccurrence", "disease-disease-cooccurrence.tsv"))
    return edges, names


def test_medline_edge_holdout_auc_beats_chance(medline):
    edges, _ = medline
    results = {m: edge_holdout_auc(edges, measure=m, holdout_fraction=0.1, seed=0) for m in MEASURES}
    print(
        "\nedge hold-out AUC (MEDLINE disease graph, 10%, seed 0): "
        + ", ".join(f"{m} {r['auc']:.3f}" for m, r in results.items())
        + f" (positives={results['jaccard']['positives']}, negatives={results['jaccard']['negatives']})"
    )
    for m, r in results.items():
        assert r["measure"] == m and r["positives"] == r["negatives"] > 0
        assert r["auc"] > 0.5, (m, r)


@pytest.fixture(scope="module")
def pubmedqa_edges():
    return load_pubmedqa_mesh_edges(_shared("pubmedqa", "pqal_train.json"))


def test_pubmedqa_time_sliced_auc(pubmedqa_edges):
    cutoff = 2010
    years = Counter(e.year for e in pubmedqa_edges)
    assert sum(n for y, n in years.items() if y <= cutoff) > 0 and sum(n for y, n in years.items() if y > cutoff) > 0
    results = {m: time_sliced_auc(pubmedqa_edges, cutoff_year=cutoff, measure=m, seed=0) for m in MEASURES}
    r0 = results["adamic_adar"]
    print(
        f"\ntime-sliced AUC (PubMedQA MeSH, cutoff {cutoff}, {r0['nodes']} nodes, {r0['train_edges']} edges, "
        f"{r0['positives']} positives): " + ", ".join(f"{m} {r['auc']:.3f}" for m, r in results.items())
    )
    for m, r in results.items():
        assert r["positives"] > 100 and r["negatives"] == r["positives"]
        assert r["auc"] > 0.5, (m, r)


def test_gold_ranks_annotated_relations_on_pubmedqa():
    terms = load_mesh_terms(_shared("mesh-2015", "terms.tsv"))
    rel = load_annotated_relations(_shared("medline-discoveries", "annotated-relations.tsv"))
    edges = load_pubmedqa_mesh_edges(_shared("pubmedqa", "pqal_train.json"), name_to_id=terms)
    graph = CooccurrenceGraph.from_edges(edges)
    gold = [(r["c1"], r["c2"]) for r in rel]
    assert len(gold) == 400
    for measure in MEASURES:
        res = gold_ranks(graph, gold, measure=measure)
        assert len(res) == len(gold)
        covered = [r for r in res if r["covered"]]
        assert all(1 <= r["rank"] <= r["candidates"] for r in covered)
        assert all(r.get("reason") for r in res if not r["covered"])
        if measure == MEASURES[0]:
            print(
                "\ngold (annotated-relations, c1 -> c2) on the all-years PubMedQA MeSH graph:",
                dict(Counter(r.get("reason", "covered") for r in res)),
            )
        print(
            f"  {measure}: covered {len(covered)}/{len(gold)}; (rank, ties, candidates, percentile) "
            + str([(r["rank"], r["ties"], r["candidates"], round(r["percentile"], 1)) for r in covered])
            + (
                f"  pairs: {[(rel[k]['term.c1'], rel[k]['term.c2']) for k, r in enumerate(res) if r['covered']]}"
                if measure == MEASURES[0]
                else ""
            )
        )
    # Time-respecting variant: each pair against the graph of the years before its surge year.
    by_year: dict[int, list[int]] = {}
    for k, r in enumerate(rel):
        by_year.setdefault(r["year"], []).append(k)
    reasons: Counter = Counter()
    covered_t = []
    for year, ks in by_year.items():
        g = CooccurrenceGraph.from_edges(edges, until_year=year - 1)
        for k, r in zip(ks, gold_ranks(g, [gold[k] for k in ks], measure="adamic_adar"), strict=True):
            reasons[r.get("reason", "covered")] += 1
            if r["covered"]:
                covered_t.append((rel[k]["term.c1"], rel[k]["term.c2"], year, r["rank"], r["candidates"]))
    print("  time-respecting (graph until surge year - 1), adamic_adar:", dict(reasons), covered_t)
