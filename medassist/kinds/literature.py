"""The ``literature`` kind: per abstract, concepts, summaries, an embedding and question answering.

- Concepts come from the disease and drug dictionaries that the vocabulary packages ship (see
  ``medassist.knowledge.concepts``), with exact mention offsets as evidence.  Their MeSH ids are
  corrected against the imported MeSH 2015 concepts by name (the packages' ids are often wrong:
  metformin arrives with its drug class's id), with one query per chunk; each concept says how its
  id was found (``id_source``) and keeps a differing package id as ``package_id``.  Without a MeSH
  import the package ids are reported as they are (``id_source`` "package").
- The extractive summary picks the abstract's own sentences and reports each one's score.
- ``embed`` (default on): the active embedder's vector, for similarity search.
- ``generate_summary`` (opt-in): the active generator's summary; the instruction comes *after*
  the abstract, because placed first this small model copies the abstract back.
- ``question``: a yes/no/maybe answer that rests on what the abstract concludes. Two readings are
  pooled (a weighted product of their label probabilities, ``MEDASSIST_QA_GENERATOR_WEIGHT``):
  the generator's likelihood of each label (never parsed out of free text), and the answer-evidence
  model's reading of the abstract's conclusion sentences (``workers.runtime.answer_evidence``),
  which names the sentences and n-grams it used. An abstract that mentions none of the question's
  concepts and under ``QUESTION_OVERLAP_MIN`` of its words does not address it: its answer is "maybe",
  flagged ``addresses_question: false``. Then a
  short generated rationale for the chosen label, written from the question and the evidence sentences
  alone (``prompts.rationale_prompt``: at most ``RATIONALE_EVIDENCE_MAX_WORDS`` words of them instead of the
  whole abstract), one sentence.
- ``add_to_corpus`` (opt-in): each abstract becomes a knowledge ``Document`` (source "job") linked
  to its concepts (all types, whatever ``concept_types`` reports), and the corpus co-occurrence graph
  that the ``hypothesis`` kind ranks with counts it; see ``medassist.knowledge.services``.  A PMID
  (or, without one, the exact title and text) already in the corpus adds nothing again.  Written
  last, after every model output, so a redelivered or item-by-item retried chunk finds it there.
Every model output names the model version, backend and generation settings that produced it.
"""
from __future__ import annotations

import math

from django.conf import settings

from medassist.common.redaction import redact_param
from medassist.knowledge import concepts as concept_finder
from medassist.knowledge import selectors
from medassist.knowledge.prompts import (
    ANSWER_LABELS,
    ANSWER_SURFACE,
    RATIONALE_EVIDENCE_MAX_WORDS,
    SUMMARY_INSTRUCTION,
    abstract_block,
    question_prompt,
    rationale_prompt,
    summary_prompt,
)
from medassist.knowledge.services import corpus_add_documents, corpus_document_error
from medassist.knowledge.summarize import evidence_input, extractive_summary, question_overlap
from medassist.registry.models import ModelVersion

from . import ItemFailure, Kind, register

# An abstract that names none of the question's concepts is about the question only if it has at least this
# share of the question's words (``summarize.question_overlap``); otherwise it cannot settle it: "maybe".
# Chosen without the answer labels: on the 500 PubMedQA questions, 0.35 calls 4 of the 500 own abstracts
# off-topic and 482 of 500 randomly paired other abstracts (the concept test alone: 17 and 298).
QUESTION_OVERLAP_MIN = 0.35

