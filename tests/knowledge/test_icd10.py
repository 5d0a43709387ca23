"""Tests for medassist.knowledge.icd10: every ICD-10-CM lookup, from the simple-icd-10-cm package."""
from __future__ import annotations

import ast
from pathlib import Path

from medassist.knowledge.icd10 import icd10cm_codes, icd10cm_matches


# simple-icd-10-cm is a requirement: these run everywhere (no skip when it is missing).
def test_icd10cm_by_name():
    mi = icd10cm_matches("Myocardial Infarction")
    assert mi and mi[0]["code"].startswith("I21") and "myocardial infarction" in mi[0]["description"].lower()
    malaria = icd10cm_matches("Malaria")
    assert malaria and all(m["code"][:2] == "B5" for m in malaria[:2]) and malaria[0]["match"] == "exact"
    assert icd10cm_matches("Diabetes Mellitus, Type 2")[0]["code"] == "E11"  # MeSH comma form inverted
    assert icd10cm_matches("Vascular Neoplasms") == []  # better nothing than "vascular dementia"


def test_the_code_list_is_the_packages_without_chapters_and_blocks():
    codes = {entry["code"]: entry for entry in icd10cm_codes()}
    assert len(codes) > 90_000
    mi = codes["I21.9"]
    assert mi["description"] == "Acute myocardial infarction, unspecified"
    assert mi["chapter"].startswith("Diseases of the circulatory system")
    assert "1" not in codes and "A00-A09" not in codes and "A00" in codes  # no chapter, no block; categories are codes
    assert all(isinstance(entry["inclusion_terms"], list) for entry in list(codes.values())[:100])


def test_no_other_module_reads_the_icd_package():
    """One source: the importer and the ranker both go through medassist.knowledge.icd10."""
    root = Path(__file__).resolve().parents[2]
    readers = []
    for path in [*root.joinpath("medassist").rglob("*.py"), *root.joinpath("training").rglob("*.py"),
                 *root.joinpath("workers").rglob("*.py")]:
        for node in ast.walk(ast.parse(path.read_text())):
            names = ([a.name for a in node.names] if isinstance(node, ast.Import) else
                     [node.module or ""] if isinstance(node, ast.ImportFrom) else [])
            if any(name.split(".")[0] == "simple_icd_10_cm" for name in names):
                readers.append(str(path.relative_to(root)))
    assert readers == ["medassist/knowledge/icd10.py"]
