"""Free text -> clinical findings (symptoms), with negation and abbreviation expansion.

This is the front half of the diagnosis kind: it turns "Pt c/o SOB and CP, denies fever or cough"
into coded findings (MeSH symptom descriptors) that :mod:`medassist.knowledge.diagnosis` ranks
against its symptom-disease matrix.  Pure Python, no Django, no model, nothing downloaded: the
only inputs are files of the shared data folder, read once and held in memory.

Pipeline of :func:`extract_findings` (each step is deliberately simple and inspectable):

1. **Tokenise** the original text with a regex that records character spans; words keep inner
   hyphens/apostrophes ("light-headed"), every other non-space character is its own token, and a
   newline is a token (it ends a negation scope).
2. **Expand abbreviations** (optional, :class:`Abbreviations`): only tokens written in UPPER case
   ("SOB", "CP", "N/V"), only abbreviations whose dominant sense in the real sense inventories is
   clear (>= 60 % by default, see the class docstring), never English function words ("NO",
   "OR", ...).  The expansion's tokens keep the span of the abbreviation in the original text,
   so ``Finding.text`` is "shortness of breath" while ``Finding.span`` points at "SOB".
3. **Scan** the token stream once, taking at every position the longest phrase among: symptom names
   (:class:`SymptomVocabulary`), negation triggers, pseudo-triggers and scope terminators.
4. **NegEx-style negation** (Chapman et al. 2001, simplified) and **ConText** (Harkema et al. 2009):
   "family history of", "mother has" (family), "history of", "h/o", "in the past" (historical; not after
   a duration: "3-day history of cough" is the present illness) and "if", "return if", "watch for"
   (hypothetical) put the findings of their scope in ``Finding.context``, ending where negation ends.
   A negation trigger ("no", "denies", "without", "negative for", ...) negates the findings that follow
   it until a terminator ("but", "however", ".", ";", "presents with", "complains of", ", with", a
   newline, ...).  Commas and
   "or"/"and" do *not* end a scope, so "denies fever, chills or cough" negates all three.
   Pseudo-triggers ("no change", "not only", "rule out", "cannot be ruled out") are consumed so that
   their "no"/"not" negates nothing.  "denied", "absent", "negative" and "ruled out" also work
   after the finding ("fever was ruled out."), where they negate the findings of their own
   comma-delimited clause.  A trigger that is only part of an abbreviation's expansion ("NKDA" =
   "no known drug allergies") negates nothing beyond that expansion.
5. **Names are not findings**: a symptom word directly followed by an entity head ("coma
   *scale*", "fatigue *syndrome*", "pain *clinic*") is skipped, as is a symptom inside an expansion
   that ends in one ("GCS" = "glasgow coma scale").

The vocabulary (:meth:`SymptomVocabulary.from_hsdn_and_mesh`) has only MeSH preferred names (the
shared MeSH 2015 copy ships no entry terms), so we add lexical variants (lower case, inverted
comma forms "Angina, Unstable" -> "unstable angina", plural/singular of the last word, hyphen ->
space) and a short hand-written table of lay synonyms, each with the reason it is safe
(:data:`LAY_SYNONYMS`).

Public interface::

    Finding(text, concept_id, name, negated, span, context=None)
    SymptomVocabulary.from_hsdn_and_mesh(hsdn_path, symptoms_path=None) / .from_names(...)
    Abbreviations.from_inventories(folder, min_share=0.6) / .from_mapping(...)
    extract_findings(text, vocab, abbreviations=None) -> list[Finding]
    resolve_findings(findings, vocab, abbreviations=None, *, name_of=None) -> list[Finding]
    name_variants(name) -> list[str]   # "Angina, Unstable" -> [..., "Unstable Angina", ...]
    invert_mesh_name(name) -> str      # "Angina, Unstable" -> "Unstable Angina"

:func:`resolve_findings` is the one place where findings as callers give them (coded ids, vocabulary
names, free text, mappings) become :class:`Finding` objects; the diagnosis ranker calls it.
"""

from __future__ import annotations

import csv
import re
from collections import defaultdict
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

__all__ = [
    "Finding",
    "SymptomVocabulary",
    "Abbreviations",
    "AbbreviationSense",
    "extract_findings",
    "resolve_findings",
    "normalize_concept_id",
    "name_variants",
    "invert_mesh_name",
    "LAY_SYNONYMS",
]


@dataclass(frozen=True)
class Finding:
    text: str  # the surface text as written (after abbreviation expansion)
    concept_id: str | None  # e.g. "MESH:D005334" when mapped to the symptom vocabulary
    name: str | None  # the vocabulary's preferred name
    negated: bool
    span: tuple[int, int]  # character offsets in the ORIGINAL input
    # ConText: "family" (a relative's), "historical" (past history), "hypothetical" ("return if ...");
    # such a finding is not the patient's present complaint, so rankers use it neither way
    context: str | None = None

    @property
    def present(self) -> bool:
        """Affirmed, and about the patient now."""
        return not self.negated and self.context is None

    def to_dict(self) -> dict:
        return {"text": self.text, "concept_id": self.concept_id, "name": self.name,
                "negated": self.negated, "span": list(self.span), "context": self.context}


