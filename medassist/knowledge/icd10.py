"""ICD-10-CM 2026: every ICD lookup of the project goes through this module.

Source: the ``simple-icd-10-cm`` package (pinned in requirements.txt), which ships the CMS code
tables (codes, descriptions, chapters, inclusion terms).  It is the only source: the ``ICD10CM:``
concepts that ``manage.py knowledge_import icd10cm`` writes are a copy of the same package tables
(read through :func:`icd10cm_codes`), so reading the package directly gives the same codes and
descriptions without a database, before any import, and inside the Django-free ranker.  No other
module imports the package.

:func:`icd10cm_matches` maps a disease name to codes: exact normalised name first (token set equal
after removing "unspecified", "other", ... and inverting MeSH comma forms), then token overlap
(Jaccard over the description without bracketed asides).  Every non-optional word of the name must
occur (a light suffix stemmer lets "Mediastinal" meet "mediastinum"; "disease", "disorder",
"syndrome" are optional), so "Vascular Neoplasms" gets nothing rather than "vascular dementia";
injury/external-cause/Z codes and codes about a circumstance ("postprocedural", "sequelae",
"newborn", ...) are skipped unless the name asks for them.  Ties prefer the general wording (B54
"Unspecified malaria" over B53 "Other specified malaria").  The index is built once per process
(~2.5 s); matches are cached per name; empty when the package is not installed.

Public interface::

    icd10cm_matches(name, limit=3) -> [{"code", "description", "match": "exact"|"tokens", "similarity"}]
    icd10cm_codes() -> iterator of {"code", "description", "chapter", "inclusion_terms"}
"""
from __future__ import annotations

import re
import threading
from collections import defaultdict
from collections.abc import Iterator
from functools import lru_cache

from medassist.knowledge.findings import invert_mesh_name

__all__ = ["icd10cm_matches", "icd10cm_codes", "icd10cm_description"]

_ICD_STOP = frozenset("of the and or in with without to by on for at as a an unspecified other specified "
                      "site sites nos".split())
_icd_lock = threading.Lock()
_icd_index: tuple[dict[str, set[str]], dict[str, frozenset[str]], dict[str, str]] | None = None


# A light suffix stemmer so that MeSH adjectives meet ICD nouns ("Mediastinal" ~ "mediastinum",
# "Prostatic" ~ "prostate", "Uterine" ~ "uterus").  No "-itis" / "-ion": "appendiceal" must not
# meet "appendicitis", nor "conduct" "conduction".
_SUFFIXES = ("ative", "ive", "ical", "ian", "ine", "eal", "ic", "al", "ar", "ary", "um", "us", "ia", "es", "s",
             "y", "e", "a")
# Words a name may lack and still be the same disease ("Migraine Disorders" = "Migraine").
_OPTIONAL = frozenset("disease disorder syndrome condition".split())


def _stem(word: str) -> str:
    for suffix in _SUFFIXES:
        if word.endswith(suffix) and len(word) - len(suffix) >= 4:
            return word[: -len(suffix)]
    return word


def _icd_tokens(text: str) -> frozenset[str]:
    text = text.lower().split(" without ")[0]  # "... without heart failure" is not about heart failure
    text = re.sub(r"\bnon-?\s?[a-z]+", " ", text)  # "non-ischemic" is not about ischemia
    return frozenset(_stem(w) for w in re.findall(r"[a-z0-9]+", text) if w not in _ICD_STOP)


def _icd_main_tokens(text: str) -> frozenset[str]:
    """Without bracketed asides: "Panic disorder [episodic paroxysmal anxiety]" is "panic disorder"."""
    return _icd_tokens(re.sub(r"\([^)]*\)|\[[^\]]*\]", " ", text))


_OPTIONAL_STEMS = frozenset(_stem(w) for w in _OPTIONAL)
# A code about a circumstance of the disease, not the disease, unless the name asks for it.
_CIRCUMSTANCE_STEMS = frozenset(_stem(w) for w in (
    "postprocedural sequelae history newborn perinatal congenital pregnancy puerperium childbirth "
    "screening encounter family personal complicating infant mother").split())


