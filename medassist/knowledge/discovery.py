"""Literature-based discovery: Swanson's A-B-C model over a concept co-occurrence graph.

"Research-hypothesis generation": for a start concept A, propose target concepts C that are *not*
yet directly linked to A in the literature but are bridged by intermediate concepts B (A-B and B-C
co-occur).  The graph is undirected, weighted by co-occurrence counts, and held as a symmetric
``scipy.sparse`` CSR matrix so that a query is a few sparse row slices and sparse-dense products:
no Python loop over all nodes (the only Python loops run over the <= ``top_k`` results, over the
candidates while the optional ``allowed`` filter rejects them, and over input edges while building).

This module is deliberately free of Django: it works on plain data (:class:`Edge` records) so the
Django layer can feed it from the database, and the evaluation functions can feed it from files.

Measures (``MEASURES``), for a pair (A, C) with neighbour sets N(.) and B ranging over N(A) ∩ N(C):

``linking_terms``
    |N(A) ∩ N(C)|: the number of B concepts (Swanson's "linking terms").  Favours hubs.
``jaccard``
    |N(A) ∩ N(C)| / |N(A) ∪ N(C)|: linking terms normalised by how much A and C link at all.
``adamic_adar``
    Σ_B 1 / log(deg B): a shared neighbour counts more the rarer (less generic) it is.
    (Every bridge has deg B >= 2, so log(deg B) > 0.)
``resource_allocation``
    Σ_B 1 / deg B: like Adamic-Adar with a stronger penalty on hub bridges.
``pmi_min``
    Σ_B min(PMI(A,B), PMI(B,C)) over the B with both PMIs > 0.  A path is as strong as its weakest
    link, and only positively associated links count.  PMI uses the co-occurrence counts against the
    node totals: PMI(x,y) = log(n_xy · N / (n_x · n_y)), with n_xy the (summed) count of the pair,
    n_x = Σ_y n_xy the node's total count and N = Σ_x n_x.  Unlike the other measures it uses the
    counts, not only the graph structure.

:meth:`CooccurrenceGraph.discover` returns :class:`Hypothesis` records; each carries its best bridges
with their contribution to the score (for ``linking_terms`` 1 each, ``jaccard`` 1/|N(A) ∪ N(C)|
each, the others their summand), ties broken by the weaker of the two counts n_AB, n_BC, then id.

Evaluation (:func:`edge_holdout_auc`, :func:`time_sliced_auc`, :func:`gold_ranks`) compares the
measures: hidden/future links should score higher than pairs that never link.

Small loaders for the shared research data formats (MEDLINE disease co-occurrence TSV, PubMedQA MeSH
lists, the medline-discoveries gold pairs, MeSH 2015 terms) are at the end; they take paths, and
never copy data anywhere.
"""

from __future__ import annotations

import csv
import json
import math
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from itertools import combinations
from pathlib import Path

import numpy as np
import scipy.sparse as sp

MEASURES = ("linking_terms", "jaccard", "adamic_adar", "resource_allocation", "pmi_min")

__all__ = [
    "MEASURES",
    "CHECK_TAGS",
    "Edge",
    "Hypothesis",
    "CooccurrenceGraph",
    "edge_holdout_auc",
    "time_sliced_auc",
    "gold_ranks",
    "load_medline_disease_edges",
    "load_pubmedqa_mesh_edges",
    "load_mesh_terms",
    "load_annotated_relations",
]


@dataclass(frozen=True)
class Edge:
    """One undirected co-occurrence of concepts ``a`` and ``b`` (ids), ``count`` times, in ``year``.

    ``year=None`` means undated: such edges are kept whatever the ``until_year``.
    """

    a: str
    b: str
    count: float
    year: int | None = None


@dataclass
class Hypothesis:
    start: str
    target: str
    score: float
    measure: str
    bridges: list[tuple[str, float]] = field(default_factory=list)  # best first, at most max_bridges
    linking_terms: int = 0  # |N(A) ∩ N(C)|, all B concepts (bridges may be cut at max_bridges)


def _check_measure(measure: str) -> None:
    if measure not in MEASURES:
        raise ValueError(f"unknown measure {measure!r}; expected one of {MEASURES}")