# --- tokenisation ------------------------------------------------------------------------------------------

# Words keep inner hyphens/apostrophes and decimal points ("light-headed", "38.5"); any other
# non-space character is a token of its own, and so is a newline (a negation scope ends there).
_TOKEN_RE = re.compile(r"[A-Za-z0-9]+(?:[-'][A-Za-z0-9]+)*(?:\.[0-9]+)?|\n|[^\sA-Za-z0-9]")


@dataclass(frozen=True)
class _Token:
    text: str
    norm: str  # lower case
    start: int  # span in the ORIGINAL text (an expansion's tokens share the abbreviation's span)
    end: int
    is_word: bool
    group: int = -1  # index of the abbreviation expansion this token comes from (-1: written as is)
    inside_entity: bool = False  # expansion token before an entity head ("coma" in "glasgow coma scale")


def _tokenize(text: str) -> list[_Token]:
    out = []
    for m in _TOKEN_RE.finditer(text):
        t = m.group()
        out.append(_Token(t, t.lower(), m.start(), m.end(), t[0].isalnum()))
    return out


def _key(text: str) -> tuple[str, ...]:
    """The lookup key of a phrase: lower-case tokens, punctuation kept (so ", with" is a key)."""
    return tuple(t.norm for t in _tokenize(text))


def _word_key(text: str) -> tuple[str, ...]:
    """A vocabulary key: words only -- "Hearing Loss, Sudden" style commas are not part of a name."""
    return tuple(t.norm for t in _tokenize(text) if t.is_word)


def normalize_concept_id(value: str) -> str:
    """"D005334", "mesh:D005334", "MESH:D005334" -> "MESH:D005334" (other prefixes upper-cased)."""
    value = value.strip()
    if ":" in value:
        prefix, rest = value.split(":", 1)
        return f"{prefix.strip().upper()}:{rest.strip()}"
    if re.fullmatch(r"[CD]\d{6,9}", value):
        return f"MESH:{value}"
    return value


# --- vocabulary --------------------------------------------------------------------------------------------

# Lay synonyms -> MeSH symptom descriptor (all targets exist in HSDN's symptom list).  Only phrases
# whose everyday meaning *is* the descriptor (most are MeSH entry terms of it; the shared MeSH copy
# has no entry terms, so we restate them here).  Deliberately absent: vague or ambiguous phrases
# ("feeling sick" = nausea in the UK, vomiting elsewhere; "fits"; "temperature"; "swelling" alone).
LAY_SYNONYMS: dict[str, tuple[str, tuple[str, ...]]] = {
    # concept_id: (why, phrases)
    "MESH:D004417": ("Dyspnea: MeSH entry terms 'Breathlessness', 'Shortness of Breath'",
                     ("shortness of breath", "short of breath", "breathlessness", "breathless",
                      "difficulty breathing", "trouble breathing", "breathing difficulty", "out of breath")),
    "MESH:D005334": ("Fever: MeSH entry term 'Pyrexia'; lay 'high temperature'",
                     ("high temperature", "pyrexia", "febrile", "feverish", "fevers")),
    "MESH:D014839": ("Vomiting: MeSH entry term 'Emesis'; lay 'throwing up'",
                     ("throwing up", "threw up", "throw up", "emesis", "vomit", "vomited", "vomits")),
    "MESH:D005221": ("Fatigue: MeSH entry terms 'Lassitude', 'Tiredness'",
                     ("tiredness", "tired", "lassitude", "exhaustion", "exhausted")),
    "MESH:D009325": ("Nausea: lay 'queasy'", ("queasy", "queasiness", "nauseous", "nauseated")),
    "MESH:D015746": ("Abdominal Pain: lay 'stomach ache', 'belly pain'",
                     ("stomach ache", "stomachache", "stomach pain", "belly pain", "belly ache",
                      "tummy ache", "abdomen pain", "abdominal discomfort")),
    "MESH:D006261": ("Headache: spelling variants", ("head ache", "head aches")),
    "MESH:D004244": ("Dizziness: MeSH entry terms 'Lightheadedness'; lay 'dizzy'",
                     ("dizzy", "lightheaded", "light-headed", "lightheadedness", "light-headedness")),
    "MESH:D013575": ("Syncope: MeSH entry term 'Fainting'", ("fainting", "fainted", "faint", "passed out",
                                                             "passing out")),
    "MESH:D011537": ("Pruritus: MeSH entry term 'Itching'", ("itching", "itchy", "itch")),
    "MESH:D003967": ("Diarrhea: lay 'loose stools'", ("loose stools", "loose stool", "watery stools",
                                                       "watery stool")),
    "MESH:D018771": ("Arthralgia: MeSH entry term 'Joint Pain'", ("joint pain", "joint pains", "painful joints")),
    "MESH:D007565": ("Jaundice: lay 'yellow skin/eyes'; entry term 'Icterus'",
                     ("icterus", "yellow skin", "yellowing of the skin", "yellow eyes", "yellowing of the eyes")),
    "MESH:D015431": ("Weight Loss: lay phrasings", ("losing weight", "lost weight", "weight decrease")),
    "MESH:D000855": ("Anorexia (the symptom): MeSH scope 'lack or loss of appetite'",
                     ("loss of appetite", "poor appetite", "appetite loss", "decreased appetite")),
    "MESH:D012640": ("Seizures: MeSH entry term 'Convulsions'", ("convulsion", "convulsions")),
    "MESH:D006987": ("Hypesthesia: MeSH entry term 'Numbness'", ("numbness", "numb")),
    "MESH:D010292": ("Paresthesia: MeSH entry terms 'Tingling', 'Pins and Needles'",
                     ("tingling", "pins and needles")),
    "MESH:D014012": ("Tinnitus: lay 'ringing in the ears'", ("ringing in the ears", "ringing in ears")),
    "MESH:D004172": ("Diplopia: MeSH entry term 'Double Vision'", ("double vision",)),
    "MESH:D006469": ("Hemoptysis: lay 'coughing up blood'", ("coughing up blood", "coughing blood")),
    "MESH:D006396": ("Hematemesis: lay 'vomiting blood'", ("vomiting blood", "vomiting of blood")),
    "MESH:D003371": ("Cough: verb forms", ("coughing",)),
    "MESH:D053159": ("Dysuria: MeSH scope 'painful urination'", ("painful urination", "burning on urination",
                                                                 "burning urination")),
    "MESH:D001416": ("Back Pain: MeSH entry term 'Backache'", ("backache", "back ache")),
    "MESH:D014202": ("Tremor: lay 'shaking'", ("shaking", "trembling", "shakiness")),
    "MESH:D004884": ("Eructation: MeSH entry term 'Belching'", ("belching", "burping")),
    "MESH:D004415": ("Dyspepsia: MeSH entry term 'Indigestion'", ("indigestion",)),
    "MESH:D012135": ("Respiratory Sounds: MeSH 2015 has no Wheezing descriptor; 'Wheezing' is its entry term",
                     ("wheezing", "wheeze", "wheezes")),
    "MESH:D014474": ("Unconsciousness: lay 'loss of consciousness'", ("loss of consciousness", "unconscious")),
    "MESH:D002637": ("Chest Pain: 'chest discomfort' is how angina is usually described", ("chest discomfort",)),
    "MESH:D001247": ("Asthenia: MeSH scope 'lack or loss of strength'; lay 'weakness'",
                     ("weakness", "generalized weakness", "generalised weakness")),
    "MESH:D004487": ("Edema: lay 'swollen legs/ankles'", ("swollen legs", "swollen ankles", "leg swelling",
                                                         "ankle swelling", "swelling of the legs")),
    "MESH:D012877": ("Skin Manifestations: HSDN has no Exanthema node; a rash is its closest symptom concept",
                     ("rash", "rashes", "skin rash")),
    "MESH:D003221": ("Confusion: adjective", ("confused",)),
    "MESH:D023341": ("Chills: lay 'shivering', clinical 'rigors'", ("shivering", "rigors", "rigor")),
}

