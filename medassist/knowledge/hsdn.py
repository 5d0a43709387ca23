"""HSDN and MeSH tree readers: what the diagnosis ranker's symptom-disease matrix is built from.

HSDN (Zhou et al., Nat Commun 2014; ``symptoms-DO.tsv``): 10,465 symptom -> disease links mined from
MEDLINE MeSH co-occurrence with a TF-IDF score, 119 MeSH diseases x 316 MeSH symptoms.  MeSH 2015
``tree-numbers.tsv`` gives each descriptor's place in the hierarchy: the ranker uses it to raise a
disease's weight for a symptom to its weight for any MeSH descendant of that symptom
(:func:`propagate_up`, :func:`symptom_ancestors`) and for the sex constraint (:func:`sex_specific`).

Files are parsed once per file version and process (an evaluation builds many rankers from them).
No Django: the imported HSDN rows come back as the same :class:`HsdnLink` through
``knowledge.selectors.hsdn_links``.

Public interface::

    HsdnLink(disease_id, disease_name, symptom_id, symptom_name, cooccurs, tfidf, doid, doid_name="")
    read_hsdn(path) -> tuple[HsdnLink, ...]
    read_trees(path, wanted: set[str]) -> {MeSH id: tree numbers}
    sex_specific(trees, disease_ids) -> {disease id: "male" | "female"}
    symptom_ancestors(trees, symptom_ids) -> {symptom index: {ancestor symptom indices}}
    propagate_up(matrix, ancestors) -> matrix
"""
from __future__ import annotations

import csv
from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import numpy as np
from scipy import sparse

from medassist.knowledge.findings import normalize_concept_id

__all__ = [
    "HsdnLink",
    "MALE_ONLY_TREES",
    "FEMALE_ONLY_TREES",
    "file_key",
    "read_hsdn",
    "read_trees",
    "sex_specific",
    "symptom_ancestors",
    "propagate_up",
]

# MeSH tree prefixes of sex-specific anatomy (see knowledge.diagnosis, "Age and sex").
MALE_ONLY_TREES = ("C12.294",)  # Genital Diseases, Male
FEMALE_ONLY_TREES = ("C13.351.500", "C13.703")  # Genital Diseases, Female; Pregnancy Complications


@dataclass(frozen=True)
class HsdnLink:
    """One symptom -> disease link of the association matrix (a row of HSDN's file or table)."""
    disease_id: str
    disease_name: str
    symptom_id: str
    symptom_name: str
    cooccurs: int
    tfidf: float
    doid: str
    doid_name: str = ""


def file_key(path: Path) -> tuple[str, int, int]:
    """(resolved path, mtime, size): the cache key of a file version."""
    st = Path(path).stat()
    return str(Path(path).resolve()), st.st_mtime_ns, st.st_size


@lru_cache(maxsize=8)
def _read_hsdn_cached(key: tuple[str, int, int]) -> tuple[HsdnLink, ...]:
    links = []
    with open(key[0], newline="", encoding="utf-8") as fh:
        for row in csv.DictReader(fh, delimiter="\t"):
            links.append(HsdnLink(normalize_concept_id(row["disease_id"]), row["disease_name"],
                               normalize_concept_id(row["symptom_id"]), row["symptom_name"],
                               int(row["cooccurs"]), float(row["tfidf_score"]), row["doid_code"],
                               row.get("doid_name") or ""))
    return tuple(links)


def read_hsdn(path: Path) -> tuple[HsdnLink, ...]:
    """Parsed once per file version and process (an evaluation builds many rankers from it)."""
    return _read_hsdn_cached(file_key(path))


def propagate_up(matrix: sparse.csr_matrix, ancestors: Mapping[int, set[int]]) -> sparse.csr_matrix:
    """row[a] = max(row[a], row[s]) for every ancestor a of s: MeSH indexes an article with the
    most specific term (Angina Pectoris), but angina *is* chest pain, so a patient's "chest pain"
    must meet the diseases whose literature says angina."""
    if not ancestors:
        return matrix
    dense = matrix.toarray()
    for j, ups in ancestors.items():
        for a in ups:
            np.maximum(dense[:, a], dense[:, j], out=dense[:, a])
    return sparse.csr_matrix(dense)


@lru_cache(maxsize=4)
def _read_all_trees(key: tuple[str, int, int]) -> dict[str, tuple[str, ...]]:
    out: dict[str, list[str]] = defaultdict(list)
    with open(key[0], newline="", encoding="utf-8") as fh:
        for row in csv.DictReader(fh, delimiter="\t"):
            out[normalize_concept_id(row["mesh_id"])].append(row["mesh_tree_number"])
    return {k: tuple(v) for k, v in out.items()}


def read_trees(path: Path, wanted: set[str]) -> dict[str, tuple[str, ...]]:
    """MeSH id -> tree numbers for the ids we need (MeSH 2015 ``tree-numbers.tsv``, parsed once)."""
    trees = _read_all_trees(file_key(path))
    return {cid: trees[cid] for cid in wanted if cid in trees}


def sex_specific(trees: Mapping[str, Sequence[str]], disease_ids: Iterable[str]) -> dict[str, str]:
    """disease id -> "male" | "female" for diseases of sex-specific anatomy (MeSH tree numbers)."""
    out: dict[str, str] = {}
    for cid in disease_ids:
        for tree in trees.get(cid, ()):
            if tree.startswith(MALE_ONLY_TREES):
                out[cid] = "male"
            elif tree.startswith(FEMALE_ONLY_TREES):
                out[cid] = "female"
    return out


def symptom_ancestors(trees: Mapping[str, Sequence[str]], symptom_ids: Sequence[str]) -> dict[int, set[int]]:
    """symptom index -> indices of its MeSH ancestors that are also matrix symptoms
    (Angina Pectoris -> Chest Pain, Pain; Fever of Unknown Origin -> Fever)."""
    index = {sid: j for j, sid in enumerate(symptom_ids)}
    by_tree = {t: index[sid] for sid in symptom_ids for t in trees.get(sid, ())}
    out: dict[int, set[int]] = {}
    for sid in symptom_ids:
        j = index[sid]
        for t in trees.get(sid, ()):
            parts = t.split(".")
            for k in range(1, len(parts)):
                a = by_tree.get(".".join(parts[:k]))
                if a is not None and a != j:
                    out.setdefault(j, set()).add(a)
    return out
