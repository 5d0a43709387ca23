"""Training data for LoRA fine-tuning: source documents -> chat examples -> token ids with a loss mask.

Data flow (each step a plain function; the trainer calls them in this order):

1. ``read_records(source)`` -> ``[Record]``: one abstract each, from a PubMedQA JSON file, MEDLINE/PubMed
   XML (through the job upload parser, so training reads files exactly as jobs do), JSON Lines, or the
   knowledge app's ``Document`` table. A labelled CONCLUSION(S) section is split off into ``conclusion``.
2. ``build_examples(records)`` -> ``[Example]``: chat turns built from the literature kind's own prompt
   constants and ``_abstract_block``, so the model is trained on exactly the prompts it is served.
   Optional medical synonym augmentation (``Augmentation``) is applied to training prompts only.
3. ``pubmedqa_folds(records)``: label-stratified cross-validation folds of record ids (``Example.group``).
4. ``tokenize_examples(examples, tokenizer_dir)`` -> ``[TokenizedExample]``: rendered with the tokenizer's
   chat template as ``Generator.chat_prompt`` renders prompts; labels on assistant replies only. With
   ``workers > 1`` the work is sharded over a Ray ``ActorPool``; the output is identical either way.
5. ``dataset_hash(examples)``: a fingerprint stored with the trained model version.

Only steps 1 (``corpus``, the shared-data shortcuts) and 2 need Django set up; tokenizing does not, so
Ray actors import this module without it.
"""
from __future__ import annotations

import bisect
import functools
import gzip
import hashlib
import json
import logging
import math
import os
import random
import re
from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

__all__ = [
    "Record",
    "Example",
    "TokenizedExample",
    "Augmentation",
    "TASKS",
    "read_records",
    "build_examples",
    "pubmedqa_folds",
    "dataset_hash",
    "tokenize_examples",
    "diagnosis_examples",
]

logger = logging.getLogger(__name__)

TASKS = ("qa", "summary")
LABELS = ("yes", "no", "maybe")
IGNORE_INDEX = -100  # labels value torch's cross-entropy skips
RATIONALE_MAX_WORDS = 60  # the rationale reply: the conclusion's first sentence or two, up to about this long
_SOURCE_KINDS = ("pubmedqa", "medline", "jsonl")
# "CONCLUSIONS: ..." lines in text the parser flattened (corpus documents, JSONL): the parser writes
# labelled sections as "LABEL: body" lines.
_LABELLED_LINE = re.compile(r"^([A-Z][A-Z0-9 ,/&()'-]{0,79}):\s+(.*)$")
_SENTENCE_END = re.compile(r"(?<=[.!?])\s+(?=[A-Z0-9(\"'])")


@dataclass(frozen=True)
class Record:
    """One source document."""

    id: str  # pmid when known, else a stable id
    title: str
    text: str  # abstract body WITHOUT the conclusion section
    conclusion: str  # the conclusions section / PubMedQA long answer ("" if none)
    question: str | None = None  # PubMedQA question
    label: str | None = None  # yes/no/maybe (PubMedQA final_decision)
    year: int | None = None
    source: str = ""  # "pubmedqa" | "medline" | "jsonl" | "corpus"
    mesh: tuple[str, ...] = ()  # MeSH descriptor names (PubMedQA MESHES, MEDLINE MeshHeadingList), when known


@dataclass(frozen=True)
class Example:
    id: str  # "<record id>:<task>" (stable)
    task: str  # "qa" | "rationale" | "summary" | "diagnosis"
    turns: tuple[tuple[str, str], ...]  # (user message, assistant reply) pairs; the loss covers assistant replies only
    label: str | None = None  # qa: yes/no/maybe
    group: str = ""  # record id: folds split on it, so no record is in both training and evaluation


@dataclass
class TokenizedExample:
    id: str
    input_ids: list[int]
    labels: list[int]  # IGNORE_INDEX where no loss (system/user/template tokens); the collator pads
    task: str
    label: str | None


# --- 1. reading sources ----------------------------------------------------------------------------------