# Priorities when two concepts claim the same key: a descriptor's own name beats variants.
_P_NAME, _P_INVERTED, _P_LAY, _P_NUMBER, _P_HYPHEN = 0, 1, 2, 3, 4


def _plural_variants(word: str) -> list[str]:
    """Singular <-> plural of one English word, conservatively (only what symptom names need)."""
    if len(word) <= 3 or not word.isalpha():
        return []
    if word.endswith(("ss", "us", "is", "sis")):  # "tinnitus", "paresis": never strip
        return [word + "es"] if word.endswith("ss") else []
    if word.endswith("ies"):
        return [word[:-3] + "y"]
    if word.endswith("s"):
        return [word[:-1]]
    if word.endswith(("ch", "sh", "x")):
        return [word + "es"]
    if word.endswith("y") and word[-2] not in "aeiou":
        return [word[:-1] + "ies"]
    return [word + "s"]


def invert_mesh_name(name: str) -> str:
    """A MeSH comma form in natural word order: "Purpura, Thrombocytopenic, Idiopathic" ->
    "Idiopathic Thrombocytopenic Purpura" (a name without a comma as it is)."""
    return " ".join(reversed([p.strip() for p in name.split(",")])) if "," in name else name


def _name_variants(name: str) -> list[tuple[str, int]]:
    """Surface variants of a MeSH preferred name, each with its priority."""
    out = [(name, _P_NAME)]
    if ", " in name:  # "Purpura, Thrombocytopenic, Idiopathic" -> "Idiopathic Thrombocytopenic Purpura"
        out.append((invert_mesh_name(name), _P_INVERTED))
    for text, _ in list(out):
        words = text.split(" ")
        for alt in _plural_variants(words[-1].lower()):
            out.append((" ".join(words[:-1] + [alt]), _P_NUMBER))
    for text, prio in list(out):
        if "-" in text:  # "Cafe-au-Lait Spots" also written "cafe au lait spots"
            out.append((text.replace("-", " "), max(prio, _P_HYPHEN)))
    return out


