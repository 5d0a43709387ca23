"""The ``diagnosis`` kind: symptoms -> a ranked differential diagnosis with its evidence.

Free text ("45M c/o CP and SOB, denies fever") or coded findings go through abbreviation
expansion and NegEx-style negation (``knowledge.findings``); the ranking is the cosine between the
case and each disease's symptom profile in the HSDN symptom-disease matrix, with denied findings
counting against (``knowledge.diagnosis``). Every diagnosis carries its score, matched, missing and
contradicted findings, ICD-10-CM codes, supporting PMIDs from the corpus and the decision path.
It never comes from free generation; ``explain`` adds a generated rationale, labelled as such.
Runs on the ``interactive`` queue (single cases, latency first).
"""
from __future__ import annotations

import threading
from pathlib import Path

from django.conf import settings

from medassist.registry.models import ModelVersion

from . import Kind, register

ITEM_SCHEMA = {
    "type": "object",
    "anyOf": [{"required": ["symptoms"]}, {"required": ["findings"]}],
    "properties": {
        "symptoms": {"type": "string", "pattern": r"\S", "description": "free text, e.g. 'fever, headache, no rash'"},
        "findings": {"type": "array", "minItems": 1, "maxItems": 100,
                     "items": {"anyOf": [{"type": "string", "pattern": r"\S"}, {"type": "object"}]},
                     "description": "coded findings: names or ids ('MESH:D005334'), or {concept_id, negated}"},
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
    },
}

RESULT_SCHEMA = {"type": "object", "properties": {
    "findings": {"type": "array"}, "unrecognised": {"type": "array"}, "diagnoses": {"type": "array"},
    "knowledge": {"type": "object"}}}

_ranker = None
_lock = threading.Lock()


def knowledge_files() -> dict[str, Path]:
    root = Path(settings.MEDASSIST_KNOWLEDGE_DATA)
    return {"hsdn": root / "hsdn-symptoms-disease" / "symptoms-DO.tsv",
            "symptoms": root / "mesh-2015" / "symptoms.tsv",
            "abbreviations": root / "clinical-abbreviations"}


def get_ranker():
    """One ranker per process (built in ~3 s, then ~1 ms per case)."""
    global _ranker
    if _ranker is None:
        with _lock:
            if _ranker is None:
                from medassist.knowledge.diagnosis import DiagnosisRanker
                from medassist.knowledge.findings import Abbreviations, SymptomVocabulary

                files = knowledge_files()
                missing = [str(p) for p in files.values() if not p.exists()]
                if missing:
                    raise RuntimeError(f"diagnosis knowledge not found: {', '.join(missing)} "
                                       "(set MEDASSIST_KNOWLEDGE_DATA)")
                vocabulary = SymptomVocabulary.from_hsdn_and_mesh(files["hsdn"], files["symptoms"])
                abbreviations = Abbreviations.from_inventories(files["abbreviations"])
                _ranker = DiagnosisRanker.from_hsdn(files["hsdn"], vocabulary=vocabulary, abbreviations=abbreviations)
    return _ranker


def _pmids(disease_id: str, symptom_ids: list[str]) -> list[dict]:
    from medassist.knowledge.selectors import supporting_documents

    docs: dict[str, dict] = {}
    for symptom in symptom_ids[:3]:
        for doc in supporting_documents(a=disease_id, b=symptom, limit=2):
            docs.setdefault(doc["pmid"], doc | {"symptom": symptom})
    return list(docs.values())[:5]


def run(batch: list[dict], params: dict, runtime) -> list[dict]:
    ranker = get_ranker()
    results = []
    for item in batch:
        given = item.get("findings") or [item["symptoms"]]
        findings = ranker.resolve(given)
        diagnoses = ranker.rank(findings, top_k=params["top_k"], age=item.get("age"), sex=item.get("sex"))
        out = []
        for d in diagnoses:
            entry = d.to_dict()
            entry["supporting_documents"] = _pmids(d.concept_id, [m.get("concept_id") for m in d.matched
                                                                  if m.get("concept_id")])
            out.append(entry)
        results.append({
            "findings": [f.to_dict() for f in findings if f.concept_id],
            "unrecognised": [f.text for f in findings if not f.concept_id],
            "diagnoses": out,
            "knowledge": {"source": "HSDN symptom-disease network (Zhou et al. 2014), TF-IDF cosine",
                          "diseases": len(ranker.disease_ids)},
        })
    if params["explain"]:
        from workers.runtime.engines import GenerationSettings

        generator = runtime.engine(ModelVersion.Role.GENERATOR)
        gen = GenerationSettings(max_new_tokens=60, stop=["\n\n"])
        chosen = [r for r in results if r["diagnoses"]]
        prompts = [generator.chat_prompt(
            f"Findings: {', '.join(f['name'] + (' (absent)' if f['negated'] else '') for f in r['findings'])}. "
            f"The knowledge base ranks {r['diagnoses'][0]['name']} first. In two sentences, explain which findings "
            "support it and what should be checked next.") for r in chosen]
        for r, text in zip(chosen, generator.generate(prompts, gen) if prompts else [], strict=True):
            r["generated_rationale"] = {"text": text, "model_version": runtime.version_label("generator"),
                                        "settings": gen.as_dict(), "note": "generated; the ranking does not use it"}
    return results


KIND = register(Kind(
    name="diagnosis",
    description="Ranked differential diagnoses with evidence from symptoms (free text or coded), age and sex.",
    queue="interactive",
    item_schema=ITEM_SCHEMA,
    params_schema=PARAMS_SCHEMA,
    result_schema=RESULT_SCHEMA,
    run=run,
    text_field="symptoms",
    model_roles=(ModelVersion.Role.GENERATOR,),
    roles_for=lambda params: (ModelVersion.Role.GENERATOR,) if params.get("explain") else (),
    load=lambda: get_ranker() if all(p.exists() for p in knowledge_files().values()) else None,
    normalize_item=lambda raw: {"symptoms": raw} if isinstance(raw, str) else raw,
))
