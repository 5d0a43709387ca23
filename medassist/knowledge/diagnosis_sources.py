"""Many symptom-disease sources joined into one association set: diseases unified through the Disease
Ontology crosswalks, findings through one finding vocabulary.  Pure Python (no Django): the importers
store what this builds, the evaluation builds it from held-out halves directly.

Sources (``../shared/data/ddx-knowledge``, each folder's SOURCE.txt)
    * ``nhamcs``: CDC NHAMCS 2010 ED visits read from ``ED2010.zip`` with the documented fixed-width
      layout (doc2010.pdf: AGE 4-6, SEX 21, RFV1-3 71-85, DIAG1-3 103-117, ADMITHOS 260, PATWT 289-294);
      each visit's reasons for visit (RFV codes) x its ICD-9-CM diagnoses (any of the three positions;
      blanks and the V and E codes left out: follow-up examination, sutures, personal history ... name no
      disease, :func:`is_pseudo_diagnosis`) -> visit counts per (disease, finding), and visit
      counts per disease (overall and per age band x sex) for the priors;
    * ``hsdn``: HSDN's top-10 symptoms for 4,147 MeSH diseases (unweighted);
    * ``dbpedia``: DBpedia dbo:symptom links (MeSH ids);
    * ``do``: Disease Ontology has_symptom links (DOID, symptom labels);
    * ``ddxplus``: DDXPlus's 49 pathologies and their symptom evidences (ICD-10; each evidence's
      English question read through the finding vocabulary).

Disease identity (:class:`DiseaseIndex`)
    One concept per disease, MeSH where one exists: a DOID, ICD-9-CM, ICD-10-CM or UMLS code reaches
    MeSH through DO's ``allXREFinDO.tsv``; an ICD-9-CM code with no DO xref goes through its
    ICD-10-CM mappings (the CMS GEMs as the ``icdmap`` package ships them, when installed) and then
    through its name (the ICD-9 label with "unspecified"-style qualifiers removed, e.g. 486
    "Pneumonia, organism unspecified" -> MeSH Pneumonia, which DO knows as DOID:552), then through the
    GEMs codes' parents (512.8 -> J93.11 -> J93.1, DO's pneumothorax) and the DOID most of its coded
    ICD-9 siblings share (157.9 -> pancreatic cancer, as 157.0-157.2 and 157.8).  A DOID without a MeSH
    xref whose label is a MeSH heading is that heading (DOID:1673 "pneumothorax" = MeSH Pneumothorax), so
    the NHAMCS visits and the curated sources' links meet on one disease.  What reaches no MeSH id keeps
    its DOID, else its ICD-9 code (``ICD9CM:558.9``).  Every disease keeps all its
    codes as xrefs (``ICD9CM:486``, ``DOID:552``, ``UMLS_CUI:C0032285``, ``ICD10CM:J18.9``) and names.

Finding identity (:class:`FindingIndex`)
    A :class:`~medassist.knowledge.findings.SymptomVocabulary` of MeSH C23 symptoms (plus HSDN's) with
    the lay synonyms, inverted forms and a token-bag lookup ("pain chest" = "chest pain"); an RFV code,
    DO symptom label, DBpedia symptom or DDXPlus evidence whose name the vocabulary knows becomes that
    concept, the others get their own id (``RFV:1050.0``, ``SYMP:...``, ``DDXPLUS:E_91``) whose names
    join the vocabulary.
"""
from __future__ import annotations

import csv
import importlib.util
import json
import re
import sqlite3
import zipfile
from collections import Counter, defaultdict
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

from .findings import SymptomVocabulary, extract_findings, normalize_concept_id

__all__ = [
    "SOURCES",
    "DDX_FOLDER",
    "Visit",
    "Association",
    "DiseaseIndex",
    "FindingIndex",
    "AssociationSet",
    "read_nhamcs_visits",
    "nhamcs_icd9",
    "is_pseudo_diagnosis",
    "age_band",
    "name_key",
    "build_association_set",
    "read_generic_associations",
    "ddxplus_icd10",
]

SOURCES = ("nhamcs", "hsdn", "dbpedia", "do", "ddxplus")
DDX_FOLDER = "ddx-knowledge"
FILES = {
    "nhamcs": "nhamcs_ed2010/ED2010.zip",
    "rfv_labels": "nhamcs_ed2010/rfv_labels_2010.json",
    "hsdn": "hsdn_top10/hsdn_top10_per_disease.tsv",
    "dbpedia": "dbpedia_symptom/dbpedia_data.csv",
    "do": "disease_ontology/do_has_symptom_2026_flat.tsv",
    "do_xrefs": "disease_ontology/allXREFinDO.tsv",
    "ddxplus": "ddxplus/release_conditions.json",
    "ddxplus_evidences": "ddxplus/release_evidences.json",
}
AGE_BANDS = ((0, 1), (1, 5), (5, 18), (18, 45), (45, 65), (65, 200))


def age_band(age: int | None) -> str | None:
    if age is None:
        return None
    for lo, hi in AGE_BANDS:
        if lo <= int(age) < hi:
            return f"{lo}-{hi - 1}"
    return None


# --- NHAMCS --------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Visit:
    age: int
    sex: str  # "female" | "male"
    rfvs: tuple[str, ...]  # "1050.1"
    diagnoses: tuple[str, ...]  # ICD-9-CM with its decimal point: "486", "428.0", "789.00"
    weight: float  # PATWT: national visits this record stands for
    admitted: bool


def nhamcs_icd9(raw: str) -> str | None:
    """An NHAMCS DIAG field ("486--", "4280-", "78900", "-9   ", "V991-") -> "486", "428.0", "789.00";
    None for blanks and the V99x administrative codes (left before seen, unknown, ...)."""
    code = raw.strip().rstrip("-")
    if not code or code.startswith("-") or code.startswith("V99"):
        return None
    head, tail = (code[:4], code[4:]) if code.startswith("E") else (code[:3], code[3:])
    return f"{head}.{tail}" if tail else head


def is_pseudo_diagnosis(code: str) -> bool:
    """An ICD-9-CM code that names no disease a differential could offer: the V codes ("factors influencing
    health status and contact with health services": V67.59 follow-up examination, V58.32 attention to
    sutures, V45.89 postsurgical status, V12.x personal history ...) and the E codes (external causes),
    except V22 (pregnant state), a real answer to "nausea and vomiting"."""
    return code.startswith("E") or (code.startswith("V") and not code.startswith("V22"))


def read_nhamcs_visits(path: Path | str) -> list[Visit]:
    """Every visit of ``ED2010.zip`` (a self-extracting zip; python's zipfile opens it)."""
    with zipfile.ZipFile(path) as archive:
        text = archive.read(archive.namelist()[0]).decode("latin-1")
    visits = []
    for line in text.splitlines():
        if len(line) < 294:
            continue
        rfvs = []
        for start in (70, 75, 80):
            raw = line[start:start + 5]
            if raw.strip().isdigit() and not raw.startswith("-"):
                rfvs.append(f"{raw[:4]}.{raw[4]}")
        diagnoses = [d for d in (nhamcs_icd9(line[s:s + 5]) for s in (102, 107, 112)) if d]
        visits.append(Visit(age=int(line[3:6]), sex="female" if line[20] == "1" else "male",
                            rfvs=tuple(dict.fromkeys(rfvs)), diagnoses=tuple(dict.fromkeys(diagnoses)),
                            weight=float(line[288:294]), admitted=line[259] == "1"))
    return visits