def read_records(source: str | Path) -> list[Record]:
    """Records from one source, in file order.

    ``source``: "pubmedqa" / "medline" (the shared data set, from settings), "corpus" (the ``Document``
    table), "pubmedqa:<path>", "medline:<path>", "jsonl:<path>", or a path whose ending names the format:
    ``.json`` PubMedQA, ``.xml``/``.xml.gz`` MEDLINE or PubMed XML, ``.jsonl``/``.ndjson`` (optionally .gz).
    """
    spec = str(source)
    if spec == "corpus":
        return _read_corpus()
    kind, _, rest = spec.partition(":")
    if kind in _SOURCE_KINDS and rest:
        path = Path(rest)
    elif spec in ("pubmedqa", "medline"):
        kind, path = spec, _shared_data_path(spec)
    else:
        path = Path(spec)
        kind = _kind_for(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: training data file not found")
    readers = {"pubmedqa": _read_pubmedqa, "medline": _read_medline, "jsonl": _read_jsonl}
    return readers[kind](path)


def _kind_for(path: Path) -> str:
    name = path.name.lower().removesuffix(".gz")
    if name.endswith(".json"):
        return "pubmedqa"
    if name.endswith(".xml"):
        return "medline"
    if name.endswith((".jsonl", ".ndjson")):
        return "jsonl"
    raise ValueError(f"{path}: cannot tell the format from the name; expected .json (PubMedQA), .xml[.gz] "
                     "(MEDLINE/PubMed) or .jsonl[.gz], or prefix it with pubmedqa:, medline: or jsonl:")


def _shared_data_path(name: str) -> Path:
    from medassist.common.data_paths import shared_path

    return shared_path(name)


def _label(value, where: str) -> str | None:
    if value is None or value == "":
        return None
    label = str(value).strip().lower()
    if label not in LABELS:
        raise ValueError(f"{where}: label {value!r} is not yes, no or maybe")
    return label


def _year(value) -> int | None:
    text = str(value or "").strip()
    return int(text) if text.isdecimal() else None


def _read_pubmedqa(path: Path) -> list[Record]:
    opener = gzip.open if path.name.endswith(".gz") else open
    with opener(path, "rt", encoding="utf-8") as fh:
        data = json.load(fh)
    if not isinstance(data, dict):
        raise ValueError(f"{path}: expected a PubMedQA JSON object (pmid -> record)")
    records = []
    for pmid, row in data.items():
        # The body is the context sections joined by newlines, as import_pubmedqa stores it; PQA-L has
        # no article title (its question is written from the title), so the title stays empty.
        records.append(Record(
            id=str(pmid), title="", text="\n".join(row.get("CONTEXTS") or []).strip(),
            conclusion=(row.get("LONG_ANSWER") or "").strip(), question=(row.get("QUESTION") or "").strip() or None,
            label=_label(row.get("final_decision"), f"{path} record {pmid}"), year=_year(row.get("YEAR")),
            source="pubmedqa", mesh=tuple(str(name) for name in row.get("MESHES") or ())))
    return records


def _read_medline(path: Path) -> list[Record]:
    from medassist.common.parsers import parse_upload

    # No item cap: a baseline file holds ~30,000 citations, more than one job may.
    parsed = parse_upload(path.read_bytes(), path.name, max_items=10_000_000)
    by_id: dict[str, Record] = {}
    for index, item in enumerate(parsed.items):
        record_id = str(item.get("pmid") or "").strip() or f"{path.name}#{index}"
        if item.get("sections"):
            text, conclusion = _split_sections(item["sections"])
        else:
            text, conclusion = item["text"], ""
        # Update files may list a PMID twice (revised versions): the later one wins, as in import_medline.
        by_id[record_id] = Record(id=record_id, title=item.get("title") or "", text=text, conclusion=conclusion,
                                  year=item.get("year"), source="medline",
                                  mesh=tuple(m["name"] for m in item.get("mesh") or () if m.get("name")))
    return list(by_id.values())


def _is_conclusion(label: str | None, category: str | None = None) -> bool:
    return category == "CONCLUSIONS" or "CONCLUSION" in (label or "").upper()


def _split_sections(sections: list[dict]) -> tuple[str, str]:
    """(body, conclusion) from the parser's sections; the body keeps the parser's "LABEL: body" lines."""
    body = [s for s in sections if not _is_conclusion(s.get("label"), s.get("category"))]
    ends = [s["text"] for s in sections if _is_conclusion(s.get("label"), s.get("category"))]
    if not body or not ends:  # nothing to split off, or nothing would be left
        return "\n".join(f"{s['label']}: {s['text']}" if s.get("label") else s["text"] for s in sections), ""
    return "\n".join(f"{s['label']}: {s['text']}" if s.get("label") else s["text"] for s in body), " ".join(ends)


def _split_flat_text(text: str) -> tuple[str, str]:
    """(body, conclusion) from text whose labelled sections are "LABEL: body" lines (parser output)."""
    body, ends = [], []
    for line in text.split("\n"):
        m = _LABELLED_LINE.match(line)
        (ends.append(m.group(2)) if m and _is_conclusion(m.group(1)) else body.append(line))
    if not ends or not "".join(body).strip():
        return text, ""
    return "\n".join(body).strip(), " ".join(ends)


def _read_jsonl(path: Path) -> list[Record]:
    from medassist.common.parsers import parse_upload

    parsed = parse_upload(path.read_bytes(), path.name, max_items=10_000_000)
    records = []
    for index, item in enumerate(parsed.items, 1):
        where = f"{path} record {index}"
        text = str(item.get("text") or "").strip()
        if not text:
            raise ValueError(f"{where}: text is empty")
        conclusion = str(item.get("conclusion") or "").strip()
        if not conclusion:
            text, conclusion = _split_flat_text(text)
        record_id = str(item.get("pmid") or item.get("id") or "").strip() or f"{path.name}#{index}"
        records.append(Record(id=record_id, title=str(item.get("title") or ""), text=text, conclusion=conclusion,
                              question=str(item.get("question") or "").strip() or None,
                              label=_label(item.get("label"), where), year=_year(item.get("year")), source="jsonl"))
    return records


def _read_corpus() -> list[Record]:
    from medassist.knowledge.models import Document
    from medassist.knowledge.visibility import shared_q

    records = []
    # Shared documents only (issue 13): a model every user is served must not learn a user's private ones.
    for doc in Document.objects.filter(shared_q()).order_by("pk").iterator():
        if not doc.abstract.strip():
            continue
        text, conclusion = _split_flat_text(doc.abstract)
        # import_pubmedqa stores the question as the title (PQA-L has none); put it back where it belongs.
        is_pubmedqa = doc.source == Document.Source.PUBMEDQA
        records.append(Record(id=doc.pmid or f"document-{doc.pk}", title="" if is_pubmedqa else doc.title,
                              text=text, conclusion=conclusion, question=(doc.title or None) if is_pubmedqa else None,
                              year=doc.year, source="corpus"))
    return records


# --- 2. examples -----------------------------------------------------------------------------------------

def build_examples(records: Iterable[Record], *, tasks: Sequence[str] = TASKS, include_conclusion_in_qa: bool = True,
                   augment: Augmentation | None = None, seed: int = 0) -> list[Example]:
    """Chat examples, record by record, in the order of ``tasks``.

    - qa (records with a question and a label): the literature kind's question prompt, answered
      "Yes."/"No."/"Maybe." (the label surface it scores; task "qa"), and, where there is a conclusion, the
      kind's rationale request (``prompts.rationale_prompt``: the question, the label and the evidence
      sentences of the abstract as submitted) answered with the start of the conclusion (task
      "rationale", its own example, as it is served as its own request). ``include_conclusion_in_qa``
      puts the conclusion back into the abstract, as users submit whole abstracts; False is PubMedQA's
      reasoning-required setting.
    - summary (records with a body and a conclusion): the kind's summary prompt over the body without its
      conclusion, answered with the conclusion.
    ``augment`` (training data only) rewrites abstract text with synonyms, from a random stream per
    (seed, record, task), so the result does not depend on record order or on which other tasks are built.
    """
    from medassist.knowledge import prompts  # the served prompts: never copied here
    from medassist.knowledge.summarize import evidence_input

    unknown = [t for t in tasks if t not in TASKS]
    if unknown:
        raise ValueError(f"tasks: {', '.join(unknown)} unknown; choose from {', '.join(TASKS)}")

    def block(record: Record, text: str, task: str) -> str:
        title = record.title
        if augment is not None:
            rng = random.Random(f"{seed}:{augment.seed}:{record.id}:{task}")
            title, text = augment.apply(title, rng), augment.apply(text, rng)
        return prompts.abstract_block({"title": title, "text": text})

    examples = []
    for record in records:
        for task in tasks:
            if task == "qa" and record.question and record.label:
                text = record.text
                if include_conclusion_in_qa and record.conclusion:
                    text = f"{text}\n{record.conclusion}" if text else record.conclusion
                question = record.question.strip()  # literature.run strips the question too
                asked = f"{block(record, text, task)}\n\nQuestion: {question}\n{prompts.QA_INSTRUCTION}"
                examples.append(Example(id=f"{record.id}:qa", task="qa",
                                        turns=((asked, f"{prompts.ANSWER_SURFACE[record.label]}."),),
                                        label=record.label, group=record.id))
                if rationale := _rationale(record.conclusion):
                    # served as its own request over the evidence sentences the answer rests on
                    # (knowledge.summarize.evidence_input, read from the text as submitted)
                    evidence = evidence_input(text)["conclusion"] if text.strip() else ""
                    examples.append(Example(
                        id=f"{record.id}:rationale", task="rationale",
                        turns=((prompts.rationale_prompt(question, evidence, record.label), rationale),),
                        group=record.id))
            elif task == "summary" and record.conclusion and record.text.strip():
                user = f"{block(record, record.text, task)}\n\n{prompts.SUMMARY_INSTRUCTION}"
                examples.append(Example(id=f"{record.id}:summary", task="summary", turns=((user, record.conclusion),),
                                        group=record.id))
    return examples


def diagnosis_examples(hsdn_path: str | Path | None = None, *, limit: int = 300, seed: int = 0) -> list[Example]:
    """Diagnosis-rationale examples written from the HSDN symptom-disease network, in the diagnosis kind's prompt.

    For a disease, 3-4 of its most co-occurring symptoms are the findings; the reply names them as the
    support and its next most associated symptoms as what to check next: a rationale grounded in the
    same knowledge the ranker uses (the model learns the format and to cite findings, never the ranking).
    """
    from django.conf import settings

    from medassist.knowledge.hsdn import read_hsdn
    from medassist.knowledge.prompts import diagnosis_explain_prompt as explain_prompt

    path = Path(hsdn_path or Path(settings.MEDASSIST_KNOWLEDGE_DATA) / "hsdn-symptoms-disease" / "symptoms-DO.tsv")
    by_disease: dict[str, list] = defaultdict(list)
    for link in read_hsdn(path):
        by_disease[link.disease_id].append(link)
    rng = random.Random(f"diagnosis:{seed}")
    eligible = sorted(d for d, links in by_disease.items() if len(links) >= 6)
    examples = []
    for disease in rng.sample(eligible, min(limit, len(eligible))):
        ranked = sorted(by_disease[disease], key=lambda lk: (-lk.cooccurs, -lk.tfidf, lk.symptom_id))
        findings = rng.sample(ranked[:6], rng.choice((3, 4)))
        chosen = {lk.symptom_id for lk in findings}
        next_checks = [lk.symptom_name.lower() for lk in ranked if lk.symptom_id not in chosen][:2]
        name = ranked[0].disease_name
        names = [lk.symptom_name.lower() for lk in findings]
        reply = (f"{name} is supported by {', '.join(names[:-1])} and {names[-1]}, symptoms the literature reports "
                 f"most often with it. Next, check for {' and '.join(next_checks)}, and confirm with the tests "
                 f"appropriate for {name.lower()}.")
        user = explain_prompt([{"name": lk.symptom_name, "negated": False} for lk in findings], name)
        examples.append(Example(id=f"hsdn:{disease}:diagnosis", task="diagnosis", turns=((user, reply),),
                                group=f"hsdn:{disease}"))
    return examples


def _rationale(conclusion: str, max_words: int = RATIONALE_MAX_WORDS) -> str:
    """The conclusion's first sentence, plus the second if both fit in ``max_words``.

    Short on purpose: the served rationale is one sentence (RATIONALE_INSTRUCTION) of at most 48 tokens.
    """
    sentences = [s.strip() for s in _SENTENCE_END.split(conclusion.strip()) if s.strip()]
    if not sentences:
        return ""
    text = sentences[0]
    if len(sentences) > 1 and len(text.split()) + len(sentences[1].split()) <= max_words:
        text = f"{text} {sentences[1]}"
    words = text.split()
    if len(words) > max_words:  # one very long sentence: cut at a word, and say so
        text = " ".join(words[:max_words]).rstrip(",;:") + " …"
    return text


@dataclass(frozen=True)
class Augmentation:
    """Medical synonym augmentation: recognised disease, symptom and drug mentions replaced by synonyms.

    Mentions are found by ``medassist.knowledge.concepts`` (the literature kind's concept extractor) and
    replaced by another name the vocabulary packages ship for the *same* dictionary concept ("myocardial
    infarction" -> "heart attack"), so the concept a prompt is about never changes.
    """

    probability: float = 0.3  # chance each recognised disease/drug mention is replaced by a synonym
    max_per_text: int = 3  # replacements per text at most, so a prompt stays mostly the original wording
    seed: int = 0  # mixed into every record's random stream: same seed, same augmented data

    def __post_init__(self):
        if not 0.0 <= self.probability <= 1.0:
            raise ValueError(f"probability: {self.probability} is not between 0 and 1")
        if self.max_per_text < 0:
            raise ValueError(f"max_per_text: {self.max_per_text} is negative")

    def apply(self, text: str, rng: random.Random | None = None) -> str:
        """``text`` with some mentions replaced; the same ``rng`` state gives the same result."""
        if not text or self.probability == 0 or self.max_per_text == 0:
            return text
        from medassist.knowledge import concepts

        rng = rng if rng is not None else random.Random(self.seed)
        mentions = sorted((m for c in concepts.extract_concepts(text) for m in c["mentions"]), key=lambda m: m["start"])
        out, pos, replaced = [], 0, 0
        for mention in mentions:
            if replaced >= self.max_per_text:
                break
            if rng.random() >= self.probability:
                continue
            choices = _synonyms_for(mention["text"])
            if not choices:
                continue
            out += [text[pos:mention["start"]], _match_case(rng.choice(choices), mention["text"])]
            pos, replaced = mention["end"], replaced + 1
        return "".join(out) + text[pos:]


def _match_case(synonym: str, mention: str) -> str:
    # The dictionaries are lower case; keep a capital where the mention had one ("Heart attack" at a sentence start).
    if mention[:1].isupper() and not mention.isupper():
        return synonym[:1].upper() + synonym[1:]
    return synonym


def _is_plural(key: str) -> bool:
    return key.endswith("s") and not key.endswith(("ss", "is", "us"))


def _synonyms_for(mention: str) -> list[str]:
    """Other names of the mention's dictionary concept, of the same grammatical number."""
    from medassist.knowledge import concepts

    key = concepts.mention_key(mention)
    entry = concepts.dictionary_entry(mention)
    if entry is None:  # e.g. an abbreviation the text itself defined: not in the dictionary
        return []
    plural = _is_plural(key)
    return [surface for other, surface in _synonym_table().get(id(entry), ()) if other != key and _is_plural(other) == plural]


@functools.cache
def _synonym_table() -> dict[int, tuple[tuple[str, str], ...]]:
    """Dictionary concept (by identity, as concepts.py keys them) -> ((key, surface), ...) of its usable names.

    Built once per process (~4 s on 2 cores): every variant the two packages ship whose normalised key the
    concept index resolves to that concept, so the extractor would find the same concept in the augmented
    text. The keys come from concepts.py's own normaliser, so they agree with extraction exactly.
    """
    from medassist.knowledge import concepts

    terms = concepts.dictionary_terms()
    names: dict[int, dict[str, str]] = defaultdict(dict)
    for variant, key, _ in concepts.dictionary_variants():
        entry = terms.get(key)
        variant = variant.strip().lower()
        if entry is None or not _usable_synonym(variant, entry.type == "drug"):
            continue
        names[id(entry)].setdefault(key, variant)
    # Drug packages list brand names and foreign spellings (aspirin -> "polopiryna"); a drug's own
    # generic name is always a good substitute, so add it.
    for key, entry in terms.items():
        if entry.type == "drug" and entry.name.lower() == key:
            names[id(entry)].setdefault(key, key)
    return {entry_id: tuple(surfaces.items()) for entry_id, surfaces in names.items()}


def _usable_synonym(variant: str, is_drug: bool) -> bool:
    words = variant.split()
    # Lower-cased acronyms ("nsclc", "coad", "mody") read wrongly in prose and are often ambiguous: a
    # one-word synonym must be a real word of some length.
    if len(words) == 1 and (len(variant) < 6 or not re.search(r"[aeiouy]", variant)):
        return False
    # Single-word drug variants are mostly brand names and foreign spellings ("polopiryna"); multi-word
    # ASCII ones are chemical names ("acetylsalicylic acid", "metformin hydrochloride").
    return not is_drug or (len(words) > 1 and variant.isascii())


# --- 3. folds --------------------------------------------------------------------------------------------

def pubmedqa_folds(records: Sequence[Record], *, k: int = 5, seed: int = 0) -> list[list[str]]:
    """``k`` disjoint lists of record ids covering all records, stratified by label, deterministic.

    Each label's ids are sorted, shuffled with ``seed`` and dealt round-robin, the dealing continuing
    across labels so fold sizes differ by at most one. Unlabelled records form a stratum of their own.
    """
    ids = [r.id for r in records]
    if len(set(ids)) != len(ids):
        raise ValueError("records: ids are not unique; folds split on record ids")
    if not 2 <= k <= len(ids):
        raise ValueError(f"k: {k} folds need 2 <= k <= {len(ids)} (the number of records)")
    strata: dict[str, list[str]] = defaultdict(list)
    for record in records:
        strata[record.label or ""].append(record.id)
    rng = random.Random(seed)
    folds: list[list[str]] = [[] for _ in range(k)]
    dealt = 0
    for label in sorted(strata):
        members = sorted(strata[label])
        rng.shuffle(members)
        for record_id in members:
            folds[dealt % k].append(record_id)
            dealt += 1
    return folds


# --- 5. fingerprint --------------------------------------------------------------------------------------

def dataset_hash(examples: Iterable[Example]) -> str:
    """sha256 of a canonical JSON of (id, task, turns, label) in order: same examples, same hash."""
    canonical = [[e.id, e.task, [list(turn) for turn in e.turns], e.label] for e in examples]
    payload = json.dumps(canonical, ensure_ascii=False, separators=(",", ":"))
    return hashlib.sha256(payload.encode("utf-8")).hexdigest()


# --- 4. tokenizing ---------------------------------------------------------------------------------------

def tokenize_examples(examples: Sequence[Example], tokenizer_dir: str | Path, *, max_length: int = 384,
                      workers: int = 1) -> list[TokenizedExample]:
    """Token ids and labels per example, in input order; Ray actors when ``workers > 1`` (same output)."""
    if max_length < 8:
        raise ValueError(f"max_length: {max_length} tokens is too short for any example")
    if workers < 1:
        raise ValueError(f"workers: {workers} must be at least 1")
    marker = _abstract_marker()
    plain = [e.turns for e in examples]  # plain tuples travel to Ray actors without pickling our classes
    tokenizer_dir = str(Path(tokenizer_dir).resolve())  # Ray actors run in another working directory
    if workers == 1 or len(examples) < 2:
        encoded = _Tokenizer(tokenizer_dir, max_length, marker).tokenize(plain)
    else:
        encoded = _tokenize_with_ray(plain, tokenizer_dir, max_length, marker, workers)
    return [TokenizedExample(id=e.id, input_ids=ids, labels=labels, task=e.task, label=e.label)
            for e, (ids, labels) in zip(examples, encoded, strict=True)]


def _abstract_marker() -> str | None:
    """What precedes the abstract text in a prompt ("Abstract: "), from the literature kind itself."""
    from django.core.exceptions import AppRegistryNotReady, ImproperlyConfigured

    try:
        from medassist.knowledge.prompts import abstract_block as _abstract_block
    except (AppRegistryNotReady, ImproperlyConfigured):  # Django not set up: truncation cuts the message's start
        logger.warning("medassist.kinds.literature not importable: long examples are cut from the message start")
        return None
    return _abstract_block({"text": ""})


def _tokenize_with_ray(plain: list, tokenizer_dir: str, max_length: int, marker: str | None,
                       workers: int) -> list[tuple[list[int], list[int]]]:
    os.environ.setdefault("RAY_AUTH_MODE", "disabled")  # no auth token written under ~/.ray for a local cluster
    os.environ.setdefault("RAY_TRAIN_ENABLE_PRINT_PATCH", "0")  # no duplicated prints
    import ray
    from ray.util import ActorPool

    if not ray.is_initialized():
        ray.init(ignore_reinit_error=True, include_dashboard=False)
    cpus = int(ray.cluster_resources().get("CPU", 1))
    if workers > cpus:  # an actor asks for one CPU: more actors than CPUs would wait forever
        logger.warning("tokenizing with %d Ray actors, not %d: the cluster has %d CPUs", cpus, workers, cpus)
        workers = max(1, cpus)
    # Actors import this module: give them the project root, wherever the driver was started from.
    root = str(Path(__file__).resolve().parents[1])
    pythonpath = os.pathsep.join(p for p in (root, os.environ.get("PYTHONPATH", "")) if p)
    actor_class = ray.remote(num_cpus=1, runtime_env={"env_vars": {"PYTHONPATH": pythonpath}})(_Tokenizer)
    actors = [actor_class.remote(tokenizer_dir, max_length, marker) for _ in range(workers)]
    try:
        # A few shards per actor evens out the load; ActorPool.map returns results in submission order.
        size = math.ceil(len(plain) / (workers * 4))
        shards = [plain[i:i + size] for i in range(0, len(plain), size)]
        return [pair for shard in ActorPool(actors).map(lambda actor, shard: actor.tokenize.remote(shard), shards)
                for pair in shard]
    finally:
        for actor in actors:
            ray.kill(actor)


class _Tokenizer:
    """Renders and tokenizes examples; in this process, or as a Ray actor (one tokenizer load per actor).

    Examples travel as their ``turns`` and come back as ``(input_ids, labels)``. Each conversation
    is tokenized once, with character offsets: the rendered prefixes (up to each assistant reply, and
    through it) must be string prefixes of the whole, and no token may straddle where they end, so the
    prefix tokens are the whole's first tokens. The first example of every call is also checked the slow
    way, tokenizing each prefix on its own.
    """

    def __init__(self, tokenizer_dir: str, max_length: int, marker: str | None):
        from transformers import AutoTokenizer

        self.tokenizer = AutoTokenizer.from_pretrained(tokenizer_dir, local_files_only=True)
        self.marker = marker
        # Without a chat template a stop token is appended after the last reply (see _with_stop): leave room for it.
        self.limit = max_length - (0 if self.tokenizer.chat_template or self.tokenizer.eos_token_id is None else 1)
        # The tokens that end an assistant turn: the same set Generator stops on.
        from workers.runtime.engines import chat_end_token_ids

        self.end_ids = chat_end_token_ids(self.tokenizer)

    def tokenize(self, plain: list) -> list[tuple[list[int], list[int]]]:
        if not plain:
            return []
        # One batched call for all examples; only those too long go round the truncation loop one by one.
        rendered = [self._render_turns(turns) for turns in plain]
        encoded = self._encode([texts[0] for texts in rendered])
        out = []
        for n, (turns, texts, (ids, offsets)) in enumerate(zip(plain, rendered, encoded, strict=True)):
            if n == 0:
                self._check_prefix_tokens(texts, ids)
            labels = self._labels(texts, ids, offsets)
            if len(ids) > self.limit:
                ids, labels = self._truncated(turns, texts[0], ids, offsets, labels)
            out.append(self._with_stop(ids, labels))
        return out

    def _encode(self, texts: list[str]) -> list[tuple[list[int], list[tuple[int, int]]]]:
        # No special tokens added: the rendered text holds every token the model sees, as in Generator._encode.
        enc = self.tokenizer(texts, add_special_tokens=False, return_offsets_mapping=True)
        return list(zip(enc["input_ids"], enc["offset_mapping"], strict=True))

    def _render(self, messages: list[dict], generation_prompt: bool) -> str:
        if self.tokenizer.chat_template:
            return self.tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=generation_prompt)
        return "\n".join(m["content"] for m in messages) + "\n"  # Generator.chat_prompt's format without a template

    def _render_turns(self, turns) -> list[str]:
        """[whole conversation, then per assistant reply: text up to it (with the generation prompt), text through it]."""
        messages, texts = [], []
        for user, assistant in turns:
            messages.append({"role": "user", "content": user})
            texts.append(self._render(messages, True))
            messages.append({"role": "assistant", "content": assistant})
            texts.append(self._render(messages, False))
        return [texts[-1], *texts]

    @staticmethod
    def _token_at(offsets, char: int, *, strict: bool = True) -> int:
        """How many tokens start before character ``char``; ``strict``: raise if one straddles it."""
        i = bisect.bisect_left([start for start, _ in offsets], char)
        if strict and i > 0 and offsets[i - 1][1] > char:
            raise ValueError(f"a token straddles character {char}, where a chat turn starts or ends; "
                             "assistant tokens cannot be located")
        return i

    def _labels(self, texts: list[str], ids: list[int], offsets) -> list[int]:
        full = texts[0]
        labels = [IGNORE_INDEX] * len(ids)
        for before, through in zip(texts[1::2], texts[2::2], strict=True):
            if not (full.startswith(before) and full.startswith(through)):
                raise ValueError("the chat template does not render a conversation's start as a prefix of the whole; "
                                 "assistant tokens cannot be located")
            start, stop = self._token_at(offsets, len(before)), self._token_at(offsets, len(through))
            # Through the end-of-turn token (the model must learn to stop), not the template's newline after it.
            end = next((i for i in reversed(range(start, stop)) if ids[i] in self.end_ids), None)
            for i in range(start, stop if end is None else end + 1):
                labels[i] = ids[i]
        return labels

    def _check_prefix_tokens(self, texts: list[str], ids: list[int]) -> None:
        for prefix in texts[1:]:
            own = self.tokenizer(prefix, add_special_tokens=False)["input_ids"]
            if ids[:len(own)] != own:
                raise ValueError("a conversation's start tokenizes differently on its own than inside the whole; "
                                 "assistant tokens cannot be located")

    def _with_stop(self, ids: list[int], labels: list[int]) -> tuple[list[int], list[int]]:
        if self.tokenizer.chat_template or self.tokenizer.eos_token_id is None:
            return list(ids), labels
        # Without a template nothing marks the end of a reply: the stop token follows the last one.
        return [*ids, self.tokenizer.eos_token_id], [*labels, self.tokenizer.eos_token_id]

    def _truncated(self, turns, full: str, ids: list[int], offsets, labels: list[int]) -> tuple[list[int], list[int]]:
        """Shorten the first user message's abstract text from its start until the example fits.

        The question, the instructions and every reply stay whole; as in the served prompt's left
        truncation, the start of the abstract is what goes.
        """
        limit = self.limit
        user, reply = turns[0]
        start = user.find(self.marker) + len(self.marker) if self.marker and self.marker in user else 0
        end = user.rfind("\n\n")
        end = end if end > start else len(user)
        abstract = user[start:end]
        while len(ids) > limit and abstract:
            # Drop as many tokens as are too many from the abstract's start, then re-render: tokens near the
            # cut can merge differently, which the loop corrects.
            at = full.find(user) + start
            first = self._token_at(offsets, at, strict=False)  # " Abstract"-style tokens may own the space
            cut_token = first + len(ids) - limit
            cut = offsets[cut_token][0] - at if cut_token < len(offsets) else len(abstract)
            rest = abstract[max(1, cut):]
            if rest and not abstract[max(1, cut) - 1].isspace():  # do not start inside a word
                parts = rest.split(None, 1)
                rest = parts[1] if len(parts) > 1 else ""
            abstract = rest.lstrip()
            turns = ((user[:start] + abstract + user[end:], reply), *turns[1:])
            user = turns[0][0]
            end = start + len(abstract)
            texts = self._render_turns(turns)
            full = texts[0]
            ((ids, offsets),) = self._encode([full])
            labels = self._labels(texts, ids, offsets)
        if len(ids) > limit:
            logger.warning("an example is %d tokens without its abstract (limit %d): its end is cut", len(ids), limit)
            ids, labels = ids[:limit], labels[:limit]
        return ids, labels