def name_variants(name: str) -> list[str]:
    """The surface forms the vocabulary accepts for a MeSH name: itself, the inverted comma form, the
    other grammatical number of the last word, hyphens as spaces (also how other vocabularies, e.g.
    HPO in :mod:`medassist.knowledge.phenotypes`, are matched to it)."""
    return list(dict.fromkeys(variant for variant, _ in _name_variants(name)))


class SymptomVocabulary:
    """Phrase -> MeSH symptom concept, for longest-match lookup over tokens."""

    def __init__(self) -> None:
        self._entries: dict[tuple[str, ...], tuple[str, int]] = {}  # key -> (concept_id, priority)
        # order-free keys for whole-phrase lookup only: "pain chest" (how discharge summaries and
        # terminologies write it) = "chest pain"; never used while scanning free text
        self._bags: dict[tuple[str, ...], tuple[str, int]] = {}
        self.names: dict[str, str] = {}  # concept_id -> preferred name
        self.max_len = 1

    # construction
    def add(self, concept_id: str, phrase: str, priority: int = _P_NAME) -> None:
        key = _word_key(phrase)
        if not key:
            return
        current = self._entries.get(key)
        # a lower priority number wins; on a tie the first one added (HSDN before MeSH-only) stays
        if current is None or priority < current[1]:
            self._entries[key] = (concept_id, priority)
            self.max_len = max(self.max_len, len(key))
        bag = tuple(sorted(key))
        kept = self._bags.get(bag)
        if kept is None or priority < kept[1]:
            self._bags[bag] = (concept_id, priority)

    def add_concept(self, concept_id: str, name: str) -> None:
        concept_id = normalize_concept_id(concept_id)
        self.names.setdefault(concept_id, name)
        for variant, priority in _name_variants(name):
            self.add(concept_id, variant, priority)

    def add_lay_synonyms(self, table: Mapping[str, tuple[str, Iterable[str]]] = LAY_SYNONYMS) -> None:
        for concept_id, (_why, phrases) in table.items():
            if concept_id not in self.names:  # never invent a concept the vocabulary does not have
                continue
            for phrase in phrases:
                self.add(concept_id, phrase, _P_LAY)

    @classmethod
    def from_names(cls, names: Mapping[str, str], *, lay_synonyms: bool = True) -> SymptomVocabulary:
        vocab = cls()
        for concept_id, name in names.items():
            vocab.add_concept(concept_id, name)
        if lay_synonyms:
            vocab.add_lay_synonyms()
        return vocab

    @classmethod
    def from_hsdn_and_mesh(cls, hsdn_path: Path, symptoms_path: Path | None = None, *,
                           lay_synonyms: bool = True) -> SymptomVocabulary:
        """HSDN ``symptom_id``/``symptom_name`` plus MeSH 2015 ``symptoms.tsv`` (``mesh_id``, ``mesh_name``).

        HSDN's 316 symptoms come first (they are the ones the ranker can use); the other MeSH
        C23 descriptors are still recognised, so they are reported rather than silently missed.
        """
        names: dict[str, str] = {}
        with open(hsdn_path, newline="", encoding="utf-8") as fh:
            for row in csv.DictReader(fh, delimiter="\t"):
                names.setdefault(normalize_concept_id(row["symptom_id"]), row["symptom_name"])
        return cls.from_symptoms(names, symptoms_path, lay_synonyms=lay_synonyms)

    @classmethod
    def from_symptoms(cls, symptoms: Mapping[str, str], symptoms_path: Path | None = None, *,
                      lay_synonyms: bool = True) -> SymptomVocabulary:
        """``symptoms`` (id -> name: the ranker's, e.g. from the imported HSDN links) first, then the
        other MeSH 2015 ``symptoms.tsv`` descriptors."""
        names = {normalize_concept_id(k): v for k, v in symptoms.items()}
        if symptoms_path is not None:
            with open(symptoms_path, newline="", encoding="utf-8") as fh:
                for row in csv.DictReader(fh, delimiter="\t"):
                    names.setdefault(normalize_concept_id(row["mesh_id"]), row["mesh_name"])
        return cls.from_names(names, lay_synonyms=lay_synonyms)

    # lookup
    def lookup(self, phrase: str) -> tuple[str, str] | None:
        """Whole-phrase lookup ("Chest Pain", "chest pains", "Angina, Unstable", and inverted forms:
        "pain chest") -> (concept_id, name)."""
        key = _word_key(phrase)
        hit = self._entries.get(key) or self._bags.get(tuple(sorted(key)))
        return (hit[0], self.names[hit[0]]) if hit else None

    def get_key(self, key: tuple[str, ...]) -> str | None:
        hit = self._entries.get(key)
        return hit[0] if hit else None

    def name_of(self, concept_id: str) -> str | None:
        return self.names.get(normalize_concept_id(concept_id))

    def __contains__(self, concept_id: object) -> bool:
        return isinstance(concept_id, str) and normalize_concept_id(concept_id) in self.names

    def __len__(self) -> int:
        return len(self.names)


# --- abbreviations -----------------------------------------------------------------------------------------