class CooccurrenceGraph:
    """Undirected weighted concept co-occurrence graph (symmetric CSR, no self loops).

    Attributes: ``ids`` (index -> concept id, sorted), ``index`` (id -> index), ``degree`` (number
    of neighbours), ``total`` (n_x, sum of the node's co-occurrence counts), ``n_edges``.
    """

    def __init__(self, ids: list[str], weights: sp.csr_matrix):
        # Use from_edges(); this takes an already symmetric, duplicate-free CSR without diagonal.
        self.ids = ids
        self.index = {c: i for i, c in enumerate(ids)}
        self._w = weights  # counts
        self._b = weights.copy()
        self._b.data = np.ones_like(self._b.data)  # structure only (0/1), for the set measures
        self.degree = np.diff(self._b.indptr).astype(np.int64)
        self.total = np.asarray(weights.sum(axis=1)).ravel()
        self.n_edges = int(weights.nnz // 2)
        self._pmi_cache: tuple[sp.csr_matrix, sp.csr_matrix] | None = None

    # ------------------------------------------------------------------ construction
    @classmethod
    def from_edges(cls, edges: Iterable[Edge], *, until_year: int | None = None) -> CooccurrenceGraph:
        """Build the graph, keeping edges with ``year <= until_year`` (undated edges always).

        Duplicate pairs (either orientation) have their counts summed, so feed each co-occurrence
        once.  Self loops and zero counts are dropped (a pair listed with count 0 is not a link);
        negative or non-finite counts raise ``ValueError``.  Nodes are the endpoints of kept edges.
        """
        a_ids: list[str] = []
        b_ids: list[str] = []
        counts: list[float] = []
        for e in edges:
            if until_year is not None and e.year is not None and e.year > until_year:
                continue
            c = float(e.count)
            if not math.isfinite(c) or c < 0:
                raise ValueError(f"invalid co-occurrence count {e.count!r} for ({e.a!r}, {e.b!r})")
            if c == 0 or e.a == e.b:
                continue
            a_ids.append(e.a)
            b_ids.append(e.b)
            counts.append(c)
        ids = sorted(set(a_ids) | set(b_ids))
        index = {c: i for i, c in enumerate(ids)}
        rows = np.fromiter((index[x] for x in a_ids), dtype=np.int64, count=len(a_ids))
        cols = np.fromiter((index[x] for x in b_ids), dtype=np.int64, count=len(b_ids))
        return cls._from_index_arrays(ids, rows, cols, np.asarray(counts, dtype=np.float64))

    @classmethod
    def _from_index_arrays(cls, ids: list[str], rows: np.ndarray, cols: np.ndarray, w: np.ndarray) -> CooccurrenceGraph:
        n = len(ids)
        # Both orientations; tocsr() sums duplicates, which sums repeated pairs in either orientation.
        m = sp.coo_matrix((np.concatenate([w, w]), (np.concatenate([rows, cols]), np.concatenate([cols, rows]))), shape=(n, n))
        csr = m.tocsr()
        csr.sum_duplicates()
        csr.sort_indices()
        return cls(ids, csr)

    # ------------------------------------------------------------------ basic queries
    def __len__(self) -> int:
        return len(self.ids)

    def __contains__(self, concept: object) -> bool:
        return concept in self.index

    def neighbors(self, concept: str) -> dict[str, float]:
        """Neighbour id -> summed co-occurrence count ({} for an unknown concept)."""
        i = self.index.get(concept)
        if i is None:
            return {}
        lo, hi = self._w.indptr[i], self._w.indptr[i + 1]
        return {self.ids[j]: float(v) for j, v in zip(self._w.indices[lo:hi], self._w.data[lo:hi], strict=True)}

    def has_edge(self, a: str, b: str) -> bool:
        i, j = self.index.get(a), self.index.get(b)
        if i is None or j is None:
            return False
        lo, hi = self._b.indptr[i], self._b.indptr[i + 1]
        k = np.searchsorted(self._b.indices[lo:hi], j)  # indices are sorted
        return bool(k < hi - lo and self._b.indices[lo + k] == j)

    def _neighbor_idx(self, i: int) -> np.ndarray:
        return self._b.indices[self._b.indptr[i] : self._b.indptr[i + 1]]

    def _edge_keys(self) -> np.ndarray:
        """Sorted keys u*n+v (u < v) of the undirected edges."""
        coo = sp.triu(self._b, k=1).tocoo()
        return np.sort(coo.row.astype(np.int64) * len(self.ids) + coo.col.astype(np.int64))

    # ------------------------------------------------------------------ measure ingredients
    def _pmi(self) -> tuple[sp.csr_matrix, sp.csr_matrix]:
        """(PMI on every edge, PMI kept only where > 0), computed once (one vectorised pass)."""
        if self._pmi_cache is None:
            coo = self._w.tocoo()
            n_total = self.total.sum()
            vals = np.log(coo.data * n_total / (self.total[coo.row] * self.total[coo.col]))
            full = sp.csr_matrix((vals, (coo.row, coo.col)), shape=self._w.shape)
            pos = full.copy()
            pos.data = np.where(pos.data > 0, pos.data, 0.0)
            pos.eliminate_zeros()
            pos.sort_indices()
            self._pmi_cache = (full, pos)
        return self._pmi_cache

    def _bridge_weight(self, measure: str) -> np.ndarray | None:
        """Per-node weight w_B for the additive measures Σ_B w_B (None for jaccard / pmi_min)."""
        deg = self.degree.astype(np.float64)
        if measure == "linking_terms":
            return np.ones_like(deg)
        if measure == "adamic_adar":
            # deg B >= 2 for any real bridge; deg-1 nodes only touch A, weight 0 avoids 1/log(1).
            return np.where(deg >= 2, 1.0 / np.log(np.maximum(deg, 2.0)), 0.0)
        if measure == "resource_allocation":
            return np.where(deg >= 1, 1.0 / np.maximum(deg, 1.0), 0.0)
        return None

    def _scores_from(self, i: int, measure: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Scores of every C candidate of node ``i``: (candidate idx, score, linking-term count).

        Candidates = nodes sharing >= 1 neighbour with i, minus i and its neighbours.  All work is
        on the k = deg(i) rows of A's neighbours (sparse slice + column sums / sparse @ dense).
        """
        nbr = self._neighbor_idx(i)
        sub = self._b[nbr]  # k x n: row b is N(b)
        lt_all = np.asarray(sub.sum(axis=0)).ravel()  # |N(i) ∩ N(c)| for every c
        mask = lt_all > 0
        mask[i] = False
        mask[nbr] = False
        cand = np.flatnonzero(mask)
        lt = lt_all[cand]
        if measure == "jaccard":
            scores = lt / (self.degree[i] + self.degree[cand] - lt)
        elif measure == "pmi_min":
            full, pos = self._pmi()
            pmi_ab = np.asarray(full[i, nbr].todense()).ravel()
            keep = pmi_ab > 0
            rows = pos[nbr[keep]]  # positive PMI(B, .) for the B with PMI(A, B) > 0
            rows.data = np.minimum(rows.data, np.repeat(pmi_ab[keep], np.diff(rows.indptr)))
            scores = np.asarray(rows.sum(axis=0)).ravel()[cand]
        else:
            w = self._bridge_weight(measure)
            scores = (sub.T @ w[nbr])[cand]
        return cand, np.asarray(scores, dtype=np.float64), lt.astype(np.int64)

    def _contributions(self, i: int, cols: np.ndarray, measure: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(neighbour idx of i, per-bridge contribution k x t, per-bridge evidence k x t) for targets cols."""
        nbr = self._neighbor_idx(i)
        struct = self._b[nbr][:, cols].toarray()  # 1 where B-C linked
        w_bc = self._w[nbr][:, cols].toarray()
        w_ab = np.asarray(self._w[i, nbr].todense()).ravel()
        evidence = np.minimum(w_ab[:, None], w_bc) * (struct > 0)
        if measure == "jaccard":
            lt = struct.sum(axis=0)
            contrib = struct / (self.degree[i] + self.degree[cols] - lt)[None, :]
        elif measure == "pmi_min":
            full, pos = self._pmi()
            pmi_ab = np.asarray(full[i, nbr].todense()).ravel()
            pmi_bc = pos[nbr][:, cols].toarray()  # 0 where not positive / no edge
            contrib = np.where((pmi_ab[:, None] > 0) & (pmi_bc > 0), np.minimum(pmi_ab[:, None], pmi_bc), 0.0)
        else:
            contrib = struct * self._bridge_weight(measure)[nbr][:, None]
        return nbr, contrib, evidence

    # ------------------------------------------------------------------ discovery
    def discover(
        self,
        start: str,
        *,
        measure: str = "adamic_adar",
        top_k: int = 20,
        allowed: Callable[[str], bool] | None = None,
        max_bridges: int = 10,
    ) -> list[Hypothesis]:
        """Top ``top_k`` C concepts for ``start`` = A (not linked to A, bridged by >= 1 B).

        ``allowed(c)`` filters targets (e.g. a semantic group); it is only called on candidates in
        rank order until ``top_k`` pass.  Ties are broken by more linking terms, then by id.
        Returns [] for an unknown start concept.
        """
        _check_measure(measure)
        i = self.index.get(start)
        if i is None or top_k <= 0:
            return []
        cand, scores, lt = self._scores_from(i, measure)
        order = np.lexsort((cand, -lt, -scores))  # score desc, linking terms desc, id asc
        picked: list[int] = []
        for o in order:
            if allowed is None or allowed(self.ids[cand[o]]):
                picked.append(int(o))
                if len(picked) == top_k:
                    break
        if not picked:
            return []
        cols = cand[picked]
        nbr, contrib, evidence = self._contributions(i, cols, measure)
        out = []
        for j, o in enumerate(picked):
            c, e = contrib[:, j], evidence[:, j]
            has = np.flatnonzero(c > 0)
            best = has[np.lexsort((nbr[has], -e[has], -c[has]))][: max(max_bridges, 0)]
            out.append(
                Hypothesis(
                    start=start,
                    target=self.ids[cand[o]],
                    score=float(scores[o]),
                    measure=measure,
                    bridges=[(self.ids[nbr[b]], float(c[b])) for b in best],
                    linking_terms=int(lt[o]),
                )
            )
        return out

    def score_pairs(self, pairs: list[tuple[str, str]], *, measure: str, chunk: int = 20000) -> np.ndarray:
        """Measure value for each (a, c) pair, vectorised (0 for unknown nodes or a == c).

        Computed as in :meth:`discover` but whether or not a and c are already linked.
        """
        _check_measure(measure)
        out = np.zeros(len(pairs), dtype=np.float64)
        ia = np.fromiter((self.index.get(a, -1) for a, _ in pairs), dtype=np.int64, count=len(pairs))
        ic = np.fromiter((self.index.get(c, -1) for _, c in pairs), dtype=np.int64, count=len(pairs))
        valid = np.flatnonzero((ia >= 0) & (ic >= 0) & (ia != ic))
        for s in range(0, len(valid), chunk):
            v = valid[s : s + chunk]
            out[v] = self._score_index_pairs(ia[v], ic[v], measure)
        return out

    def _score_index_pairs(self, ia: np.ndarray, ic: np.ndarray, measure: str) -> np.ndarray:
        if measure == "pmi_min":
            _, pos = self._pmi()
            # Both PMIs > 0 <=> both entries stored in `pos`; the sparse minimum is 0 elsewhere.
            return np.asarray(pos[ia].minimum(pos[ic]).sum(axis=1)).ravel()
        shared = self._b[ia].multiply(self._b[ic]).tocsr()  # row r: N(a_r) ∩ N(c_r)
        if measure == "jaccard":
            lt = np.asarray(shared.sum(axis=1)).ravel()
            union = self.degree[ia] + self.degree[ic] - lt
            return np.divide(lt, union, out=np.zeros_like(lt, dtype=np.float64), where=union > 0)
        return np.asarray(shared @ self._bridge_weight(measure)).ravel()

    def candidate_ranks(self, start: str, targets: list[str], *, measure: str) -> tuple[int, list[dict]]:
        """(number of C candidates of start, rank info for each target; None if not a candidate)."""
        i = self.index[start]
        cand, scores, _ = self._scores_from(i, measure)
        pos = {int(c): k for k, c in enumerate(cand)}
        n = len(cand)
        sorted_scores = np.sort(scores)
        info: list[dict] = []
        for t in targets:
            k = pos.get(self.index.get(t, -1))
            if k is None:
                info.append(None)
                continue
            s = scores[k]
            higher = n - int(np.searchsorted(sorted_scores, s, side="right"))
            equal = int(np.searchsorted(sorted_scores, s, side="right") - np.searchsorted(sorted_scores, s, side="left"))
            mid = higher + (equal + 1) / 2.0  # average rank among ties
            info.append(
                {
                    "rank": higher + 1,  # competition rank (1 = best; ties share the best rank)
                    "ties": equal - 1,  # other candidates with exactly the same score
                    "percentile": 100.0 * (n - mid) / (n - 1) if n > 1 else 100.0,  # 100 = top
                    "score": float(s),
                }
            )
        return n, info


# ---------------------------------------------------------------------- evaluation
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
    _check_measure(measure)
    rng = np.random.default_rng(seed)
    full = CooccurrenceGraph.from_edges(edges)
    tri = sp.triu(full._w, k=1).tocoo()
    u, v, w = tri.row.astype(np.int64), tri.col.astype(np.int64), tri.data
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
    train = CooccurrenceGraph._from_index_arrays(full.ids, u[~held], v[~held], w[~held])
    pos_pairs = [(full.ids[a], full.ids[b]) for a, b in zip(u[held], v[held], strict=True)]
    neg_keys = _sample_non_edges(len(full.ids), full._edge_keys(), len(pos_pairs), rng)
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
    _check_measure(measure)
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
    pre_keys = train._edge_keys()
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
    _check_measure(measure)
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
# MeSH check tags: demographic/organism descriptors attached to most records.  As co-occurrence
# nodes they are hubs that bridge everything and mean nothing, so the PubMedQA loader drops them.
CHECK_TAGS = frozenset(
    {
        "Humans", "Animals", "Male", "Female", "Pregnancy",
        "Infant, Newborn", "Infant", "Child, Preschool", "Child", "Adolescent", "Young Adult",
        "Adult", "Middle Aged", "Aged", "Aged, 80 and over",
    }
)  # fmt: skip


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