# --- disease identity ----------------------------------------------------------------------------------------

_QUALIFIERS = re.compile(
    r",?\s*\b(?:organism unspecified|unspecified(?: site| type| organism)?|site not specified|not elsewhere classified|"
    r"nec|nos|without mention of (?:complication|obstruction|hemorrhage)|initial episode of care|"
    r"episode of care unspecified|not stated as uncontrolled|acute or unspecified|of unspecified site)\b",
    re.IGNORECASE)


def _clean_disease_name(name: str) -> str:
    name = re.sub(r"\[[^\]]*\]|\([^)]*\)", " ", name)
    name = _QUALIFIERS.sub(" ", name)
    name = re.sub(r"\s+", " ", name).strip(" ,;")
    return name


def _name_key(name: str) -> tuple[str, ...]:
    """Order-free key of a name: "Pain, Chest" == "chest pain" == "pain chest"; plural -s dropped."""
    words = re.findall(r"[a-z0-9]+", name.lower())
    out = []
    for w in words:
        if w in {"of", "the", "a", "an", "in", "with", "nos", "s"}:
            continue
        if len(w) > 4 and w.endswith("s") and not w.endswith(("ss", "us", "is")):
            w = w[:-1]
        out.append(w)
    return tuple(sorted(out))


name_key = _name_key  # public: the evaluation matches disease names with it


@dataclass
class Disease:
    id: str
    name: str
    xrefs: set[str] = field(default_factory=set)
    synonyms: set[str] = field(default_factory=set)


class DiseaseIndex:
    """Disease codes from any vocabulary -> one canonical disease (MeSH where one exists)."""

    def __init__(self, folder: Path, mesh_folder: Path | None = None) -> None:
        self.diseases: dict[str, Disease] = {}
        self._by_xref: dict[str, str] = {}  # any code -> canonical id
        self._by_name: dict[tuple[str, ...], str] = {}
        self.doid_xrefs: dict[str, set[str]] = defaultdict(set)
        self.doid_label: dict[str, str] = {}
        self._xref_doids: dict[str, set[str]] = defaultdict(set)
        with open(Path(folder) / FILES["do_xrefs"], encoding="utf-8") as fh:
            for row in csv.DictReader(fh, delimiter="\t"):
                doid, label, xref = (v.strip('"') for v in (row["id"], row["label"], row["xref"]))
                xref = xref.replace("UMLS_CUI:", "UMLS:")
                if xref.startswith("SNOMEDCT"):
                    xref = "SNOMEDCT:" + xref.split(":", 1)[1]
                self.doid_label[doid] = label
                self.doid_xrefs[doid].add(xref)
                self._xref_doids[xref].add(doid)
        self.mesh_names: dict[str, str] = {}
        if mesh_folder is not None and (Path(mesh_folder) / "tree-numbers.tsv").is_file():
            with open(Path(mesh_folder) / "tree-numbers.tsv", encoding="utf-8") as fh:
                for row in csv.DictReader(fh, delimiter="\t"):
                    if row["mesh_tree_number"].startswith(("C", "F03")):
                        self.mesh_names[f"MESH:{row['mesh_id']}"] = row["mesh_name"]
        for mesh_id, name in self.mesh_names.items():
            self._by_name.setdefault(_name_key(name), mesh_id)
        for doid, label in self.doid_label.items():
            self._by_name.setdefault(_name_key(label), doid)
        self._icd9 = _Icd9Names()
        self._icd9_categories: dict[str, list[set[str]]] | None = None

    # canonical ids
    def _mesh_of_doid(self, doid: str) -> str | None:
        meshes = sorted(x for x in self.doid_xrefs.get(doid, ()) if x.startswith("MESH:"))
        return meshes[0] if meshes else None

    def _register(self, canonical: str, name: str, xrefs: Iterable[str]) -> str:
        disease = self.diseases.get(canonical)
        if disease is None:
            disease = self.diseases[canonical] = Disease(canonical, name)
            if canonical.startswith("MESH:") and canonical in self.mesh_names:
                disease.name = self.mesh_names[canonical]
        disease.synonyms.add(name)
        for xref in xrefs:
            if xref != canonical:
                disease.xrefs.add(xref)
            self._by_xref.setdefault(xref, canonical)
        # the DOIDs of a MeSH disease (and their codes) are its xrefs too
        for doid in list(disease.xrefs if canonical.startswith("MESH:") else []):
            if doid.startswith("DOID:"):
                disease.xrefs.update(x for x in self.doid_xrefs.get(doid, ()) if not x.startswith(("MIM", "ORDO")))
        return canonical

    def _via_doid(self, doids: Iterable[str]) -> tuple[str, str, set[str]] | None:
        doids = sorted(doids)
        for doid in doids:  # a DOID with a MeSH id first
            mesh = self._mesh_of_doid(doid)
            if mesh:
                return mesh, self.mesh_names.get(mesh, self.doid_label.get(doid, doid)), {doid, *self.doid_xrefs[doid]}
        for doid in doids:  # a DOID without a MeSH xref whose label is a MeSH heading (DOID:1673 "pneumothorax")
            mesh = self._by_name.get(_name_key(self.doid_label.get(doid, "")))
            if mesh and mesh.startswith("MESH:"):
                return mesh, self.mesh_names[mesh], {doid, *self.doid_xrefs.get(doid, ())}
        if doids:
            return doids[0], self.doid_label.get(doids[0], doids[0]), {doids[0], *self.doid_xrefs.get(doids[0], ())}
        return None

    def from_mesh(self, mesh_id: str, name: str, extra: Iterable[str] = ()) -> str:
        mesh_id = normalize_concept_id(mesh_id)
        known = self._by_xref.get(mesh_id)
        if known:
            return self._register(known, name, [mesh_id, *extra])
        doids = self._xref_doids.get(mesh_id, set())
        return self._register(mesh_id, name, [mesh_id, *extra, *doids,
                                             *(x for d in doids for x in self.doid_xrefs[d] if not x.startswith("MESH"))])

    def from_doid(self, doid: str, name: str) -> str:
        known = self._by_xref.get(doid)
        if known:
            return self._register(known, name, [doid])
        hit = self._via_doid([doid])
        canonical, cname, xrefs = hit if hit else (doid, name, {doid})
        return self._register(canonical, cname, xrefs | {doid})

    def from_name(self, name: str) -> str | None:
        key = _name_key(_clean_disease_name(name))
        target = self._by_name.get(key)
        if target is None:
            return None
        return self.from_doid(target, name) if target.startswith("DOID:") else self.from_mesh(target, name)

    def from_icd10(self, codes: Iterable[str], name: str, extra: Iterable[str] = ()) -> str:
        codes = [c.strip().upper() for c in codes if c.strip()]
        xrefs = {f"ICD10CM:{c}" for c in codes} | set(extra)
        for code in codes:  # exact code, then its category (J18.9 -> J18)
            for candidate in (code, code.split(".")[0]):
                doids = self._xref_doids.get(f"ICD10CM:{candidate}")
                if doids:
                    canonical, cname, more = self._via_doid(doids)
                    return self._register(canonical, cname, xrefs | more)
        by_name = self.from_name(name)
        if by_name:
            return self._register(by_name, name, xrefs)
        return self._register(f"ICD10CM:{codes[0]}" if codes else f"NAME:{name}", name, xrefs)

    def from_icd9(self, code: str) -> str:
        """An ICD-9-CM code -> its canonical disease (see the module docstring for the order)."""
        xref = f"ICD9CM:{code}"
        known = self._by_xref.get(xref)
        if known:
            return known
        label, icd10 = self._icd9.lookup(code)
        icd10 = _identity_mappings(icd10)
        xrefs = {xref} | {f"ICD10CM:{c}" for c, _ in icd10}
        for n in range(len(code), 2, -1):
            if code[:n] in ICD9_TO_MESH and not code[:n].endswith("."):
                mesh, name = ICD9_TO_MESH[code[:n]]
                return self.from_mesh(f"MESH:{mesh}", name, xrefs)
        doids = self._xref_doids.get(xref) or set()
        if not doids:
            cleaned = _clean_disease_name(label) if label else ""
            target = self._by_name.get(_name_key(cleaned)) if cleaned else None
            if target and target.startswith("MESH:"):
                return self._register(target, label, xrefs | set(self._xref_doids.get(target, ())))
            if target:
                doids = {target}
        if not doids:
            for c, _ in icd10:
                doids = self._xref_doids.get(f"ICD10CM:{c}") or set()
                if doids:
                    break
        if not doids and label:  # "Acute pericarditis, unspecified" -> Pericarditis, "Acute tonsillitis" -> Tonsillitis
            target = self._by_name.get(_name_key(_BROAD_QUALIFIERS.sub(" ", _clean_disease_name(label))))
            if target and target.startswith("MESH:"):
                return self._register(target, label, xrefs | set(self._xref_doids.get(target, ())))
            if target:
                doids = {target}
        if not doids:  # the GEMs code's parents: J93.11 "Primary spontaneous pneumothorax" -> J93.1 (DO pneumothorax)
            doids = self._icd10_parent_doids(c for c, _ in icd10)
        if not doids and "." in code:  # most of its coded siblings: 157.9 -> pancreatic cancer (157.0-157.2, 157.8)
            doids = self._icd9_sibling_doids(code)
        if not doids and "." in code:  # the 3-character category's DO entry
            doids = self._xref_doids.get(f"ICD9CM:{code.split('.')[0]}") or set()
        if doids:
            canonical, cname, more = self._via_doid(doids)
            return self._register(canonical, cname, xrefs | more)
        return self._register(xref, label or f"ICD-9-CM {code}", xrefs)

    def canonical(self, code: str) -> str | None:
        return self._by_xref.get(code) or (code if code in self.diseases else None)

    def _icd10_parent_doids(self, codes: Iterable[str]) -> set[str]:
        """DOIDs of the nearest parent (one character shorter at a time, down to the 3-character category)
        of any of ``codes`` that DO codes."""
        codes = [c.replace(".", "") for c in codes]
        for length in range(max((len(c) for c in codes), default=0) - 1, 2, -1):
            for c in codes:
                if len(c) > length:
                    parent = c[:length]
                    parent = f"{parent[:3]}.{parent[3:]}" if len(parent) > 3 else parent
                    doids = self._xref_doids.get(f"ICD10CM:{parent}")
                    if doids:
                        return set(doids)
        return set()

    def _icd9_sibling_doids(self, code: str) -> set[str]:
        """The DOID that at least half of the DO-coded ICD-9-CM codes of ``code``'s category share (an
        unspecified ".9" code is the disease its specified siblings are), else none."""
        if self._icd9_categories is None:
            self._icd9_categories = defaultdict(list)
            for xref, doids in self._xref_doids.items():
                if xref.startswith("ICD9CM:") and "." in xref:
                    self._icd9_categories[xref[7:].split(".")[0]].append(doids)
        siblings = self._icd9_categories.get(code.split(".")[0], [])
        votes = Counter(d for doids in siblings for d in doids)
        if not votes:
            return set()
        doid, n = max(sorted(votes.items()), key=lambda kv: kv[1])
        return {doid} if n * 2 >= len(siblings) and n >= 2 else set()


