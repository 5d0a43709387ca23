"""`manage.py evaluate` on small fixtures in the documented formats."""
import json

from django.core.management import call_command

from tests.conftest import require_shared_data


def test_evaluate_diagnosis_on_a_jsonl_case_file(db, tmp_path, capsys):
    require_shared_data("hsdn-symptoms-disease", "symptoms-DO.tsv")
    cases = tmp_path / "cases.jsonl"
    cases.write_text("\n".join(json.dumps(c) for c in [
        {"findings": ["fever", "chills", "headache", "splenomegaly"], "age": 30, "sex": "male",
         "diagnosis": "Malaria", "codes": ["MESH:D008288"]},
        {"findings": ["chest pain", "dyspnea"], "age": 60, "sex": "female", "diagnosis": "Coronary Disease",
         "codes": ["MESH:D003327"]},
    ]))
    call_command("evaluate", "diagnosis", "--data", str(cases), "--no-write")
    out = capsys.readouterr().out
    assert "2 cases from" in out and "| top-1 |" in out and "| top-20 |" in out


def test_evaluate_qa_on_a_pubmedqa_format_file(tiny_models, tmp_path, capsys):
    records = {str(i): {"QUESTION": f"Does drug {i} help?", "CONTEXTS": ["It helped in a trial."],
                        "final_decision": ["yes", "no", "maybe"][i % 3]} for i in range(10)}
    data = tmp_path / "qa.json"
    data.write_text(json.dumps(records))
    call_command("evaluate", "qa", "--data", str(data), "--no-write")
    out = capsys.readouterr().out
    assert "10 expert-labelled questions (qa.json)" in out and "fold 5" in out
    assert tiny_models["generator"].label in out


def test_evaluate_hypothesis_reports_every_measure(db, capsys):
    require_shared_data("medline-cooccurrence")
    call_command("evaluate", "hypothesis", "--no-write")
    out = capsys.readouterr().out
    for measure in ("linking_terms", "jaccard", "adamic_adar", "resource_allocation", "pmi_min"):
        assert f"| {measure} |" in out


def test_evaluate_qa_scores_a_finetuned_version_only_on_the_fold_it_held_out(tiny_models, tmp_path, capsys):
    from pathlib import Path

    from workers.runtime.prepare import register_variant

    records = {str(i): {"QUESTION": f"Does drug {i} help?", "CONTEXTS": ["It helped in a trial."],
                        "LONG_ANSWER": "It helps.", "final_decision": ["yes", "no", "maybe"][i % 3]} for i in range(15)}
    data = tmp_path / "qa.json"
    data.write_text(json.dumps(records))
    tuned, _ = register_variant(role="generator", name="tiny-tuned", format="torch-fp32",
                                artifact=Path(tiny_models["generator"].artifact_path),
                                config={"finetune": {"folds": 5, "seed": 0, "eval_fold": 2}})
    call_command("evaluate", "qa", "--data", str(data), "--model-version", str(tuned.pk), "--no-write")
    out = capsys.readouterr().out
    assert "scored only on the fold it held out (fold 3 of 5)" in out
    assert "| fold 3 (3 questions) |" in out and "fold 1 (" not in out
    assert "| full abstract |" in out and "| reasoning-required |" in out
