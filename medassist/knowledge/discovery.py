"""Literature-based discovery: Swanson's A-B-C model over a concept co-occurrence graph.

"Research-hypothesis generation": for a start concept A, propose target concepts C that are *not*
yet directly linked to A in the literature but are bridged by intermediate concepts B (A-B and B-C
co-occur).  The graph is undirected, weighted by co-occurrence counts, and held as a symmetric
``scipy.sparse`` CSR matrix so that a query is a few sparse row slices and sparse-dense products:
no Python loop over all nodes (the only Python loops run over the <= ``top_k`` results, over the
candidates while the optional ``allowed`` filter rejects them, and over input edges while building).

This module is deliberately free of Django: it works on plain data (:class:`Edge` records) so the
Django layer can feed it from the database (``knowledge.selectors.cooccurrence_graph``), and the
evaluation can feed it from files.

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

The evaluation that compares the measures (edge hold-out and time-sliced AUC, gold-pair ranks: hidden
or future links should score higher than pairs that never link) and the loaders of the shared research
files it reads are :mod:`medassist.tools.evaluation.discovery` (``manage.py evaluate hypothesis``).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

import numpy as np
import scipy.sparse as sp

MEASURES = ("linking_terms", "jaccard", "adamic_adar", "resource_allocation", "pmi_min")

__all__ = [
    "MEASURES",
    "CHECK_TAGS",
    "Edge",
    "Hypothesis",
    "CooccurrenceGraph",
    "check_measure",
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


def check_measure(measure: str) -> None:
    """ValueError unless ``measure`` is one of ``MEASURES``."""
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
        return cls.from_index_arrays(ids, rows, cols, np.asarray(counts, dtype=np.float64))

    @classmethod
    def from_index_arrays(cls, ids: list[str], rows: np.ndarray, cols: np.ndarray, w: np.ndarray) -> CooccurrenceGraph:
        """The graph of edges (ids[rows[k]], ids[cols[k]]) with counts w[k]: duplicate pairs (either
        orientation) summed; the node list is ``ids`` as given (nodes without an edge included)."""
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

    def edge_keys(self) -> np.ndarray:
        """Sorted keys u*n+v (u < v) of the undirected edges."""
        coo = sp.triu(self._b, k=1).tocoo()
        return np.sort(coo.row.astype(np.int64) * len(self.ids) + coo.col.astype(np.int64))

    def edge_arrays(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(u, v, count) of every undirected edge once (u < v, node indices), in row-major order."""
        tri = sp.triu(self._w, k=1).tocoo()
        return tri.row.astype(np.int64), tri.col.astype(np.int64), tri.data

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
        check_measure(measure)
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
        check_measure(measure)
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


# ---------------------------------------------------------------------- generic concepts
# MeSH check tags: demographic/organism descriptors attached to most records.  As co-occurrence
# nodes they are hubs that bridge everything and mean nothing, so the corpus graph
# (selectors.cooccurrence_graph) and the PubMedQA loader of the evaluation drop them.
CHECK_TAGS = frozenset(
    {
        "Humans", "Animals", "Male", "Female", "Pregnancy",
        "Infant, Newborn", "Infant", "Child, Preschool", "Child", "Adolescent", "Young Adult",
        "Adult", "Middle Aged", "Aged", "Aged, 80 and over",
    }
)  # fmt: skip