def _package():
    """The ``simple_icd_10_cm`` module (~1.7 s on first import: it parses the packaged XML once per process)."""
    import simple_icd_10_cm

    return simple_icd_10_cm


def icd10cm_codes() -> Iterator[dict]:
    """Every ICD-10-CM category and code (no chapters, no blocks) in the package's order, dotted as
    clinicians write them ("I21.9"): ``{"code", "description", "chapter", "inclusion_terms"}``, the
    chapter as its description ("Diseases of the circulatory system (I00-I99)").  What
    ``knowledge_import icd10cm`` copies into the concept table.  Raises ImportError without the package.
    """
    cm = _package()
    for code in cm.get_all_codes(True):
        if cm.is_chapter_or_block(code):
            continue
        yield {"code": code, "description": cm.get_description(code),
               "chapter": cm.get_description(cm.get_ancestors(code)[-1]),
               "inclusion_terms": list(cm.get_inclusion_term(code))}


def _icd_load():
    global _icd_index
    with _icd_lock:
        if _icd_index is not None:
            return _icd_index
        try:
            cm = _package()
        except ImportError:
            _icd_index = ({}, {}, {})
            return _icd_index
        postings: dict[str, set[str]] = defaultdict(set)
        tokens: dict[str, tuple[frozenset[str], frozenset[str]]] = {}
        descriptions: dict[str, str] = {}
        for code in cm.get_all_codes(True):
            # no chapters/blocks; no injury (S, T), external-cause (V-Y) or health-status (Z) codes
            if cm.is_chapter_or_block(code) or code[0] in "STVWXYZ":
                continue
            desc = cm.get_description(code)
            toks = _icd_tokens(desc)
            if not toks:
                continue
            descriptions[code] = desc
            tokens[code] = (toks, _icd_main_tokens(desc))
            for t in toks:
                postings[t].add(code)
        _icd_index = (dict(postings), tokens, descriptions)
        return _icd_index


@lru_cache(maxsize=4096)
def _icd10cm_matches_cached(name: str, limit: int) -> tuple[tuple[str, str, str, float], ...]:
    postings, tokens, descriptions = _icd_load()
    query = _icd_tokens(invert_mesh_name(name))
    if not query or not postings:
        return ()
    required = query - _OPTIONAL_STEMS
    if not required:
        return ()
    # every required word must be there: "Vascular Neoplasms" is no "vascular dementia"
    candidates = set.intersection(*(postings.get(t, set()) for t in required))
    scored = []
    for code in candidates:
        toks, main = tokens[code]
        if (toks & _CIRCUMSTANCE_STEMS) - query:
            continue
        jaccard = len(query & main) / len(query | main)
        exact = main - _OPTIONAL_STEMS == required
        if exact or jaccard >= 0.33:
            # ties: prefer the general ("Unspecified malaria") over "Other ..." residual codes, then
            # the shortest wording ("Rheumatoid arthritis, unspecified" over "... without rheumatoid factor")
            desc = descriptions[code]
            other = desc.lower().startswith("other")
            scored.append((not exact, -jaccard, other, len(desc.split()), len(code), code, jaccard, exact))
    scored.sort()
    return tuple((code, descriptions[code], "exact" if exact else "tokens", round(jaccard, 3))
                 for *_, code, jaccard, exact in scored[:limit])


def icd10cm_matches(name: str, limit: int = 3) -> list[dict]:
    """Best ICD-10-CM 2026 codes for a disease name ("Malaria" -> B54 "Unspecified malaria")."""
    return [{"code": c, "description": d, "match": m, "similarity": s}
            for c, d, m, s in _icd10cm_matches_cached(name, limit)]


@lru_cache(maxsize=8192)
def icd10cm_description(code: str) -> str:
    """The package's description of an ICD-10-CM ``code`` ("J18.9"), "" when unknown or without the package."""
    try:
        cm = _package()
        return cm.get_description(code) if cm.is_valid_item(code) else ""
    except Exception:  # noqa: BLE001 - a malformed code from a crosswalk still names itself
        return ""