@dataclass(frozen=True)
class AbbreviationSense:
    abbreviation: str  # the upper-case surface form that is expanded, e.g. "N/V"
    sense: str  # the expansion, e.g. "nausea/vomiting"
    share: float  # mean share of this sense over the inventories that list the abbreviation
    sources: tuple[str, ...]  # which inventories list it


# English words (and our negation vocabulary) that an all-caps note writes in upper case: never
# expand them even if an inventory lists them ("NO" = nitric oxide, "OR" = operating room, ...).
_NEVER_EXPAND = frozenset(
    "a am an and are as at be but by do for from go had has have he her him his i if in is it its me my no "
    "nor not of off on or our she so than that the then this to up us was we were who why with you".split())

# Senses that mean "do not expand" in the inventories (Stetson: "not an abbreviation (...)").
_NON_SENSE_PREFIXES = ("not an abbreviation", "not an acronym", "unsure sense", "unknown", "general english")


def _is_non_sense(sense: str) -> bool:
    return _norm_sense(sense).startswith(_NON_SENSE_PREFIXES)


def _norm_sense(sense: str) -> str:
    s = sense.strip().strip('"').lower()
    return re.sub(r"\s+", " ", s)


class Abbreviations:
    """Upper-case clinical abbreviations with a clearly dominant sense, from real sense inventories.

    How the dominant sense is chosen (:meth:`from_inventories`):

    * sources *with sense frequencies* (the only honest basis for "most frequent sense"):
      Vanderbilt clinic notes, Vanderbilt discharge summaries (both with UMLS CUIs), and the Stetson
      sense distribution.  Each source's shares per abbreviation are normalised to sum to 1;
    * senses are merged across sources by CUI where Vanderbilt gives one ("cerebral vascular
      accident" and "cerebrovascular accident" are both C0038454, a Stetson sense string is mapped
      to a CUI through Vanderbilt's sense strings), otherwise by normalised string;
    * an abbreviation's sense share is the *unweighted mean over the sources that list it*, so a
      sense that dominates one setting but not another is diluted ("CP": chest pain 0.62 in clinic
      notes, 0.19 in discharge summaries (cerebral palsy 0.80), 0.996 in Stetson -> 0.60);
    * it is expanded only if the top sense reaches ``min_share`` (default 0.6) and is a real
      expansion (Stetson marks some entries "not an abbreviation");
    * the Wikipedia list has no frequencies: it is used only for abbreviations absent from all
      three, and only when it lists exactly one sense (``use_wikipedia=False`` turns that off);
    * single letters and English function words are never expanded (all-caps notes).
    """

    def __init__(self, senses: Mapping[str, AbbreviationSense] | None = None) -> None:
        self.senses: dict[str, AbbreviationSense] = dict(senses or {})
        self._keys: dict[tuple[str, ...], AbbreviationSense] = {}
        self.max_len = 1
        for abbr, sense in self.senses.items():
            key = tuple(t.text for t in _tokenize(abbr))
            self._keys[key] = sense
            self.max_len = max(self.max_len, len(key))

    @classmethod
    def from_mapping(cls, mapping: Mapping[str, str]) -> Abbreviations:
        return cls({a.upper(): AbbreviationSense(a.upper(), s, 1.0, ("manual",)) for a, s in mapping.items()})

    @classmethod
    def from_inventories(cls, folder: Path, *, min_share: float = 0.6, use_wikipedia: bool = True) -> Abbreviations:
        folder = Path(folder)
        # per source: abbreviation -> sense id -> share; plus sense id -> display label
        per_source: dict[str, dict[str, dict[str, float]]] = {}
        label_weight: dict[str, dict[str, float]] = defaultdict(lambda: defaultdict(float))
        cui_of_sense: dict[str, str] = {}

        def sense_id(sense: str, cui: str | None) -> str:
            norm = _norm_sense(sense)
            if cui:
                cui_of_sense.setdefault(norm, cui)
                return cui
            return cui_of_sense.get(norm, "S:" + norm)

        vanderbilt = sorted(folder.glob("*vanderbilt*"))
        for path in vanderbilt:  # first, so that their CUIs are known when Stetson strings are read
            table: dict[str, dict[str, float]] = defaultdict(lambda: defaultdict(float))
            with open(path, newline="", encoding="utf-8") as fh:
                for row in csv.DictReader(fh, delimiter="\t"):
                    try:
                        freq = float(row["frequency"])
                    except (TypeError, ValueError):
                        continue
                    abbr = row["abbreviation"].strip().lower().replace("_", "/")
                    cui = (row.get("CUI") or "").strip().lower()
                    cui = cui.split("|")[0].upper() if cui and cui != "null" else None
                    sid = sense_id(row["sense"], cui)
                    table[abbr][sid] += freq
                    label_weight[sid][row["sense"].strip().strip('"')] += freq
            per_source[path.stem] = table
        for path in sorted(folder.glob("*stetson*")):
            table = defaultdict(lambda: defaultdict(float))
            with open(path, newline="", encoding="utf-8") as fh:
                for parts in csv.reader(fh, delimiter="\t"):
                    if len(parts) < 3:
                        continue
                    try:
                        freq = float(parts[2])
                    except ValueError:
                        continue
                    sid = sense_id(parts[1], None)
                    table[parts[0].strip().lower()][sid] += freq
                    label_weight[sid][parts[1].strip().strip('"')] += freq
            per_source[path.stem] = table

        # the label of a merged sense is its most frequent wording ("abdomen" rather than "abdominal")
        label = {sid: max(words.items(), key=lambda kv: kv[1])[0] for sid, words in label_weight.items()}
        senses: dict[str, AbbreviationSense] = {}
        abbrs = {a for table in per_source.values() for a in table}
        for abbr in abbrs:
            listing = [(name, table[abbr]) for name, table in per_source.items() if abbr in table]
            mean: dict[str, float] = defaultdict(float)
            for _name, dist in listing:
                total = sum(dist.values()) or 1.0
                for sid, f in dist.items():
                    mean[sid] += f / total / len(listing)
            sid, share = max(mean.items(), key=lambda kv: kv[1])
            if share >= min_share and not _is_non_sense(label[sid]) and cls._expandable(abbr):
                upper = abbr.upper()
                senses[upper] = AbbreviationSense(upper, label[sid], round(share, 4),
                                                  tuple(name.split("__")[-1] for name, _ in listing))

        if use_wikipedia:
            wiki: dict[str, set[str]] = defaultdict(set)
            wiki_label: dict[str, str] = {}
            for path in sorted(folder.glob("*wikipedia*.csv")):
                with open(path, newline="", encoding="utf-8") as fh:
                    for row in csv.DictReader(fh):
                        abbr = (row.get("abr") or "").strip().lower()
                        if abbr:
                            wiki[abbr].add(_norm_sense(row["long_form"]))
                            wiki_label.setdefault(abbr, row["long_form"].strip())
            for abbr, forms in wiki.items():
                if abbr in abbrs or len(forms) != 1 or not cls._expandable(abbr):
                    continue
                if _is_non_sense(wiki_label[abbr]):
                    continue
                senses[abbr.upper()] = AbbreviationSense(abbr.upper(), wiki_label[abbr], 1.0, ("wikipedia",))
        return cls(senses)

    @staticmethod
    def _expandable(abbr: str) -> bool:
        letters = [c for c in abbr if c.isalpha()]
        if len(letters) < 2 or abbr in _NEVER_EXPAND:
            return False
        # only forms we can recognise as one contiguous upper-case token sequence
        return bool(re.fullmatch(r"[a-z0-9]+(?:[/&][a-z0-9]+)*", abbr))

    def get(self, abbreviation: str) -> AbbreviationSense | None:
        return self.senses.get(abbreviation)

    def expand(self, abbreviation: str) -> str | None:
        """The sense of an UPPER-case abbreviation ("SOB" -> "shortness of breath"); None otherwise."""
        hit = self.senses.get(abbreviation)
        return hit.sense if hit else None

    def __contains__(self, abbreviation: object) -> bool:
        return abbreviation in self.senses

    def __len__(self) -> int:
        return len(self.senses)

    def _match(self, tokens: list[_Token], i: int) -> tuple[int, AbbreviationSense] | None:
        """Longest abbreviation starting at tokens[i]: case-sensitive, contiguous characters."""
        for n in range(min(self.max_len, len(tokens) - i), 0, -1):
            window = tokens[i:i + n]
            if any(window[k].end != window[k + 1].start for k in range(n - 1)):
                continue
            hit = self._keys.get(tuple(t.text for t in window))
            if hit is None:
                continue
            # whole tokens only: "N/V" must not be the head of "N/Vx"; letters must be upper case
            if not any(c.isalpha() for t in window for c in t.text):
                continue
            return n, hit
        return None

    def apply(self, tokens: list[_Token]) -> list[_Token]:
        out: list[_Token] = []
        group = 0
        i = 0
        while i < len(tokens):
            m = self._match(tokens, i) if tokens[i].is_word else None
            if m is None:
                out.append(tokens[i])
                i += 1
                continue
            n, sense = m
            start, end = tokens[i].start, tokens[i + n - 1].end
            expansion = _tokenize(sense.sense)
            entity = bool(expansion) and expansion[-1].norm in ENTITY_HEADS
            for k, t in enumerate(expansion):
                out.append(_Token(t.text, t.norm, start, end, t.is_word, group=group,
                                  inside_entity=entity and k < len(expansion) - 1))
            group += 1
            i += n
        return out