# Leading qualifiers an ICD-9 label adds to a disease MeSH names without them (tried after the full name).
_BROAD_QUALIFIERS = re.compile(r"^\s*(?:(?:acute|chronic|subacute|other|unspecified)\s+)+", re.IGNORECASE)
MAX_IDENTITY_MAPPINGS = 8  # an ICD-9 code the GEMs spread over more ICD-10 codes is a grab bag, not one disease


def _identity_mappings(icd10: list[tuple[str, str]]) -> list[tuple[str, str]]:
    """The GEMs ICD-10-CM codes that name the same disease as an ICD-9-CM code: not the encounter variants
    (7th character D "subsequent encounter", S "sequela"), and none when there are many (V58.89 "Other
    specified aftercare" maps to ~1,800 injury codes; as xrefs they made aftercare "match" a rib fracture)."""
    kept = [(c, d) for c, d in icd10 if not (len(c.replace(".", "")) == 7 and c[-1] in "DS")]
    return kept if len(kept) <= MAX_IDENTITY_MAPPINGS else []


class _Icd9Names:
    """ICD-9-CM labels and ICD-10-CM mappings (CMS GEMs) from the ``icdmap`` package's SQLite file, when
    installed; without it every lookup is ("", [])."""

    def __init__(self) -> None:
        self._rows: dict[str, tuple[str, list[tuple[str, str]]]] = {}
        spec = importlib.util.find_spec("icdmap")
        if spec is None or not spec.submodule_search_locations:
            return
        db = Path(list(spec.submodule_search_locations)[0]) / "data" / "icd_mapping.db"
        if not db.is_file():
            return
        with sqlite3.connect(f"file:{db}?mode=ro", uri=True) as conn:
            rows = conn.execute('SELECT "ICD-9", "ICD-9 English", "ICD-10", "ICD-10 English" FROM icd_mapping')
            for icd9, label9, icd10, label10 in rows:
                entry = self._rows.setdefault(icd9, (label9 or "", []))
                if icd10 and icd10 != "NoDx":
                    entry[1].append((icd10, label10 or ""))

    @property
    def available(self) -> bool:
        return bool(self._rows)

    def lookup(self, code: str) -> tuple[str, list[tuple[str, str]]]:
        if code in self._rows:
            return self._rows[code]
        # a 3-character NHAMCS code ("486") or one with fewer digits than the table's
        for candidate in (code + ".0", code + ".9", code + "0", code + "9", code[:-1], code[:-2]):
            if candidate in self._rows:
                label, icd10 = self._rows[candidate]
                return label, icd10
        return "", []