ITEM_SCHEMA = {
    "type": "object",
    "title": "Abstract",
    "required": ["text"],
    "properties": {
        "text": {"type": "string", "pattern": r"\S", "description": "the abstract (plain text)"},
        # Bounds (issue 13): every field has one; medassist.jobs.services also bounds any string, list,
        # nesting level and extra key of an item.
        "title": {"type": ["string", "null"], "maxLength": 2000},
        "pmid": {"type": ["string", "integer", "null"], "maxLength": 40},
        "id": {"type": ["string", "integer", "null"], "maxLength": 200,
               "description": "your own identifier, echoed in results"},
        "year": {"type": ["integer", "null"]},
        "sections": {"type": "array", "maxItems": 50, "items": {"type": "object", "maxProperties": 10, "properties": {
            "label": {"type": ["string", "null"], "maxLength": 200},
            "category": {"type": ["string", "null"], "maxLength": 100}}}},
        "mesh": {"type": "array", "maxItems": 200, "items": {"type": "object", "maxProperties": 10, "properties": {
            "ui": {"type": ["string", "null"], "maxLength": 40},
            "name": {"type": ["string", "null"], "maxLength": 500}}}},
        "question": {"type": ["string", "null"], "maxLength": 500,
                     "description": "a yes/no/maybe question about this abstract (overrides params.question)"},
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
        "embed": {"type": "boolean", "default": True, "description": "store the abstract's embedding vector"},
        "generate_summary": {"type": "boolean", "default": False,
                             "description": "also write a generated summary with the language model (slower)"},
        "question": {"type": ["string", "null"], "maxLength": 500, "pattern": r"\S", "default": None,
                     "description": "answer this yes/no/maybe question about every abstract (an item's own "
                                    "question comes first)"},
        "rationale": {"type": "boolean", "default": True,
                      "description": "explain each answer in one generated sentence; false: label, "
                                     "probabilities and evidence only (much faster)"},
        "max_new_tokens": {"type": "integer", "minimum": 8, "maximum": 256, "default": 80,
                           "description": "length limit of generated text (summary, rationale)"},
        "add_to_corpus": {"type": "boolean", "default": False,
                          "description": "store each abstract in the knowledge corpus (a document with its concept "
                                         "links, counted in the co-occurrence graph that hypothesis jobs use); "
                                         "a PMID already there is not added or counted again"},
        # Access control (issue 13, shared corpus): who sees the documents add_to_corpus stores.
        "corpus_visibility": {"enum": ["private", "shared"], "default": "private",
                              "description": "with add_to_corpus: private (only you see the documents in any "
                                             "job's results) or shared (every user; needs the "
                                             "knowledge.share_document permission)"},
        "redact": redact_param(default=False),  # privacy (issue 13)
    },
}


RESULT_SCHEMA = {
    "type": "object",
    "properties": {
        "concepts": {"type": "array", "items": {"type": "object", "properties": {
            "id": {"type": ["string", "null"],
                   "description": '"MESH:<mesh_id>", else "DRUGBANK:<id>"; null where no id can be trusted'},
            "mesh_id": {"type": ["string", "null"], "description": "NLM MeSH descriptor id (see id_source)"},
            "id_source": {"type": "string", "description": (
                '"mesh-2015 by name": the imported MeSH 2015 descriptor of this name ("<importer> by name", '
                'e.g. "medline-heading by name": a MeSH concept another importer created); "package": the '
                "vocabulary package's id, nothing imported contradicts it (or MeSH is not imported); "
                '"package, mesh id rejected": the package\'s MeSH id is another descriptor, so none is given')},
            "package_id": {"type": "string", "description": "the package's MeSH id, where it differs from mesh_id"},
            "drugbank_id": {"type": "string"},
            "name": {"type": "string"},
            "type": {"type": "string"}, "semantic_group": {"type": "string"}, "count": {"type": "integer"},
            "mentions": {"type": "array"}, "source": {"type": "string"}}}},
        "summary": {"type": "object", "properties": {
            "text": {"type": "string"}, "sentences": {"type": "array"}, "method": {"type": "string"}}},
        "model_version": {"type": "string", "description": "the concept dictionaries' version"},
        "embedding": {"type": "object", "properties": {
            "vector": {"type": "array", "items": {"type": "number"}}, "model_version": {"type": "string"}}},
        "generated_summary": {"type": "object", "properties": {
            "text": {"type": "string"}, "model_version": {"type": "string"}, "settings": {"type": "object"}}},
        "answer": {"type": "object", "properties": {
            "label": {"enum": list(ANSWER_LABELS)},
            "probabilities": {"type": "object", "description": "pooled: the label's probability after both readings"},
            "generator_probabilities": {"type": "object", "description": "the generator's likelihood of each label "
                                                                         "(only when it is pooled in)"},
            "evidence": {"type": "object", "description": "what the conclusion says", "properties": {
                "conclusion": {"type": "object", "properties": {
                    "text": {"type": "string"}, "spans": {"type": "array"},
                    "found_by": {"enum": ["section", "cue phrase", "last sentences"]}}},
                "probabilities": {"type": "object"},
                "terms": {"type": "array", "description": "the n-grams that pushed most towards the evidence's label"},
                "addresses_question": {"type": "boolean"},
                "question_concepts": {"type": "object", "properties": {
                    "found": {"type": "array"}, "missing": {"type": "array"},
                    "word_overlap": {"type": "number", "description": "share of the question's words in the abstract"}}},
                "model_version": {"type": "string"}}},
            "rationale": {"type": "string", "description": "generated; absent with rationale: false"},
            "rationale_model_version": {"type": "string"},
            "rationale_input": {"type": "string", "description": "what the generator read to write the rationale"},
            "model_version": {"type": "string", "description": "the answer-evidence model the label rests on"},
            "method": {"type": "string"}}},
        "corpus": {"type": "object", "description": "with add_to_corpus: the item's knowledge document", "properties": {
            "document_id": {"type": "integer"},
            "added": {"type": "boolean", "description": "false: the corpus held this PMID (or text) already; "
                                                        "nothing was counted again"},
            "concepts_linked": {"type": "integer", "description": "concepts the document is linked to"}}},
    },
}