# --- negation grammar --------------------------------------------------------------------------------------

_PRE = "pre"  # negates what follows
_EITHER = "either"  # before a finding: like _PRE; at the end of a clause: negates that clause
_PSEUDO = "pseudo"  # looks like a trigger, negates nothing
_TERM = "term"  # ends a negation scope

_GRAMMAR: dict[tuple[str, ...], str] = {}
for _p in ("no", "not", "denies", "deny", "denying", "without", "w/o", "w/out", "negative for", "absence of",
           "free of", "never", "neither", "nor", "non", "rules out", "ruling out", "no evidence of", "no sign of",
           "no signs of", "fails to reveal", "failed to reveal", "resolution of"):
    _GRAMMAR[_key(_p)] = _PRE
for _p in ("denied", "ruled out", "was ruled out", "is ruled out", "were ruled out", "absent", "is absent",
           "was absent", "are absent", "were absent", "negative", "not present", "not seen"):
    _GRAMMAR[_key(_p)] = _EITHER
for _p in ("no change", "no changes", "no increase", "no significant change", "not only", "not necessarily",
           "no further", "not certain whether", "not certain if", "rule out", "r/o", "cannot be ruled out",
           "can not be ruled out", "could not be ruled out", "not been ruled out", "not ruled out",
           "gram negative", "without difficulty", "not excluded", "cannot exclude"):
    _GRAMMAR[_key(_p)] = _PSEUDO