# Where the crosswalk reaches a too specific or a wrong concept for a common ED/inpatient diagnosis
# (DO files 434.91 under "cerebral artery occlusion", 034.0 under scarlet fever, has no xref for 486 ...),
# the ICD-9-CM code (a prefix: "434" covers 434.x) names its MeSH heading here.  Longest prefix wins.
ICD9_TO_MESH: dict[str, tuple[str, str]] = {
    "430": ("D020521", "Stroke"), "431": ("D020521", "Stroke"), "433": ("D020521", "Stroke"),
    "434": ("D020521", "Stroke"), "436": ("D020521", "Stroke"), "435": ("D002546", "Ischemic Attack, Transient"),
    "410": ("D009203", "Myocardial Infarction"), "411.1": ("D000789", "Angina, Unstable"),
    "038": ("D018805", "Sepsis"), "995.91": ("D018805", "Sepsis"), "995.92": ("D018805", "Sepsis"),
    "785.52": ("D012772", "Shock, Septic"), "428": ("D006333", "Heart Failure"),
    "491.2": ("D029424", "Pulmonary Disease, Chronic Obstructive"),
    "492": ("D029424", "Pulmonary Disease, Chronic Obstructive"),
    "496": ("D029424", "Pulmonary Disease, Chronic Obstructive"),
    "415.1": ("D011655", "Pulmonary Embolism"), "453.4": ("D020246", "Venous Thrombosis"),
    "681": ("D002481", "Cellulitis"), "682": ("D002481", "Cellulitis"),
    "599.0": ("D014552", "Urinary Tract Infections"), "590": ("D011704", "Pyelonephritis"),
    "480": ("D011014", "Pneumonia"), "481": ("D011014", "Pneumonia"), "482": ("D011014", "Pneumonia"),
    "485": ("D011014", "Pneumonia"), "486": ("D011014", "Pneumonia"),
    "250": ("D003924", "Diabetes Mellitus, Type 2"), "250.1": ("D016883", "Diabetic Ketoacidosis"),
    "034.0": ("D010612", "Pharyngitis"), "462": ("D010612", "Pharyngitis"),
    "465": ("D012141", "Respiratory Tract Infections"), "079.99": ("D014777", "Virus Diseases"),
    "780.6": ("D005334", "Fever"), "276.5": ("D003681", "Dehydration"), "338": ("D010146", "Pain"),
    "564.0": ("D003248", "Constipation"), "780.97": ("D003221", "Confusion"), "692": ("D003872", "Dermatitis"),
    "780.39": ("D012640", "Seizures"), "345": ("D004827", "Epilepsy"), "493": ("D001249", "Asthma"),
    "300.0": ("D001008", "Anxiety Disorders"), "300.01": ("D016584", "Panic Disorder"),
    "995.0": ("D000707", "Anaphylaxis"), "995.6": ("D000707", "Anaphylaxis"), "427.31": ("D001281", "Atrial Fibrillation"),
    "584": ("D058186", "Acute Kidney Injury"), "577.0": ("D010195", "Pancreatitis"),
    "574": ("D002769", "Cholelithiasis"), "540": ("D001064", "Appendicitis"), "562.11": ("D004238", "Diverticulitis"),
    "578": ("D006471", "Gastrointestinal Hemorrhage"), "592": ("D007669", "Kidney Calculi"),
    "594": ("D014545", "Urinary Calculi"), "558.9": ("D005759", "Gastroenteritis"), "008.8": ("D005759", "Gastroenteritis"),
    "009": ("D005759", "Gastroenteritis"), "487": ("D007251", "Influenza, Human"), "466": ("D001991", "Bronchitis"),
    "490": ("D001991", "Bronchitis"), "473": ("D012852", "Sinusitis"), "461": ("D012852", "Sinusitis"),
    "382": ("D010033", "Otitis Media"), "372.3": ("D003231", "Conjunctivitis"), "372.0": ("D003231", "Conjunctivitis"),
    "780.2": ("D013575", "Syncope"), "780.4": ("D004244", "Dizziness"), "784.0": ("D006261", "Headache"),
    "346": ("D008881", "Migraine Disorders"), "786.5": ("D002637", "Chest Pain"), "789.0": ("D015746", "Abdominal Pain"),
    "787.0": ("D014839", "Vomiting"), "787.91": ("D003967", "Diarrhea"), "724.2": ("D017116", "Low Back Pain"),
    "724.5": ("D001416", "Back Pain"), "305.0": ("D000437", "Alcoholism"), "303": ("D000437", "Alcoholism"),
    "401": ("D006973", "Hypertension"), "285.9": ("D000740", "Anemia"), "276.8": ("D007008", "Hypokalemia"),
    "251.2": ("D007003", "Hypoglycemia"), "786.0": ("D004417", "Dyspnea"), "786.2": ("D003371", "Cough"),
    "311": ("D003866", "Depressive Disorder"), "296": ("D001714", "Bipolar Disorder"), "295": ("D012559", "Schizophrenia"),
    "780.79": ("D005221", "Fatigue"), "782.1": ("D012877", "Skin Manifestations"), "995.3": ("D006967", "Hypersensitivity"),
    "708": ("D014581", "Urticaria"), "719.4": ("D018771", "Arthralgia"), "274": ("D006073", "Gout"),
    "311.0": ("D003866", "Depressive Disorder"), "648": ("D011248", "Pregnancy Complications"),
    "640": ("D006473", "Obstetric Labor Complications"), "532": ("D013276", "Peptic Ulcer"), "531": ("D013276", "Peptic Ulcer"),
    "535": ("D005756", "Gastritis"), "530.81": ("D005764", "Gastroesophageal Reflux"),
    "614": ("D000292", "Pelvic Inflammatory Disease"),
    "616.1": ("D014627", "Vaginitis"), "112.1": ("D002181", "Candidiasis, Vulvovaginal"), "099.4": ("D014526", "Urethritis"),
    "098": ("D006069", "Gonorrhea"), "604": ("D004823", "Epididymitis"), "601": ("D011472", "Prostatitis"),
    "595": ("D003556", "Cystitis"), "410.9": ("D009203", "Myocardial Infarction"), "414": ("D003324", "Coronary Artery Disease"),
    "413": ("D000787", "Angina Pectoris"), "427.0": ("D013617", "Tachycardia, Paroxysmal"),
    "780.1": ("D006212", "Hallucinations"),
    "518.81": ("D012131", "Respiratory Insufficiency"), "799.02": ("D000860", "Hypoxia"), "428.0": ("D006333", "Heart Failure"),
}

