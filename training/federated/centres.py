"""Centres with realistic, unequal, non-IID data: records split into publication-year bands or MeSH branches.

A research network's hospitals do not hold identically distributed data: one has an older archive, one
mostly recent literature, one little of either; a cancer centre's notes are not a cardiology unit's.

- ``partition_by_year``: dated records are sorted by year and cut at year boundaries (a year is never
  split between centres) as close as possible to shares of n : n-1 : ... : 1 (3 centres: 1/2, 1/3, 1/6),
  so the centres differ in size, era, vocabulary and label mix.
- ``partition_by_mesh``: each record belongs to one MeSH tree branch (``record_branches``: the disease
  branch, category C, most of its headings fall under, e.g. C04 Neoplasms; else its most frequent branch
  of another category, check tags such as Humans or Adult aside); whole branches are dealt to the centres,
  largest first, each to the centre furthest below its n : n-1 : ... : 1 share, so a topic is never split
  and the centres differ in topic and size.

Records without a year (or without a known MeSH heading) go to a centre chosen by a hash of their id.
``describe`` reports the partition (sizes, years, sources, labels, branches): counts only, never text.
"""
from __future__ import annotations

import csv
import hashlib
from collections import Counter
from collections.abc import Sequence
from pathlib import Path

from training.data import Record


def centre_ids(n: int) -> list[str]:
    return [f"centre-{i}" for i in range(n)]


def partition_by_year(records: Sequence[Record], n: int) -> dict[str, list[Record]]:
    """Record -> centre, in year bands of unequal size; every centre gets at least one record."""
    if n < 1:
        raise ValueError("at least one centre")
    if len(records) < n:
        raise ValueError(f"{len(records)} records cannot be split into {n} centres")
    ids = centre_ids(n)
    dated = sorted((r for r in records if r.year), key=lambda r: (r.year, r.id))
    undated = [r for r in records if not r.year]
    years = sorted({r.year for r in dated})
    per_year = Counter(r.year for r in dated)
    cumulative, total = [], 0
    for year in years:
        total += per_year[year]
        cumulative.append(total)
    weights = [n - i for i in range(n)]
    targets = [len(dated) * sum(weights[:k + 1]) / sum(weights) for k in range(n - 1)]
    # Cut after the year whose cumulative count is nearest each target, keeping the cuts strictly increasing
    # and leaving enough years for the centres after it.
    cuts: list[int] = []
    for k, target in enumerate(targets):
        low = cuts[-1] + 1 if cuts else 0
        high = len(years) - (n - 1 - k) - 1
        if low > high:
            cuts = []
            break
        cuts.append(min(range(low, high + 1), key=lambda i: abs(cumulative[i] - target)))
    bands: dict[str, list[Record]] = {centre: [] for centre in ids}
    if len(cuts) == n - 1:
        bounds = [years[i] for i in cuts]
        for record in dated:
            bands[ids[sum(record.year > bound for bound in bounds)]].append(record)
    else:  # fewer distinct years than centres: contiguous slices of the year-sorted records instead
        for index, record in enumerate(dated):
            bands[ids[min(n - 1, index * n // max(1, len(dated)))]].append(record)
    for record in undated:
        bands[ids[int(hashlib.sha256(record.id.encode()).hexdigest(), 16) % n]].append(record)
    empty = [centre for centre, band in bands.items() if not band]
    if empty:
        raise ValueError(f"{empty[0]} would hold no records: too few records or years for {n} centres")
    return bands


# Check tags and other headings that say nothing about a document's topic: organisms (B01: Humans, Animals),
# persons (M01: Adult, Female ...), places (Z01), and the publication's own characteristics (V).
_NOT_TOPICS = ("B01", "M01", "Z01", "V")


def load_mesh_tree_numbers(path: str | Path) -> dict[str, list[str]]:
    """Descriptor name -> its tree numbers, from a ``mesh_id, mesh_name, mesh_tree_number`` TSV (shared ``mesh``)."""
    numbers: dict[str, list[str]] = {}
    with open(path, newline="", encoding="utf-8") as fh:
        for row in csv.DictReader(fh, delimiter="\t"):
            numbers.setdefault(row["mesh_name"], []).append(row["mesh_tree_number"])
    return numbers


def record_branches(records: Sequence[Record], tree_numbers: dict[str, list[str]]) -> dict[str, str | None]:
    """Record id -> its MeSH tree branch ("C04"), or None when none of its headings is a known topic."""
    branches: dict[str, str | None] = {}
    for record in records:
        counts = Counter(number[:3] for name in record.mesh for number in tree_numbers.get(name, ())
                         if not number.startswith(_NOT_TOPICS))
        diseases = {branch: count for branch, count in counts.items() if branch.startswith("C")}
        pool = diseases or counts
        # most headings first; ties by branch name, so the choice never depends on the order of headings
        branches[record.id] = min(pool, key=lambda branch: (-pool[branch], branch)) if pool else None
    return branches


def partition_by_mesh(records: Sequence[Record], n: int, branches: dict[str, str | None]) -> dict[str, list[Record]]:
    """Record -> centre by whole MeSH branches (``record_branches``), unequal shares; every centre gets a record."""
    if n < 1:
        raise ValueError("at least one centre")
    ids = centre_ids(n)
    by_branch: dict[str, list[Record]] = {}
    unknown = []
    for record in records:
        branch = branches.get(record.id)
        (by_branch.setdefault(branch, []) if branch else unknown).append(record)
    if len(by_branch) < n:
        raise ValueError(f"{len(by_branch)} MeSH branches cannot be split into {n} centres")
    total = sum(len(band) for band in by_branch.values())
    weights = [n - i for i in range(n)]
    targets = [total * w / sum(weights) for w in weights]
    bands: dict[str, list[Record]] = {centre: [] for centre in ids}
    order = sorted(by_branch, key=lambda b: (-len(by_branch[b]), b))  # largest first; ties by name
    for k, branch in enumerate(order):
        empty = [i for i in range(n) if not bands[ids[i]]]
        # Once only as many branches are left as centres are empty, they go to the empty centres.
        candidates = empty if len(order) - k <= len(empty) else range(n)
        target = max(candidates, key=lambda i: (targets[i] - len(bands[ids[i]]), -i))  # furthest below its share
        bands[ids[target]].extend(by_branch[branch])
    for record in unknown:
        bands[ids[int(hashlib.sha256(record.id.encode()).hexdigest(), 16) % n]].append(record)
    return bands


def describe(bands: dict[str, list[Record]], branches: dict[str, str | None] | None = None) -> list[dict]:
    """Per centre: records, years, sources, PubMedQA labels and, given ``branches``, MeSH branches (counts only)."""
    rows = []
    for centre, records in bands.items():
        years = [r.year for r in records if r.year]
        row = {"centre": centre, "records": len(records),
               "years": [min(years), max(years)] if years else None,
               "undated": sum(1 for r in records if not r.year),
               "sources": dict(sorted(Counter(r.source for r in records).items())),
               "labels": dict(sorted(Counter(r.label for r in records if r.label).items()))}
        if branches is not None:
            row["mesh_branches"] = dict(Counter(branches.get(r.id) or "none" for r in records).most_common())
        rows.append(row)
    return rows
