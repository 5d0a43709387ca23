"""The ``literature`` kind: per abstract, MeSH-normalised concepts and an extractive summary.

Concepts come from the disease and drug dictionaries that the vocabulary packages ship (see
``medassist.knowledge.concepts``); the summary picks the abstract's own sentences and reports
each one's score, so every output points at its evidence in the text. Model-based outputs
(embeddings, generated summaries, question answering) are added by the model runtime.
"""
from __future__ import annotations

from medassist.knowledge import concepts as concept_finder
from medassist.knowledge.summarize import extractive_summary

from . import Kind, register

ITEM_SCHEMA = {
    "type": "object",
    "title": "Abstract",
    "required": ["text"],
    "properties": {
        "text": {"type": "string", "pattern": r"\S", "description": "the abstract (plain text)"},
        "title": {"type": ["string", "null"]},
        "pmid": {"type": ["string", "integer", "null"]},
        "id": {"type": ["string", "integer", "null"], "description": "your own identifier, echoed in results"},
        "year": {"type": ["integer", "null"]},
        "sections": {"type": "array", "items": {"type": "object"}},
        "mesh": {"type": "array", "items": {"type": "object"}},
    },
}

PARAMS_SCHEMA = {
    "type": "object",
    "additionalProperties": False,
    "properties": {
        "summary_sentences": {"type": "integer", "minimum": 1, "maximum": 10, "default": 3,
                              "description": "sentences in the extractive summary"},
        "concept_types": {"type": "array", "items": {"enum": ["disease", "symptom", "drug"]}, "uniqueItems": True,
                          "default": ["disease", "symptom", "drug"], "description": "which concept types to report"},
    },
}

RESULT_SCHEMA = {
    "type": "object",
    "properties": {
        "concepts": {"type": "array", "items": {"type": "object", "properties": {
            "id": {"type": "string"}, "mesh_id": {"type": "string"}, "name": {"type": "string"},
            "type": {"type": "string"}, "semantic_group": {"type": "string"}, "count": {"type": "integer"},
            "mentions": {"type": "array"}, "source": {"type": "string"}}}},
        "summary": {"type": "object", "properties": {
            "text": {"type": "string"}, "sentences": {"type": "array"}, "method": {"type": "string"}}},
        "model_version": {"type": "string"},
    },
}


def _normalize(raw):
    # A bare string is an abstract with nothing else known about it.
    return {"text": raw} if isinstance(raw, str) else raw


def run(batch: list[dict], params: dict, runtime) -> list[dict]:
    wanted = set(params["concept_types"])
    version = runtime.version_label("concepts")
    results = []
    for item in batch:
        found = [c for c in concept_finder.extract_concepts(item["text"]) if c["type"] in wanted]
        summary = extractive_summary(item["text"], max_sentences=params["summary_sentences"], title=item.get("title"))
        results.append({"concepts": found, "summary": summary, "model_version": version})
    return results


KIND = register(Kind(
    name="literature",
    description="Concepts (MeSH-normalised diseases, symptoms, drugs) and an extractive summary per abstract.",
    queue="batch",
    item_schema=ITEM_SCHEMA,
    params_schema=PARAMS_SCHEMA,
    result_schema=RESULT_SCHEMA,
    run=run,
    model_roles=("concepts",),
    load=concept_finder.load,
    normalize_item=_normalize,
))