# Clinical phrases the MeSH 2015 copy (no entry terms) and the RFV labels do not name, each with why it is
# safe: phrase -> the finding name it means.  In a list of symptoms "frequency" is urinary frequency.
CLINICAL_SYNONYMS: dict[str, str] = {
    "urinary frequency": "Frequency and urgency of urination", "frequency": "Frequency and urgency of urination",
    "frequent urination": "Frequency and urgency of urination", "urgency": "Frequency and urgency of urination",
    "urinary urgency": "Frequency and urgency of urination", "polyuria": "Polyuria",
    "unilateral weakness": "Hemiplegia", "hemiparesis": "Hemiplegia", "one-sided weakness": "Hemiplegia",
    "weakness of one side": "Hemiplegia", "arm weakness": "Hemiplegia", "facial droop": "Facial Paralysis",
    "slurred speech": "Dysarthria", "altered mental status": "Confusion", "mental status change": "Confusion",
    "leg edema": "Edema", "pedal edema": "Edema", "ankle edema": "Edema", "peripheral edema": "Edema",
    "lower extremity edema": "Edema", "bilateral leg swelling": "Edema",
    "diaphoresis": "Excessive sweating", "sweats": "Excessive sweating", "sweating": "Excessive sweating",
    "orthopnoea": "Orthopnea", "pnd": "Dyspnea, Paroxysmal",
    "paroxysmal nocturnal dyspnea": "Dyspnea, Paroxysmal", "productive cough": "Cough", "sputum": "Excessive sputum",
    "suprapubic pain": "Pelvic Pain", "suprapubic tenderness": "Pelvic Pain", "flank pain": "Side pain",
    "calf pain": "Leg pain", "leg pain": "Leg pain", "skin redness": "Erythema", "redness": "Erythema",
    "warmth": "Feeling hot", "palpitation": "RFV:1260.0", "palpitations": "RFV:1260.0", "sob": "Dyspnea", "dyspnoea": "Dyspnea",
    # how patients and history questions say it (DDXPlus questions of the development seeds showed the gaps);
    # a target "RFV:<code>" is the reason for visit that code was merged into
    "difficulty swallowing": "Difficulty in swallowing", "trouble swallowing": "Difficulty in swallowing",
    "dysphagia": "Difficulty in swallowing", "hoarse": "Hoarseness", "hoarse voice": "Hoarseness",
    "loss of voice": "Hoarseness", "sense of smell": "Olfaction Disorders", "loss of smell": "Olfaction Disorders",
    "anosmia": "Olfaction Disorders", "runny nose": "rhinorrhea", "nasal discharge": "rhinorrhea",
    "high pitched sound when breathing": "stridor", "stop breathing": "Apnea",
    "irregular heartbeat": "RFV:1260.3", "beating irregularly": "RFV:1260.3", "beating very irregularly": "RFV:1260.3",
    "irregular pulse": "RFV:1260.3", "racing heart": "RFV:1260.1", "heart racing": "RFV:1260.1",
    "difficulty speaking": "Speech Disorders", "difficulty articulating words": "Speech Disorders",
    "sore throat": "RFV:1455.1", "throat pain": "RFV:1455.2", "ear pain": "Earache", "nocturia": "RFV:1645.1",
    "decrease in appetite": "Anorexia", "lost your appetite": "Anorexia", "swelling": "Edema", "swollen": "Edema",
    "bruising": "Bruise", "pale stools": "acholic stool", "flushed": "Flushing",
    "stool frequency": "Diarrhea", "frequent stools": "Diarrhea", "swollen lymph nodes": "RFV:1275.1",
    "enlarged lymph nodes": "RFV:1275.1", "painful lymph nodes": "RFV:1275.1", "swollen glands": "RFV:1275.1",
    "lymph nodes": "RFV:1275.1", "bloated": "RFV:1565.1", "bloating": "RFV:1565.1", "distended": "RFV:1565.1",
    "melena": "RFV:1580.1", "black stools": "RFV:1580.1", "stools that were black": "RFV:1580.1",
    "blood in stool": "RFV:1580.1", "blood in the stool": "RFV:1580.1", "blood in your stool": "RFV:1580.1",
    "thrown up blood": "Hematemesis", "threw up blood": "Hematemesis", "pale skin": "RFV:1280.2",
    "paler": "RFV:1280.2", "pallor": "RFV:1280.2", "loss of consciousness": "Syncope",
    "lose consciousness": "Syncope", "lost consciousness": "Syncope", "gained weight": "Weight Gain",
    "excessive tears": "RFV:1310.2", "watery eyes": "RFV:1310.2",
    "worse when lying down": "Orthopnea", "paralysis on one side of the face": "Facial Paralysis",
    "weakness on one side of the face": "Facial Paralysis",
    "weakness or paralysis on one side of the face": "Facial Paralysis",
    # more of how history questions say it: without these the words inside the phrase matched a vaguer
    # finding ("redness" -> Erythema, "swollen" -> Edema, "weakness" -> Asthenia) or none at all
    "acid reflux": "Heartburn", "burning sensation that starts in your stomach": "Heartburn",
    "rectal bleeding": "hematochezia", "bright red blood": "hematochezia", "blood clots in your stool": "hematochezia",
    "blood clots in the stool": "hematochezia",
    "red eye": "bloodshot eye", "red eyes": "bloodshot eye", "eye redness": "bloodshot eye",
    "redness in one or both eyes": "bloodshot eye", "itchy eyes": "RFV:1320.2", "eye itching": "RFV:1320.2",
    "itching in one or both eyes": "RFV:1320.2", "fatigued": "Fatigue", "non-restful sleep": "Disturbances of sleep",
    "irritable": "irritability", "drooling": "Drooling", "more saliva": "Drooling", "excessive saliva": "Drooling",
    "drooping eyelid": "ptosis", "droopy eyelid": "ptosis", "raising one or both eyelids": "ptosis",
    "heavy periods": "Heavy menstrual bleeding", "heavy menstruation": "Heavy menstrual bleeding",
    "abundant or very long menstruation": "Heavy menstrual bleeding",
    "pain on deep breathing": "pleuritic chest pain", "pain when breathing in": "pleuritic chest pain",
    "pain that is increased when you breathe in deeply": "pleuritic chest pain",
    "swollen or painful lymph nodes": "RFV:1275.1", "swollen due to pressure from inside": "RFV:1565.1",
    "weakness in both arms": "Muscle Weakness", "weakness in both legs": "Muscle Weakness",
}

# A finding that also counts as others (naive Bayes over both): what NHAMCS codes a reason as, or the
# general symptom a qualified one is.  name -> names.
IMPLIES: dict[str, tuple[str, ...]] = {
    "Hemiplegia": ("Weakness (neurologic)", "Paresis"), "Facial Paralysis": ("Weakness (neurologic)",),
    "Aphasia": ("Disorders of speech",), "Dysarthria": ("Disorders of speech",),
    "Orthopnea": ("Dyspnea",), "Dyspnea, Paroxysmal": ("Dyspnea",), "Pelvic Pain": ("Lower abdominal pain",),
    "Frequency and urgency of urination": ("Polyuria",), "Hemoptysis": ("Cough",),
    "Excessive sputum": ("Cough",), "Confusion": ("Disorientation",),
    # the reason for visit NHAMCS codes a specific finding under (a target "RFV:<code>" is the concept that
    # code was merged into), so ED visit evidence reaches it: 1535.0 "Heartburn and indigestion", 1580.1
    # "Blood in stool", 1330.1 "Abnormal color" of the eyes, 1740.0 "Irregularity of menstrual flow"
    "Heartburn": ("RFV:1535.0",), "hematochezia": ("RFV:1580.1",), "bloodshot eye": ("RFV:1330.1",),
    "Heavy menstrual bleeding": ("RFV:1740.0",),
}
NEW_FINDINGS = ("Orthopnea",)  # named by IMPLIES/CLINICAL_SYNONYMS, in no source: FINDING:<name>