def _normalize(raw):
    # A bare string is an abstract with nothing else known about it.
    return {"text": raw} if isinstance(raw, str) else raw


def _question_for(item: dict, params: dict) -> str | None:
    """The question an abstract is asked: its own, else the job's, else none."""
    own = item.get("question")
    if isinstance(own, str) and own.strip():
        return own.strip()
    return params["question"].strip() if params.get("question") else None


def _generator_weight() -> float:
    return float(settings.MEDASSIST_QA_GENERATOR_WEIGHT)


def _answers_need_generator(params: dict) -> bool:
    """The generator reads for an answer only to write its rationale, or when its label likelihood is
    pooled in (MEDASSIST_QA_GENERATOR_WEIGHT > 0); labels alone rest on the answer-evidence model."""
    return bool(params.get("rationale", True)) or _generator_weight() > 0


def _answer_roles(params: dict) -> tuple[str, ...]:
    if _answers_need_generator(params):
        return (ModelVersion.Role.ANSWER_EVIDENCE, ModelVersion.Role.GENERATOR)
    return (ModelVersion.Role.ANSWER_EVIDENCE,)


def item_roles(params: dict, items: list[dict]) -> tuple[str, ...]:
    """Items with their own question need the answering models even when the job's params ask none."""
    if any(isinstance(item.get("question"), str) and item["question"].strip() for item in items):
        return _answer_roles(params)
    return ()


def roles_for(params: dict) -> tuple[str, ...]:
    roles = [ModelVersion.Role.CONCEPTS]
    if params.get("embed"):
        roles.append(ModelVersion.Role.EMBEDDER)
    if params.get("question"):
        roles.extend(_answer_roles(params))
    if params.get("generate_summary") and ModelVersion.Role.GENERATOR not in roles:
        roles.append(ModelVersion.Role.GENERATOR)
    return tuple(roles)


def run(batch: list[dict], params: dict, runtime) -> list[dict]:
    wanted = set(params["concept_types"])
    version = runtime.version_label("concepts")
    extracted = concept_finder.extract_texts([item["text"] for item in batch], version=version)  # the version's recipe
    # One query for the whole chunk: the imported concepts these names and package ids resolve to.
    resolver = selectors.concept_resolver_for(found=(c for found in extracted for c in found))
    results: list = []
    for item, found in zip(batch, extracted, strict=True):
        concepts = [selectors.concept_with_resolved_id(found=c, resolver=resolver) for c in found if c["type"] in wanted]
        summary = extractive_summary(item["text"], max_sentences=params["summary_sentences"], title=item.get("title"))
        results.append({"concepts": concepts, "summary": summary, "model_version": version})

    if params["embed"]:
        role = ModelVersion.Role.EMBEDDER
        vectors = runtime.engine(role).encode([abstract_block(item) for item in batch])
        for result, vector in zip(results, vectors, strict=True):
            result["embedding"] = {"vector": [round(float(x), 5) for x in vector], "dim": len(vector),
                                   "model_version": runtime.version_label(role)}

    if params["generate_summary"]:
        from workers.runtime.engines import GenerationSettings

        generator = runtime.engine(ModelVersion.Role.GENERATOR)
        label = runtime.version_label(ModelVersion.Role.GENERATOR)
        gen_settings = GenerationSettings(max_new_tokens=params["max_new_tokens"], stop=["\n\n"])
        prompts = [generator.chat_prompt(summary_prompt(item)) for item in batch]
        for result, text in zip(results, generator.generate(prompts, gen_settings), strict=True):
            result["generated_summary"] = {"text": text, "model_version": label,
                                           "settings": gen_settings.as_dict(), "instruction": SUMMARY_INSTRUCTION}
    asked = [_question_for(item, params) for item in batch]
    if any(asked):
        chosen = [i for i, question in enumerate(asked) if question]
        generator = runtime.engine(ModelVersion.Role.GENERATOR) if _answers_need_generator(params) else None
        _answer([batch[i] for i in chosen], [asked[i] for i in chosen], [extracted[i] for i in chosen], params,
                runtime, generator, [results[i] for i in chosen])

    if params["add_to_corpus"]:
        _add_to_corpus(batch, extracted, resolver, results, params.get("corpus_visibility", "private"))
    return results


