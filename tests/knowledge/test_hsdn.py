"""Tests for medassist.knowledge.hsdn: the HSDN and MeSH tree readers behind the diagnosis matrix."""
from __future__ import annotations

import numpy as np
from scipy import sparse

from medassist.knowledge.hsdn import (
    HsdnLink,
    propagate_up,
    read_hsdn,
    read_trees,
    sex_specific,
    symptom_ancestors,
)
from tests.conftest import require_shared_data as shared

HEADER = "disease_id\tdisease_name\tsymptom_id\tsymptom_name\tcooccurs\ttfidf_score\tdoid_code\tdoid_name\n"


def test_read_hsdn_normalises_ids_and_reads_a_file_version_once(tmp_path):
    path = tmp_path / "symptoms-DO.tsv"
    path.write_text(HEADER + "D008288\tMalaria\tD005334\tFever\t120\t35.5\tDOID:12365\tmalaria\n")
    links = read_hsdn(path)
    assert links == (HsdnLink("MESH:D008288", "Malaria", "MESH:D005334", "Fever", 120, 35.5, "DOID:12365", "malaria"),)
    assert read_hsdn(path) is links  # cached per file version
    path.write_text(HEADER + "D008288\tMalaria\tD023341\tChills\t40\t12.0\tDOID:12365\tmalaria\n")
    assert read_hsdn(path)[0].symptom_name == "Chills"  # a new version is read again


def test_tree_helpers():
    trees = {"MESH:S1": ("C23.888.592.612",), "MESH:S2": ("C23.888.592.612.050",), "MESH:S3": ("C23.999",),
             "MESH:M": ("C12.294.565",), "MESH:F": ("C13.351.500.852",), "MESH:N": ("C01.100",)}
    assert sex_specific(trees, ["MESH:M", "MESH:F", "MESH:N"]) == {"MESH:M": "male", "MESH:F": "female"}
    ancestors = symptom_ancestors(trees, ["MESH:S1", "MESH:S2", "MESH:S3"])
    assert ancestors == {1: {0}}  # S2 sits under S1; S3 elsewhere
    matrix = sparse.csr_matrix(np.array([[0.0, 2.0, 1.0], [1.0, 0.0, 0.0]]))
    assert propagate_up(matrix, ancestors).toarray().tolist() == [[2.0, 2.0, 1.0], [1.0, 0.0, 0.0]]
    assert propagate_up(matrix, {}) is matrix


def test_read_trees_on_mesh_2015():
    trees = read_trees(shared("mesh-2015", "tree-numbers.tsv"), {"MESH:D002637", "MESH:D000000"})
    assert set(trees) == {"MESH:D002637"} and any(t.startswith("C23") for t in trees["MESH:D002637"])