# --- finding identity ----------------------------------------------------------------------------------------

_RFV_NOISE = re.compile(r"\s*\((?:not referable|excludes|under)[^)]*\)?|\band related symptoms\b|\bsymptoms of\b|"
                        r"\bNEC\b|\bNOS\b|,\s*$", re.IGNORECASE)
_GENERIC = {"pain", "itching", "bleeding", "swelling", "allergy", "infection", "discharge", "mass", "lump",
            "burning", "stinging", "strain", "deviation", "other", "abnormal color", "injury", "redness", "soreness",
            "pressure", "tightness"}


class FindingIndex:
    """Finding names and codes from every source -> one finding concept (MeSH where one exists)."""

    def __init__(self, mesh_symptoms: dict[str, str]) -> None:
        self.vocabulary = SymptomVocabulary.from_names(mesh_symptoms)
        self._bags: dict[tuple[str, ...], str] = {}
        for cid, name in list(self.vocabulary.names.items()):
            self._bags.setdefault(_name_key(name), cid)
        self.codes: dict[str, set[str]] = defaultdict(set)  # canonical id -> source codes merged into it
        self.synonyms: dict[str, set[str]] = defaultdict(set)

    @property
    def names(self) -> dict[str, str]:
        return self.vocabulary.names

    def lookup(self, name: str) -> str | None:
        hit = self.vocabulary.lookup(name)
        if hit:
            return hit[0]
        return self._bags.get(_name_key(name))

    def add(self, code: str, name: str, *, alternatives: Iterable[str] = (), text: bool = True) -> str:
        """A source's finding (``code`` with ``name``) -> its canonical id, merged into a known concept
        when its name (or an alternative name) is one; else a new concept ``code`` whose name joins
        the text vocabulary (unless ``text`` is False: a name too generic to find in free text)."""
        for candidate in (name, *alternatives):
            cid = self.lookup(candidate) if candidate else None
            if cid:
                if text and self.vocabulary.lookup(candidate) is None:  # joined by its word bag: findable as text
                    self.vocabulary.add(cid, candidate, 1)
                break
        else:
            cid = code
            self.vocabulary.names.setdefault(cid, name)
            if text:
                self.vocabulary.add_concept(cid, name)
                for alt in alternatives:
                    self.vocabulary.add(cid, alt, 1)
                self._bags.setdefault(_name_key(name), cid)
                # DBpedia's "Ptosis (eyelid)" is DO's "ptosis": a later source's bare name joins it
                bare = re.sub(r"\s*\([^)]*\)", "", name).strip()
                if bare and bare != name:
                    self._bags.setdefault(_name_key(bare), cid)
        self.codes[cid].add(code)
        if name and name.lower() != self.vocabulary.names.get(cid, "").lower():
            self.synonyms[cid].add(name)
        return cid

    def add_rfv(self, code: str, label: str, parent_label: str | None) -> str:
        """An NHAMCS reason for visit.  Only the symptom and disease modules (1xxx, 2xxx) name findings a
        text can state; a body-site heading ("Symptoms of face, NEC" -> "face"), an injury-module site
        (5110.0 "Back": a back injury) or a generic item ("Pain" under eye) keeps its own id, named with its
        context and not read in free text.  A label's later comma parts are alternative names only when
        they name a finding themselves ("Side pain, flank pain"), not when they qualify the first
        ("Excessive urination, night"; "Cancer, breast")."""
        main = _RFV_NOISE.sub(" ", label)
        alternatives = [m.strip() for m in re.findall(r"\(([^)]*)\)", main)]
        main = re.sub(r"\([^)]*\)?", " ", main)
        parts = [p.strip() for p in re.split(r",| - ", main) if p.strip()]
        name = parts[0] if parts else label.strip()
        alternatives += [p for p in parts[1:] if not _is_qualifier(p)]
        qualified = [p for p in parts[1:] if _is_qualifier(p) and p.lower() not in _SITE_UNSPECIFIED]
        if code[0] not in "12" or _RFV_SITE_HEADING.match(label):  # named "Head (...)" like the generic items
            head = _RFV_MODULES.get(code[0], "Symptoms")
            site = _RFV_SITE_HEADING.sub("", main) if code[0] in "12" else main
            site = ", ".join(p.strip() for p in re.split(r",| - ", site) if p.strip()).lower()
            return self.add(f"RFV:{code}", f"{head} ({site or label.strip().lower()})", text=False)
        if qualified:  # "Excessive urination, night" is not "excessive urination"
            return self.add(f"RFV:{code}", f"{name} ({', '.join(qualified).lower()})", text=False)
        generic = name.lower() in _GENERIC or len(name) < 4
        if generic and parent_label:
            context = re.sub(r"\([^)]*\)?", " ", _RFV_NOISE.sub(" ", parent_label)).strip(" ,")
            name = f"{name} ({context.lower()})"
            return self.add(f"RFV:{code}", name, text=False)
        return self.add(f"RFV:{code}", name, alternatives=[a for a in alternatives
                                                           if len(a) > 3 and a.lower() not in _GENERIC])

    def by_code(self, code: str) -> str | None:
        """The canonical finding a source code (``RFV:1455.1``) was merged into."""
        for cid, codes in self.codes.items():
            if code in codes:
                return cid
        return None


# A comma part of an RFV label that qualifies the first part rather than naming a finding.
_SITE_UNSPECIFIED = {"site unspecified", "multiple or unspecified sites", "unspecified", "nos",
                     "specified site not referable to a specific body", "other and unspecified", "all types"}
_QUALIFIER_WORDS = {"night", "female", "male", "abnormal", "concerns", "internal", "eating", "color", "shape",
                    "breast", "hand", "foot", "stomach"}


def _is_qualifier(part: str) -> bool:
    low = part.lower().strip(' "')
    return (low in _SITE_UNSPECIFIED or low in _QUALIFIER_WORDS or low.startswith(("and ", "or "))
            or low.endswith((" of", " with", " during", " in", " or")) or len(low) < 3
            or re.fullmatch(r"[a-z ]+ tract|[a-z ]+ tissues", low) is not None)


# NCHS RFV modules other than symptoms (1) and diseases (2): what a reason for visit of module n is about.
_RFV_MODULES = {"3": "Test or screening", "4": "Treatment", "5": "Injury", "6": "Test result", "7": "Administrative",
                "8": "Uncodable"}
# "Symptoms of face, NEC", "Symptoms referable to tongue", "Other symptoms of nose": a body site, not a finding.
_RFV_SITE_HEADING = re.compile(r"^\s*(?:other\s+(?:and\s+unspecified\s+)?)?symptoms?\s+(?:of|referable\s+to)\b",
                               re.IGNORECASE)