def pool_label_probabilities(generator_p: dict | None, evidence_p: dict | None, generator_weight: float) -> dict:
    """Weighted product of the two readings' label probabilities, renormalised (log-linear pooling)."""
    if evidence_p is None:
        return dict(generator_p)
    if generator_p is None or generator_weight == 0:
        return dict(evidence_p)
    scores = {label: math.exp(generator_weight * math.log(max(generator_p[label], 1e-12))
                              + math.log(max(evidence_p[label], 1e-12))) for label in ANSWER_LABELS}
    total = sum(scores.values())
    return {label: value / total for label, value in scores.items()}


def _question_coverage(question_concepts: list[dict], abstract_concepts: list[dict]) -> dict:
    """Which of the question's concepts the abstract mentions (by concept id, else by name)."""
    def key(concept):
        return concept.get("id") or concept["name"].lower()

    present = {key(c) for c in abstract_concepts}
    found = [c["name"] for c in question_concepts if key(c) in present]
    missing = [c["name"] for c in question_concepts if key(c) not in present]
    return {"found": found, "missing": missing}


def _answer(batch: list[dict], asked: list[str], extracted: list[list[dict]], params: dict, runtime, generator,
            results: list) -> None:
    """The ``answer`` of every item (``asked``: each item's question): pooled label probabilities, the
    evidence used and, unless ``rationale`` is false, a generated one-sentence rationale."""
    from workers.runtime.engines import GenerationSettings

    weight = _generator_weight()
    generator_p: list = [None] * len(batch)
    if weight > 0:  # the generator's label likelihood is pooled in: one prefill of each abstract
        scored = generator.score_options([generator.chat_prompt(question_prompt(item, question))
                                          for item, question in zip(batch, asked, strict=True)],
                                         [ANSWER_SURFACE[label] for label in ANSWER_LABELS])
        generator_p = [{label: p[ANSWER_SURFACE[label]] for label in ANSWER_LABELS} for p in scored]

    reader = runtime.engine(ModelVersion.Role.ANSWER_EVIDENCE)
    reader_label = runtime.version_label(ModelVersion.Role.ANSWER_EVIDENCE)
    concepts_of_question: dict[str, list[dict]] = {}  # most jobs ask one question of every item
    answers, pooled, evidence, evidence_text = [], [], [], []
    for item, question, found, gen_p in zip(batch, asked, extracted, generator_p, strict=True):
        if question not in concepts_of_question:
            concepts_of_question[question] = concept_finder.extract_concepts(
                question, version=runtime.version_label(ModelVersion.Role.CONCEPTS))
        question_concepts = concepts_of_question[question]
        read = evidence_input(item["text"])
        spans, found_by, conclusion = read["spans"], read["found_by"], read["conclusion"]
        reading = reader.predict(conclusion, question=question, context=read["context"])
        coverage = _question_coverage(question_concepts, found)
        # About the question: one of its concepts is in the abstract, or most of its words are (a question the
        # extractor finds no concept in is judged by its words alone).
        coverage["word_overlap"] = round(question_overlap(question, item["text"]), 3)
        addresses = bool(coverage["found"]) or coverage["word_overlap"] >= QUESTION_OVERLAP_MIN
        probabilities = pool_label_probabilities(gen_p, reading["probabilities"], weight)
        # An abstract about something else cannot settle the question, whatever either reading says.
        answers.append(max(probabilities, key=probabilities.get) if addresses else "maybe")
        evidence_text.append(conclusion)
        pooled.append(probabilities)
        evidence.append({
            "conclusion": {"text": conclusion, "spans": [{"start": s, "end": e} for s, e in spans],
                           "found_by": found_by},
            "label": reading["label"], "probabilities": {k: round(v, 4) for k, v in reading["probabilities"].items()},
            "terms": reading["terms"], "addresses_question": addresses, "question_concepts": coverage,
            "model_version": reader_label})

    # One sentence, as the prompt asks: the generator is stopped once it starts a second one. A bare label
    # ("No.", "The answer is no.") is not that sentence, and the reply cannot end on it: on 100 held-out
    # questions 16% of rationales were a bare label before, none after (`evaluate answers --rationales`).
    rationale_settings = GenerationSettings(max_new_tokens=min(48, params["max_new_tokens"]), stop=["\n\n"],
                                            sentences=1, sentence_min_words=5, min_new_tokens=4)
    rationales: list = [None] * len(batch)
    if params.get("rationale", True) and generator is not None:
        # The chosen label is the answer; the generator is asked why, reading the question and the evidence
        # sentences only (a short prompt: the whole abstract was most of the cost of every rationale).
        rationales = generator.generate(
            [generator.chat_prompt(rationale_prompt(question, text, answer))
             for question, text, answer in zip(asked, evidence_text, answers, strict=True)], rationale_settings)
    for result, question, answer, probs, gen_p, used, rationale in zip(
            results, asked, answers, pooled, generator_p, evidence, rationales, strict=True):
        pooled_in = gen_p is not None
        result["answer"] = {
            "question": question, "label": answer,
            "probabilities": {k: round(v, 4) for k, v in probs.items()},
            "evidence": used, "model_version": reader_label,
            "method": ((f"label likelihood of the generator (weight {weight:g}) pooled with the answer-evidence "
                        "model's reading of the conclusion (weight 1)" if pooled_in else
                        "the answer-evidence model's reading of the conclusion, the results' significance cues and the "
                        "question") +
                       "; \"maybe\" when the abstract mentions none of the question's concepts and few of its "
                       "words; never parsed from generated text"),
        }
        if pooled_in:
            result["answer"]["generator_probabilities"] = {k: round(v, 4) for k, v in gen_p.items()}
        if rationale is not None:
            result["answer"].update(rationale=rationale, rationale_settings=rationale_settings.as_dict(),
                                    rationale_input=f"the question and at most {RATIONALE_EVIDENCE_MAX_WORDS} words of whole "
                                                    "sentences of the evidence conclusion (evidence.conclusion)",
                                    rationale_model_version=runtime.version_label(ModelVersion.Role.GENERATOR))


