"""`manage.py evaluate` on small fixtures in the documented formats."""
import io
import json

import pytest
from django.core.management import CommandError, call_command

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


def test_evaluate_diagnosis_data_scores_the_served_bayes_ranker_by_code_or_name(db, tmp_path, capsys):
    """Once associations are imported the kind ranks with the Bayes ranker, so `--data` scores that one."""
    from medassist.knowledge import diagnosis_state

    require_shared_data("ddx-knowledge")
    path = tmp_path / "mine.tsv"
    path.write_text("disease_id\tdisease_name\tfinding_id\tfinding_name\tweight\tsource\n"
                    "\tMy rare disease\t\tstrawberry tongue\t0.8\tmine\n"
                    "\tMy other disease\t\tpurple toes\t0.8\tmine\n", encoding="utf-8")
    call_command("knowledge_import", "associations", "--file", str(path))
    cases = tmp_path / "cases.jsonl"
    cases.write_text("\n".join(json.dumps(c) for c in [
        {"findings": ["strawberry tongue"], "diagnosis": "my rare disease"},  # by name
        {"findings": ["purple toes"], "codes": ["CUSTOM:My other disease"]},  # by code
        {"findings": ["purple toes"], "diagnosis": "Nothing we know"},
    ]))
    diagnosis_state.reset_ranker()
    try:
        call_command("evaluate", "diagnosis", "--data", str(cases), "--no-write")
    finally:
        diagnosis_state.reset_ranker()
    out = capsys.readouterr().out
    assert "the served ranker (the imported associations), 2 diseases" in out
    assert "| cases.jsonl | 3 | 2 | 1 |" in out and "| 66.7% |" in out


def _two_cases(tmp_path):
    cases = tmp_path / "cases.jsonl"
    cases.write_text(json.dumps({"findings": ["fever", "chills", "headache", "splenomegaly"], "diagnosis": "Malaria",
                                 "codes": ["MESH:D008288"]}))
    return cases


def test_evaluate_with_data_prints_and_writes_only_when_told(db, tmp_path, capsys, monkeypatch):
    from medassist.tools.management.commands import evaluate

    require_shared_data("hsdn-symptoms-disease", "symptoms-DO.tsv")
    monkeypatch.setattr(evaluate, "EVALUATION_MD", tmp_path / "evaluation.md")
    cases = _two_cases(tmp_path)
    call_command("evaluate", "diagnosis", "--data", str(cases))  # --data: print only
    out = capsys.readouterr().out
    assert "| top-1 |" in out and "written to" not in out and not (tmp_path / "evaluation.md").exists()
    call_command("evaluate", "diagnosis", "--data", str(cases), "--write", "--no-progress")
    assert "written to" in capsys.readouterr().out
    assert "<!-- diagnosis:start -->" in (tmp_path / "evaluation.md").read_text()


def test_evaluate_refuses_contradictory_or_unfounded_writes(db, tmp_path):
    cases = _two_cases(tmp_path)
    with pytest.raises(CommandError, match="--write-weights"):  # --data cases have no development seeds to tune on
        call_command("evaluate", "diagnosis", "--data", str(cases), "--write-weights")
    with pytest.raises(CommandError, match="--write-weights"):
        call_command("evaluate", "hypothesis", "--write-weights", "--no-write")
    with pytest.raises(CommandError):
        call_command("evaluate", "diagnosis", "--data", str(cases), "--write", "--no-write")


def test_progress_bars_only_on_a_terminal_and_never_with_no_progress():
    from medassist.tools.evaluation.progress import progress, progress_enabled, progress_for

    class Terminal(io.StringIO):
        def isatty(self):
            return True

    assert progress_enabled(stream=Terminal()) is True
    assert progress_enabled(no_progress=True, stream=Terminal()) is False
    assert progress_enabled(stream=io.StringIO()) is False  # piped, logged, captured
    items = [1, 2, 3]
    assert progress(items, enabled=False) is items and progress_for("x", enabled=False) is None
    assert list(progress(items, total=3, desc="x", enabled=True)) == items


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

    from training.prepare import register_variant

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


def test_write_weights_stores_the_weights_the_grid_search_chose(db, tmp_path, capsys, monkeypatch):
    """A small run (4 vignettes per seed) with a bag-of-words stand-in for the embedder: the weights file
    gets the "chosen" row, the command and the date; docs/evaluation.md is left alone (--no-write)."""
    import re
    import zlib

    import numpy as np

    from medassist.knowledge import diagnosis
    from medassist.tools.management.commands import evaluate

    require_shared_data("hsdn-symptoms-disease", "symptoms-DO.tsv")

    def bag_of_words(texts):
        out = np.zeros((len(texts), 64), dtype=np.float32)
        for i, text in enumerate(texts):
            for word in text.lower().replace(",", " ").split():
                out[i, zlib.crc32(word.encode()) % 64] += 1.0
        return out

    monkeypatch.setattr(evaluate.Command, "_diagnosis_encoder",
                        lambda self: (diagnosis.TextEncoder(bag_of_words, "bag-of-words"), "**Embeddings** (test);"))
    (tmp_path / "diagnosis_weights.json").write_text(diagnosis.WEIGHTS_FILE.read_text())  # the kind's current defaults
    monkeypatch.setattr(diagnosis, "WEIGHTS_FILE", tmp_path / "diagnosis_weights.json")
    monkeypatch.setattr(evaluate, "EVALUATION_MD", tmp_path / "evaluation.md")
    call_command("evaluate", "diagnosis", "--cases", "4", "--write-weights", "--no-write")
    out = capsys.readouterr().out
    written = json.loads((tmp_path / "diagnosis_weights.json").read_text())
    assert f"weights written to {tmp_path / 'diagnosis_weights.json'}" in out
    assert written["chosen_by"] == "python manage.py evaluate diagnosis --cases 4 --seed 0 --write-weights"
    assert "grid search" in written["method"] and written["chosen_at"].endswith("UTC")
    chosen = re.search(r"\| all together, chosen \| ([^|]*) \|", out).group(1).strip()
    shown = ", ".join(f"{k} {v:g}" for k, v in written["weights"].items() if v) or "-"
    assert set(written["weights"]) == {"corpus", "hpo", "embedding"} and shown == chosen
    assert diagnosis.default_weights() == written["weights"]  # what the kind would read at its next start
    assert not (tmp_path / "evaluation.md").exists()