# --- association set -----------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Association:
    disease: str
    finding: str
    source: str
    weight: float  # the source's strength: P(finding | disease) for nhamcs, 1 for presence-only sources
    count: int  # evidence count: visits (nhamcs), 1 for a curated link


@dataclass
class AssociationSet:
    diseases: dict[str, Disease]
    finding_names: dict[str, str]
    finding_codes: dict[str, set[str]]
    finding_synonyms: dict[str, set[str]]
    associations: list[Association]
    implies: dict[str, list[str]] = field(default_factory=dict)  # finding -> findings it also counts as
    visits: dict[str, dict] = field(default_factory=dict)  # disease -> {"n", "weighted", "strata": {"45-64|male": n}}
    total_visits: int = 0
    notes: list[str] = field(default_factory=list)
    vocabulary: SymptomVocabulary | None = None

    def counts(self) -> dict[str, int]:
        by_source = Counter(a.source for a in self.associations)
        return {"diseases": len(self.diseases), "findings": len(self.finding_names),
                "associations": len(self.associations), **{f"links_{s}": n for s, n in sorted(by_source.items())}}


def _mesh_symptoms(mesh_folder: Path, folder: Path) -> dict[str, str]:
    names: dict[str, str] = {}
    path = Path(mesh_folder) / "symptoms.tsv"
    if path.is_file():
        with open(path, encoding="utf-8") as fh:
            for row in csv.DictReader(fh, delimiter="\t"):
                names[f"MESH:{row['mesh_id']}"] = row["mesh_name"]
    with open(Path(folder) / FILES["hsdn"], encoding="utf-8") as fh:
        for row in csv.DictReader(fh, delimiter="\t"):
            names.setdefault(f"MESH:{row['symptom_mesh_id']}", row["symptom_mesh_term"])
    return names


def build_association_set(folder: Path | str, *, mesh_folder: Path | str | None = None,
                          sources: Iterable[str] = SOURCES, visits: list[Visit] | None = None) -> AssociationSet:
    """Read every source in ``sources`` from the ddx-knowledge ``folder`` and join them.  ``visits``
    replaces the NHAMCS file's visits (the evaluation passes one half)."""
    folder = Path(folder)
    mesh_folder = Path(mesh_folder) if mesh_folder else folder.parent / "mesh-2015"
    sources = tuple(sources)
    diseases = DiseaseIndex(folder, mesh_folder)
    findings = FindingIndex(_mesh_symptoms(mesh_folder, folder))
    links: dict[tuple[str, str, str], list[float]] = {}
    notes: list[str] = []

    def link(disease: str, finding: str, source: str, weight: float = 1.0, count: int = 1) -> None:
        key = (disease, finding, source)
        if key in links:
            links[key][0] = max(links[key][0], weight)
            links[key][1] += count
        else:
            links[key] = [weight, count]

    # RFV vocabulary first: NHAMCS findings are what ED patients say
    rfv_labels = json.loads((folder / FILES["rfv_labels"]).read_text(encoding="utf-8"))
    rfv_ids: dict[str, str] = {}
    for code, label in rfv_labels.items():
        parent = rfv_labels.get(code.split(".")[0] + ".0") if not code.endswith(".0") else None
        rfv_ids[code] = findings.add_rfv(code, label, parent)
    add_clinical_synonyms(findings)

    visit_counts: dict[str, dict] = {}
    total = 0
    if "nhamcs" in sources:
        visits = visits if visits is not None else read_nhamcs_visits(folder / FILES["nhamcs"])
        pair_visits: Counter = Counter()
        for v in visits:
            dxs = {diseases.from_icd9(d) for d in v.diagnoses if not is_pseudo_diagnosis(d)}
            if not dxs:
                continue
            total += 1
            fs = {rfv_ids.get(r) or findings.add(f"RFV:{r}", f"reason for visit {r}", text=False) for r in v.rfvs}
            stratum = f"{age_band(v.age)}|{v.sex}"
            for d in dxs:
                entry = visit_counts.setdefault(d, {"n": 0, "weighted": 0.0, "admitted": 0, "strata": Counter()})
                entry["n"] += 1
                entry["weighted"] += v.weight
                entry["admitted"] += int(v.admitted)
                entry["strata"][stratum] += 1
                for f in fs:
                    pair_visits[(d, f)] += 1
        for (d, f), n in pair_visits.items():
            link(d, f, "nhamcs", n / visit_counts[d]["n"], n)
        for entry in visit_counts.values():
            entry["strata"] = dict(entry["strata"])
        notes.append(f"nhamcs: {len(visits):,} visits, {total:,} with a diagnosis, {len(visit_counts):,} diseases")

    if "hsdn" in sources:
        with open(folder / FILES["hsdn"], encoding="utf-8") as fh:
            for row in csv.DictReader(fh, delimiter="\t"):
                d = diseases.from_mesh(f"MESH:{row['disease_mesh_id']}", row["disease_mesh_term"],
                                       [f"UMLS:{row['disease_umls']}"] if row["disease_umls"] else [])
                f = findings.add(f"MESH:{row['symptom_mesh_id']}", row["symptom_mesh_term"])
                link(d, f, "hsdn")

    if "dbpedia" in sources:
        with open(folder / FILES["dbpedia"], encoding="utf-8") as fh:
            for row in csv.DictReader(fh):
                if not row["disease_mesh"]:
                    continue
                d = diseases.from_mesh(f"MESH:{row['disease_mesh']}", row["disease"],
                                       [f"UMLS:{row['disease_umls']}"] if row["disease_umls"] else [])
                code = f"MESH:{row['symptom_mesh']}" if row["symptom_mesh"] else f"DBPEDIA:{row['symptom']}"
                link(d, findings.add(code, row["symptom"]), "dbpedia")

    if "do" in sources:
        with open(folder / FILES["do"], encoding="utf-8") as fh:
            for row in csv.DictReader(fh, delimiter="\t"):
                d = diseases.from_doid(row["doid"], row["disease_label"])
                label = row["symptom_label"].strip()
                link(d, findings.add(f"SYMP:{label.lower().replace(' ', '_')}", label), "do")

    if "ddxplus" in sources:
        conditions = json.loads((folder / FILES["ddxplus"]).read_text(encoding="utf-8"))
        evidences = json.loads((folder / FILES["ddxplus_evidences"]).read_text(encoding="utf-8"))
        evidence_ids = ddxplus_evidence_findings(evidences, findings)
        for name, cond in conditions.items():
            d = diseases.from_icd10(ddxplus_icd10(cond), cond.get("cond-name-eng") or name)
            for ev in cond.get("symptoms", {}):
                for f in evidence_ids.get(ev, ()):
                    link(d, f, "ddxplus")

    implies = clinical_vocabulary(findings)
    associations = [Association(d, f, s, round(w, 6), c) for (d, f, s), (w, c) in links.items()]
    return AssociationSet(implies=implies, diseases=diseases.diseases, finding_names=dict(findings.names),
                          finding_codes={k: set(v) for k, v in findings.codes.items()},
                          finding_synonyms={k: set(v) for k, v in findings.synonyms.items()},
                          associations=associations, visits=visit_counts, total_visits=total, notes=notes,
                          vocabulary=findings.vocabulary)


