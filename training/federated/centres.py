"""Centres with realistic, unequal, non-IID data: records split into publication-year bands.

A research network's hospitals do not hold identically distributed data: one has an older archive, one
mostly recent literature, one little of either. ``partition_by_year`` reproduces that on the shared data:
dated records are sorted by year and cut at year boundaries (a year is never split between centres) as
close as possible to shares of n : n-1 : ... : 1 (3 centres: 1/2, 1/3, 1/6), so the centres differ in
size, era, vocabulary and label mix. Undated records go to a centre chosen by a hash of their id.

``describe`` reports the partition (sizes, years, sources, labels): counts only, never text.
"""
from __future__ import annotations

import hashlib
from collections import Counter
from collections.abc import Sequence

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


def describe(bands: dict[str, list[Record]]) -> list[dict]:
    """Per centre: records, years, sources and PubMedQA labels (counts only)."""
    rows = []
    for centre, records in bands.items():
        years = [r.year for r in records if r.year]
        rows.append({"centre": centre, "records": len(records),
                     "years": [min(years), max(years)] if years else None,
                     "undated": sum(1 for r in records if not r.year),
                     "sources": dict(sorted(Counter(r.source for r in records).items())),
                     "labels": dict(sorted(Counter(r.label for r in records if r.label).items()))})
    return rows