for _p in (".", ";", "?", "!", "\n", "but", "however", "although", "though", "yet", "except", "except for",
           "apart from", "aside from", "other than", "presents with", "presented with", "presenting with",
           "reports", "reported", "reporting", "complains of", "complaining of", "complained of", "c/o",
           "complaints of", "endorses", "endorsed", "endorsing", "admits", "admits to", "admitted", "positive for",
           "notable for", "significant for", "remarkable for", "which", "who", "whose",
           ", with", ", has", ", had", ", have", ", having", ", is", ", was", ", now", ", then",
           "and has", "and had", "and have", "and is", "but has", "now has", "now with"):
    _GRAMMAR[_key(_p)] = _TERM
# ConText (Harkema et al. 2009, simplified): a trigger puts the findings that follow, up to the same
# terminators as negation, in another context than the patient's present illness.
_CONTEXT_TRIGGERS = {
    "family": ("family history of", "family history", "family hx of", "family hx", "fhx", "fh of", "fh:",
               "mother has", "mother had", "mother with", "father has", "father had", "father with",
               "sister has", "sister had", "brother has", "brother had", "sibling with", "siblings with",
               "parents with", "runs in the family", "runs in her family", "runs in his family"),
    "historical": ("past medical history of", "past medical history", "past history of", "pmh of", "pmh:", "pmh",
                   "h/o", "hx of", "history of", "previous episode of", "previous episodes of",
                   "prior episode of", "prior episodes of", "previously had", "had previously", "in the past"),
    "hypothetical": ("if", "return if", "should he develop", "should she develop", "should they develop",
                     "in case of", "watch for", "monitor for", "call if", "seek care if", "warning signs of",
                     "would return if"),
}
for _kind, _phrases in _CONTEXT_TRIGGERS.items():
    for _p in _phrases:
        _GRAMMAR.setdefault(_key(_p), f"ctx:{_kind}")
# "3-day history of cough" is the present illness, not past history
_DURATION = re.compile(r"^(?:\d+[- ]?)?(?:hours?|days?|weeks?|months?|hr|wk|d)$")
_GRAMMAR_MAX = max(len(k) for k in _GRAMMAR)


def _grammar_match(tokens: list[_Token], i: int) -> tuple[int, str] | None:
    for n in range(min(_GRAMMAR_MAX, len(tokens) - i), 0, -1):
        kind = _GRAMMAR.get(tuple(t.norm for t in tokens[i:i + n]))
        if kind:
            return n, kind
    return None


# A symptom word directly followed by one of these heads names a thing, not a finding the patient has:
# "coma scale", "fatigue syndrome", "pain clinic", "fever clinic", "amnesia test".  The same holds
# inside an abbreviation's expansion that ends in one ("GCS" = "glasgow coma scale").
ENTITY_HEADS = frozenset(
    "syndrome syndromes scale scales score scores test tests ratio index questionnaire inventory criteria "
    "unit clinic clinics team service reaction reactions virus vaccine assessment protocol study trial grade "
    "classification management medication medications meds threshold".split())


def _vocab_match(tokens: list[_Token], i: int, vocab: SymptomVocabulary) -> tuple[int, str] | None:
    if not tokens[i].is_word:
        return None
    limit = 0
    while i + limit < len(tokens) and limit < vocab.max_len and tokens[i + limit].is_word:
        limit += 1
    for n in range(limit, 0, -1):  # longest match, words only: "fever, chills" is never one name
        concept = vocab.get_key(tuple(t.norm for t in tokens[i:i + n]))
        if concept:
            return n, concept
    return None


def _names_an_entity(tokens: list[_Token], i: int, n: int) -> bool:
    if tokens[i + n - 1].inside_entity:
        return True
    nxt = tokens[i + n] if i + n < len(tokens) else None
    return nxt is not None and nxt.is_word and nxt.norm in ENTITY_HEADS


def _surface(text: str, window: list[_Token]) -> str:
    if all(t.group < 0 for t in window):
        return text[window[0].start:window[-1].end]
    return " ".join(t.text for t in window)