def _add_to_corpus(batch: list[dict], extracted: list[list[dict]], resolver, results: list,
                   visibility: str = "private") -> None:
    """Store the chunk's abstracts in the corpus (one transaction), owned by the job's owner (the current
    reader, ``knowledge.visibility``) with the job's visibility; an item the corpus cannot take fails
    alone, with the reason."""
    storable = []
    for index, item in enumerate(batch):
        if problem := corpus_document_error(item):
            results[index] = ItemFailure(f"add_to_corpus: {problem}")
        else:
            storable.append(index)
    if not storable:
        return
    added = corpus_add_documents(items=[batch[i] for i in storable], concepts_per_item=[extracted[i] for i in storable],
                                 resolver=resolver, visibility=visibility)
    for index, document in zip(storable, added.documents, strict=True):
        results[index]["corpus"] = document


KIND = register(Kind(
    name="literature",
    description="Concepts (MeSH-normalised diseases, symptoms, drugs) and an extractive summary per abstract.",
    queue="batch",
    item_schema=ITEM_SCHEMA,
    params_schema=PARAMS_SCHEMA,
    result_schema=RESULT_SCHEMA,
    run=run,
    model_roles=(ModelVersion.Role.CONCEPTS, ModelVersion.Role.EMBEDDER, ModelVersion.Role.GENERATOR,
                 ModelVersion.Role.ANSWER_EVIDENCE),
    roles_for=roles_for,
    item_roles=item_roles,
    # Answers rest on the answer-evidence model's reading, generated summaries on the generator;
    # otherwise the concepts are the result (the embedding is a by-product).
    main_roles=(ModelVersion.Role.ANSWER_EVIDENCE, ModelVersion.Role.GENERATOR, ModelVersion.Role.CONCEPTS,
                ModelVersion.Role.EMBEDDER),
    # Language-model work is slow per item: model-sized chunks then (labels alone are fast).
    chunk_size_for=lambda params: (settings.MEDASSIST_MODEL_CHUNK_SIZE if params.get("generate_summary") or (
        params.get("question") and _answers_need_generator(params)) else None),
    load=concept_finder.load,
    redact_fields=("text", "title", "question"),
    normalize_item=_normalize,
))
