"""``medassist``: the command line over the public API (installed as a console script).

    medassist submit FILE --kind literature --param question="..." --wait
    medassist status JOB [--wait]
    medassist results JOB --format jsonl|csv -o out.jsonl
    medassist diagnose "58M chest pain, SOB, denies fever" --age 58 --sex male
    medassist jobs --status running

Exit codes: 0 done (for a job: it succeeded), 1 the API or the network refused (its messages on
stderr), 2 bad command line, 3 the job ended but did not succeed, 130 interrupted (a job that was
being waited for goes on: ``medassist status JOB --wait`` picks it up again).
"""
from __future__ import annotations

import argparse
import json
import sys
import uuid
from pathlib import Path

import requests
from tqdm import tqdm

from .api import FINAL_STATUSES, ApiError, Client, idempotency_key
from .config import ConfigError, load_settings

EXIT_OK, EXIT_API, EXIT_USAGE, EXIT_JOB_FAILED, EXIT_INTERRUPTED = 0, 1, 2, 3, 130
UPLOAD_BAR_BYTES = 8 * 1024 * 1024  # smaller files go up in a moment: no bar


def _say(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def parse_param(text: str) -> tuple[str, object]:
    """``name=value``: the value as JSON when it parses (``top_k=5``, ``embed=false``), else as a string."""
    name, sep, value = text.partition("=")
    if not sep or not name.strip():
        raise argparse.ArgumentTypeError(f"expected NAME=VALUE, got {text!r}")
    try:
        return name.strip(), json.loads(value)
    except json.JSONDecodeError:
        return name.strip(), value


def job_line(job: dict) -> str:
    p = job.get("progress") or {}
    line = f"{job['id']}  {job['kind']:<10} {job['status']:<16} {p.get('processed', 0)}/{p.get('total', 0)}"
    if p.get("failed"):
        line += f" ({p['failed']} failed)"
    if p.get("eta_seconds") is not None and job["status"] not in FINAL_STATUSES:
        line += f"  eta {p['eta_seconds']:.0f} s"
    return line


def describe(job: dict) -> str:
    p = job["progress"]
    lines = [f"job {job['id']} ({job['kind']}): {job['status']}",
             f"  progress: {p['processed']}/{p['total']} items ({p['percent']}%), "
             f"{p['succeeded']} succeeded, {p['failed']} failed"]
    if p.get("eta_seconds") is not None and job["status"] not in FINAL_STATUSES:
        lines.append(f"  eta: {p['eta_seconds']:.0f} s")
    if job.get("error"):
        lines.append(f"  error: {job['error']}")
    if job.get("status_detail"):
        lines.append(f"  detail: {job['status_detail']}")
    if job.get("model_version"):
        lines.append(f"  model version: {job['model_version']}")
    if job["status"] in FINAL_STATUSES and job.get("links"):
        lines.append(f"  results: medassist results {job['id']} --format jsonl -o job-{job['id']}.jsonl")
    return "\n".join(lines)


def wait_with_progress(client: Client, job: dict, *, quiet: bool = False) -> dict:
    """Poll with a progress bar (stderr) until the job is final; Ctrl-C stops waiting, not the job."""
    bar = tqdm(total=job["progress"]["total"], unit="item", desc=f"job {str(job['id'])[:8]}", file=sys.stderr,
               disable=quiet or None, dynamic_ncols=True)

    def update(state: dict) -> None:
        p = state["progress"]
        bar.total = p["total"]
        bar.n = p["processed"]
        bar.set_postfix_str(f"{state['status']}, {p['failed']} failed" if p["failed"] else state["status"], refresh=False)
        bar.refresh()

    try:
        return client.wait(job["id"], on_update=update)
    except KeyboardInterrupt:
        bar.close()
        _say(f"stopped waiting; job {job['id']} goes on. Resume with: medassist status {job['id']} --wait")
        raise
    finally:
        bar.close()


def finish(job: dict, *, as_json: bool) -> int:
    print(json.dumps(job, indent=2) if as_json else describe(job))
    return EXIT_OK if job["status"] == "succeeded" else EXIT_JOB_FAILED if job["status"] in FINAL_STATUSES else EXIT_OK


# --- commands ---------------------------------------------------------------------------------------------

def cmd_submit(client: Client, args) -> int:
    path = Path(args.file)
    if not path.is_file():
        _say(f"error: {path}: no such file")
        return EXIT_USAGE
    params = dict(args.param or [])
    # Derived from what is sent, so a re-run returns the first job; --new: a key of its own.
    key = f"medassist-cli-{uuid.uuid4().hex}" if args.new else idempotency_key(kind=args.kind, params=params, file=path)
    # A byte progress bar for the upload itself (stderr, only on a terminal, only for files worth it).
    upload_bar = tqdm(total=path.stat().st_size, unit="B", unit_scale=True, desc="upload", file=sys.stderr,
                      disable=args.quiet or path.stat().st_size < UPLOAD_BAR_BYTES or None, leave=False)

    def on_upload(sent: int, total: int) -> None:
        upload_bar.n = sent
        upload_bar.refresh()

    try:
        job, created = client.submit(kind=args.kind, params=params, file=path, key=key, on_upload=on_upload)
    finally:
        upload_bar.close()
    if created:
        _say(f"submitted job {job['id']}: {job['progress']['total']} {args.kind} items from {path.name}")
    else:
        _say(f"job {job['id']} was already submitted with this file, kind and params; not submitting again "
             f"(--new submits a second one)")
    if args.wait:
        job = wait_with_progress(client, job, quiet=args.quiet)
        return finish(job, as_json=args.json)
    print(json.dumps(job, indent=2) if args.json else job["id"])
    return EXIT_OK


def cmd_status(client: Client, args) -> int:
    job = client.job(args.job)
    if args.wait and job["status"] not in FINAL_STATUSES:
        job = wait_with_progress(client, job, quiet=args.quiet)
    return finish(job, as_json=args.json)


def cmd_results(client: Client, args) -> int:
    if args.output and args.output != "-":
        target = Path(args.output)
        partial = target.with_name(target.name + ".part")  # never leave a half-written file under the real name
        try:
            with open(partial, "wb") as out:
                written = client.export(args.job, args.format, out, status=args.status)
            partial.replace(target)
        except BaseException:
            partial.unlink(missing_ok=True)
            raise
        _say(f"wrote {written:,} bytes to {target}")
    else:
        client.export(args.job, args.format, sys.stdout.buffer, status=args.status)
        sys.stdout.flush()
    return EXIT_OK


def cmd_jobs(client: Client, args) -> int:
    jobs = list(client.jobs(status=args.status, kind=args.kind, limit=args.limit))
    if args.json:
        print(json.dumps(jobs, indent=2))
    elif not jobs:
        _say("no jobs" + (f" with status {args.status}" if args.status else ""))
    else:
        for job in jobs:
            print(job_line(job))
    return EXIT_OK


def cmd_cancel(client: Client, args) -> int:
    job = client.cancel(args.job)
    print(describe(job))
    return EXIT_OK


def format_diagnosis(result: dict) -> str:
    lines = []
    if result.get("unrecognised"):
        lines.append("not recognised: " + ", ".join(str(u.get("text", u) if isinstance(u, dict) else u)
                                                    for u in result["unrecognised"]))
    for d in result.get("diagnoses", []):
        codes = ", ".join(c.get("code", "") for c in d.get("icd10cm", [])[:3])
        head = f"{d.get('rank', '?'):>2}. {d.get('name')}  score {d.get('score', 0):.3f}"
        lines.append(head + (f"  [{codes}]" if codes else ""))
        for label, key in (("matched", "matched"), ("missing", "unmatched"), ("contradicted", "contradicted")):
            names = [m.get("name") or m.get("text") for m in d.get(key, [])[:6] if isinstance(m, dict)]
            if names:
                lines.append(f"      {label}: {', '.join(str(n) for n in names)}")
        pmids = [doc.get("pmid") for doc in d.get("supporting_documents", []) if doc.get("pmid")]
        if pmids:
            lines.append(f"      PMIDs: {', '.join(str(p) for p in pmids)}")
        if d.get("explanation"):
            lines.append(f"      why: {d['explanation']}")
    if result.get("rationale"):
        lines.append(f"rationale (generated): {result['rationale']}")
    return "\n".join(lines) or "no diagnosis"


def cmd_diagnose(client: Client, args) -> int:
    item = {"symptoms": args.symptoms}
    if args.age is not None:
        item["age"] = args.age
    if args.sex:
        item["sex"] = args.sex
    params = {"top_k": args.top_k, **dict(args.param or [])}
    # A fresh key per run: retries inside this run are safe, a later run asks again.
    job, _ = client.submit(kind="diagnosis", params=params, items=[item], key=f"medassist-cli-{uuid.uuid4().hex}")
    job = client.wait(job["id"], interval=0.2, max_interval=1.0, timeout=args.timeout)
    if job["status"] != "succeeded":
        return finish(job, as_json=args.json)
    item_result = next(iter(client.results(job["id"])), {})
    if args.json:
        print(json.dumps(item_result.get("result"), indent=2))
    else:
        print(format_diagnosis(item_result.get("result") or {}))
    return EXIT_OK


# --- the parser -------------------------------------------------------------------------------------------

def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="medassist", description="Command-line client for the medassist API.",
                                     epilog="URL and token: --url/--token, else MEDASSIST_URL/MEDASSIST_TOKEN, "
                                            "else ~/.config/medassist.toml (url = ..., token = ...).")
    parser.add_argument("--url", help="the server, e.g. http://127.0.0.1:8000")
    parser.add_argument("--token", help="your API token")
    parser.add_argument("--retries", type=int, default=6, help="retries on 429/503 and dropped connections (default 6)")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def with_output_flags(p):
        p.add_argument("--json", action="store_true", help="print the job as JSON")
        p.add_argument("--quiet", action="store_true", help="no progress bar")
        return p

    submit = with_output_flags(commands.add_parser("submit", help="submit a file (JSONL, CSV/TSV, MEDLINE or PubMed XML)"))
    submit.add_argument("file")
    submit.add_argument("--kind", required=True, help="job kind, e.g. literature, diagnosis, hypothesis")
    submit.add_argument("--param", type=parse_param, action="append", metavar="NAME=VALUE",
                        help='a job parameter; repeatable (e.g. question="Does aspirin help?" top_k=5)')
    submit.add_argument("--wait", action="store_true", help="show progress until the job ends")
    submit.add_argument("--new", action="store_true", help="submit again even if this file and params were submitted")
    submit.set_defaults(run=cmd_submit)

    status = with_output_flags(commands.add_parser("status", help="a job's status and progress"))
    status.add_argument("job")
    status.add_argument("--wait", action="store_true", help="show progress until the job ends")
    status.set_defaults(run=cmd_status)

    results = commands.add_parser("results", help="download a job's results")
    results.add_argument("job")
    results.add_argument("--format", choices=["jsonl", "csv"], default="jsonl")
    results.add_argument("-o", "--output", help="file to write (default: stdout)")
    results.add_argument("--status", choices=["succeeded", "failed", "pending", "cancelled"], help="only these items")
    results.set_defaults(run=cmd_results)

    diagnose = commands.add_parser("diagnose", help="a ranked differential diagnosis for one case")
    diagnose.add_argument("symptoms", help='free text, e.g. "58M chest pain, SOB, denies fever"')
    diagnose.add_argument("--age", type=int)
    diagnose.add_argument("--sex", choices=["female", "male"])
    diagnose.add_argument("--top-k", type=int, default=10, dest="top_k")
    diagnose.add_argument("--param", type=parse_param, action="append", metavar="NAME=VALUE", help="other params")
    diagnose.add_argument("--timeout", type=float, default=120.0, help="seconds to wait for the answer")
    diagnose.add_argument("--json", action="store_true", help="print the result as JSON")
    diagnose.set_defaults(run=cmd_diagnose)

    jobs = commands.add_parser("jobs", help="list your jobs, newest first")
    jobs.add_argument("--status", choices=list(FINAL_STATUSES[:4]) + ["queued", "running", "purged"])
    jobs.add_argument("--kind")
    jobs.add_argument("--limit", type=int, default=50)
    jobs.add_argument("--json", action="store_true")
    jobs.set_defaults(run=cmd_jobs)

    cancel = commands.add_parser("cancel", help="cancel a job's unstarted work")
    cancel.add_argument("job")
    cancel.set_defaults(run=cmd_cancel)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        settings = load_settings(url=args.url, token=args.token)
    except ConfigError as exc:
        _say(f"error: {exc}")
        return EXIT_USAGE
    if not settings.token:
        _say("error: no API token: set MEDASSIST_TOKEN, pass --token, or put token = \"...\" in ~/.config/medassist.toml")
        return EXIT_USAGE
    client = Client(settings.url, settings.token, retries=args.retries, notify=_say)
    try:
        return args.run(client, args)
    except ApiError as exc:
        _say("error: " + "\n".join(exc.lines()))
        if exc.status == 401:
            _say(f"(the token from {settings.source} was refused)")
        return EXIT_API
    except TimeoutError as exc:
        _say(f"error: {exc}")
        return EXIT_API
    except KeyboardInterrupt:
        return EXIT_INTERRUPTED
    except requests.RequestException as exc:  # (an OSError too) e.g. a malformed URL, a broken download
        _say(f"error: {exc.__class__.__name__}: {exc}")
        return EXIT_API
    except OSError as exc:  # a file that cannot be read or written
        _say(f"error: {exc.filename or ''}: {exc.strerror or exc}")
        return EXIT_API


if __name__ == "__main__":
    sys.exit(main())