def extract_findings(text: str, vocab: SymptomVocabulary, abbreviations: Abbreviations | None = None) -> list[Finding]:
    """Symptom mentions of ``text`` in order, each with its negation status and original span.

    A concept mentioned several times yields several findings (one per mention, each with its
    own negation); :meth:`DiagnosisRanker.rank` decides how to combine them.
    """
    tokens = _tokenize(text)
    if abbreviations is not None:
        tokens = abbreviations.apply(tokens)

    findings: list[Finding] = []
    clause_start = 0  # index into `findings` of the first finding of the current clause
    negating = False
    context: str | None = None  # ConText scope: "family" / "historical" / "hypothetical"
    scope_group = -1  # a trigger inside a longer expansion ("NKDA" = "no known drug allergies")
    i = 0             # negates only up to the end of that expansion
    while i < len(tokens):
        if scope_group >= 0 and tokens[i].group != scope_group:
            negating, scope_group = False, -1
        vm = _vocab_match(tokens, i, vocab)
        gm = _grammar_match(tokens, i)
        if gm and (vm is None or gm[0] >= vm[0]):
            n, kind = gm
            if kind == _TERM:
                negating, scope_group, context = False, -1, None
                clause_start = len(findings)
            elif kind.startswith("ctx:"):
                previous = tokens[i - 1].norm if i > 0 else ""
                if not (kind == "ctx:historical" and _DURATION.match(previous)):
                    context = kind[4:]
            elif kind in (_PRE, _EITHER):
                nxt = tokens[i + n] if i + n < len(tokens) else None
                at_clause_end = nxt is None or (not nxt.is_word and _GRAMMAR.get((nxt.norm,)) in (_TERM, None))
                earlier = [k for k in range(clause_start, len(findings)) if not findings[k].negated]
                if kind == _EITHER and at_clause_end and earlier:  # "fever was ruled out." / "chills denied,"
                    for k in earlier:
                        f = findings[k]
                        findings[k] = Finding(f.text, f.concept_id, f.name, True, f.span, f.context)
                else:
                    negating = True
                    g = tokens[i].group
                    inner = g >= 0 and nxt is not None and nxt.group == g
                    scope_group = g if inner else -1
            if any(not t.is_word for t in tokens[i:i + n]):
                clause_start = len(findings)
            i += n
            continue
        if vm and not _names_an_entity(tokens, i, vm[0]):
            n, concept = vm
            window = tokens[i:i + n]
            findings.append(Finding(_surface(text, window), concept, vocab.names.get(concept), negating,
                                    (window[0].start, window[-1].end), context))
            i += n
            continue
        if not tokens[i].is_word:  # commas and slashes keep the negation scope but end a clause
            clause_start = len(findings)
        i += 1
    return findings


# --- findings as callers give them -------------------------------------------------------------------------

CODED_RE = re.compile(r"^[A-Za-z][A-Za-z0-9_]*:\S+$")  # a prefixed id of another vocabulary: "RFV:1050.1"
CONCEPT_ID_RE = re.compile(r"^(?:MESH:)?[CD]\d{6,9}$", re.IGNORECASE)  # a MeSH descriptor id, prefixed or not


def resolve_findings(findings: Sequence[Finding | str | Mapping], vocab: SymptomVocabulary,
                     abbreviations: Abbreviations | None = None, *,
                     name_of: Callable[[str], str | None] | None = None) -> list[Finding]:
    """Findings as given -> :class:`Finding` objects.

    A string is a concept id ("MESH:D005334", "D005334"), a vocabulary name ("Chest Pain",
    "Angina, Unstable", "shortness of breath") or free text ("no fever", "SOB") that goes
    through :func:`extract_findings`; a string that maps to nothing is kept with
    ``concept_id=None`` so that callers can report it (the HPO and embedding components still
    read its text, e.g. an HPO id "HP:0001945").  A mapping may carry ``concept_id``,
    ``text`` and ``negated``.  A coded id is named by ``vocab``, else by ``name_of(id)`` (e.g. the
    ranker's own symptom names), else None.
    """

    def named(cid: str) -> str | None:
        return vocab.name_of(cid) or (name_of(cid) if name_of else None)

    out: list[Finding] = []
    for item in findings:
        if isinstance(item, Finding):
            out.append(item)
        elif isinstance(item, Mapping):
            negated = bool(item.get("negated", False))
            context = item.get("context") or None
            cid = item.get("concept_id")
            text = str(item.get("text") or item.get("name") or cid or "")
            if cid:
                cid = normalize_concept_id(str(cid))
                out.append(Finding(text, cid, named(cid), negated, (0, len(text)), context))
            else:
                resolved = resolve_findings([text], vocab, abbreviations, name_of=name_of)
                out.extend(Finding(f.text, f.concept_id, f.name, f.negated or negated, f.span, f.context or context)
                           for f in resolved)
        elif isinstance(item, str):
            text = item.strip()
            if CONCEPT_ID_RE.match(text) or (CODED_RE.match(text) and normalize_concept_id(text) in vocab):
                cid = normalize_concept_id(text)
                out.append(Finding(text, cid, named(cid), False, (0, len(item))))
                continue
            hit = vocab.lookup(text)
            if hit:
                out.append(Finding(text, hit[0], hit[1], False, (0, len(item))))
                continue
            found = extract_findings(item, vocab, abbreviations)
            out.extend(found or [Finding(text, None, None, False, (0, len(item)))])
        else:
            raise TypeError(f"a finding must be a Finding, str or mapping, not {type(item).__name__}")
    return out