def add_clinical_synonyms(findings: FindingIndex) -> None:
    """:data:`CLINICAL_SYNONYMS` whose target the vocabulary knows by now.  Called once right after the RFV
    vocabulary (so that a source's "palpitation" or "sweating" joins the reason for visit) and again at the
    end (targets only a later source names, e.g. DO's "stridor")."""
    for phrase, target in CLINICAL_SYNONYMS.items():
        cid = findings.by_code(target) if target.startswith("RFV:") else findings.lookup(target)
        if cid:
            findings.vocabulary.add(cid, phrase, 2)


def clinical_vocabulary(findings: FindingIndex) -> dict[str, list[str]]:
    """Add :data:`CLINICAL_SYNONYMS` and :data:`NEW_FINDINGS` to the vocabulary; return the implications
    (:data:`IMPLIES`, plus every multi-word finding whose last words name another finding:
    "Pleuritic chest pain" -> "Chest Pain", "Lower abdominal pain" -> "Abdominal Pain")."""
    for name in NEW_FINDINGS:
        findings.add(f"FINDING:{name.lower().replace(' ', '_')}", name)
    add_clinical_synonyms(findings)
    implies: dict[str, list[str]] = defaultdict(list)
    for name, targets in IMPLIES.items():
        cid = findings.lookup(name)
        for target in targets:
            tid = findings.by_code(target) if target.startswith("RFV:") else findings.lookup(target)
            if cid and tid and tid != cid:
                implies[cid].append(tid)
    for cid, name in list(findings.names.items()):
        words = re.findall(r"[A-Za-z]+", name.split("(")[0].split(",")[0])
        for k in range(1, len(words) - 1 + 1):
            tail = " ".join(words[k:])
            tid = findings.lookup(tail) if len(words) - k >= 2 else None
            if tid and tid != cid:
                implies[cid].append(tid)
                break
    return {k: list(dict.fromkeys(v)) for k, v in implies.items()}


def clinical_vocabulary_from_rows(names: dict[str, str], synonyms: dict[str, set[str]]) -> SymptomVocabulary:
    """The finding vocabulary of stored findings (``DiagnosisFinding``): their names and synonyms, the
    lay and clinical synonyms; source-specific names (DDXPlus questions, "pain (eye)") are not text."""
    index = FindingIndex({})
    for cid, name in names.items():
        text = not cid.startswith(("DDXPLUS:", "NHAMCS:")) and "(" not in name
        index.vocabulary.names.setdefault(cid, name)
        if text:
            index.vocabulary.add_concept(cid, name)
            for alt in synonyms.get(cid, ()):
                if "(" not in alt and len(alt) > 3:
                    index.vocabulary.add(cid, alt, 1)
    index.vocabulary.add_lay_synonyms()
    for phrase, target in CLINICAL_SYNONYMS.items():
        cid = (target if target in names else None) if target.startswith("RFV:") else index.lookup(target)
        if cid:
            index.vocabulary.add(cid, phrase, 2)
    return index.vocabulary


# DDXPlus pathologies whose release ICD-10 code names another disease: SLE is M32 (M34 is systemic sclerosis).
DDXPLUS_ICD10_FIXES = {"SLE": "M32"}


def ddxplus_icd10(condition: dict) -> list[str]:
    """A DDXPlus pathology's ICD-10 codes, upper case ("j17, j18" -> ["J17", "J18"]), upstream errors fixed."""
    name = condition.get("condition_name") or condition.get("cond-name-eng") or ""
    if name in DDXPLUS_ICD10_FIXES:
        return [DDXPLUS_ICD10_FIXES[name]]
    return [c.strip().upper() for c in re.split(r"[,;]", condition.get("icd10-id", "")) if c.strip()]


_QUESTION_STRIP = re.compile(r"^(?:do|did|are|is|have|has|were|was)\s+(?:you|your)\s+(?:have\s+|feel\s+|had\s+|"
                             r"experienced?\s+|noticed?\s+)?(?:an?\s+|any\s+)?", re.IGNORECASE)


def ddxplus_evidence_findings(evidences: dict, findings: FindingIndex) -> dict[str, list[str]]:
    """DDXPlus evidence code -> finding ids: the findings the vocabulary reads in its English question
    (with negation ignored: a question is not a denial), else its own ``DDXPLUS:E_xx`` concept."""
    out: dict[str, list[str]] = {}
    for code, ev in evidences.items():
        if ev.get("is_antecedent"):
            continue
        question = ev.get("question_en") or code
        found = [f.concept_id for f in extract_findings(question, findings.vocabulary) if f.concept_id]
        if found:
            out[code] = list(dict.fromkeys(found))
            for cid in out[code]:
                findings.codes[cid].add(f"DDXPLUS:{code}")
        else:
            name = _QUESTION_STRIP.sub("", question.rstrip("?")).strip() or question
            out[code] = [findings.add(f"DDXPLUS:{code}", name[:120], text=False)]
    return out


# --- generic associations ------------------------------------------------------------------------------------

GENERIC_COLUMNS = ("disease_id", "disease_name", "finding_id", "finding_name", "weight", "source")


def read_generic_associations(path: Path | str) -> list[dict]:
    """A department's own associations: a TSV (or CSV) with the header ``disease_id disease_name
    finding_id finding_name weight source`` (ids with a vocabulary prefix, e.g. ``MESH:D011014``,
    ``UMLS:C0032285``, ``ICD10CM:J18.9``; either id or name may be empty, not both; weight in (0, 1]:
    P(finding | disease), or 1 for a presence-only link; source a short name, e.g. ``semmeddb``)."""
    path = Path(path)
    text = path.read_text(encoding="utf-8")
    dialect = "excel-tab" if "\t" in text.splitlines()[0] else "excel"
    rows = list(csv.DictReader(text.splitlines(), dialect=dialect))
    missing = [c for c in GENERIC_COLUMNS if rows and c not in rows[0]]
    if missing or not rows:
        raise ValueError(f"{path}: needs the columns {', '.join(GENERIC_COLUMNS)} (missing: {', '.join(missing)})")
    out = []
    for n, row in enumerate(rows, start=2):
        disease = (row["disease_id"] or "").strip(), (row["disease_name"] or "").strip()
        finding = (row["finding_id"] or "").strip(), (row["finding_name"] or "").strip()
        if not any(disease) or not any(finding):
            raise ValueError(f"{path} line {n}: a disease and a finding need an id or a name")
        weight = float(row["weight"] or 1.0)
        if not 0 < weight <= 1:
            raise ValueError(f"{path} line {n}: weight must be in (0, 1], not {weight}")
        source = (row["source"] or "").strip() or "custom"
        out.append({"disease_id": normalize_concept_id(disease[0]) if disease[0] else "", "disease_name": disease[1],
                    "finding_id": normalize_concept_id(finding[0]) if finding[0] else "",
                    "finding_name": finding[1], "weight": weight, "source": source[:24]})
    return out
