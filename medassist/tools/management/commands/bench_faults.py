"""``manage.py bench_faults``: what each fault costs a job (issue 12), written to docs/benchmarks.md.

Runs the fault-injection scenarios of ``medassist.tools.faults`` (the same ones tests/integration/test_faults.py
asserts) against this deployment's database and broker, with real worker and reconcile processes: per
scenario, items lost, items duplicated, and the time from the fault to the job's final state. Scenarios that
stop Redis or restart Postgres run only where DATABASE_URL / CELERY_BROKER_URL name them and this machine
has their commands (the others are listed as not run). It stops and restarts those services: run it on a
test machine, never beside production. It creates a ``bench`` user (group ``operators``) and deletes its
jobs afterwards (audit events stay, as they must).
"""
from __future__ import annotations

import time
from io import StringIO

from django.contrib.auth import get_user_model
from django.core.management import BaseCommand, call_command

from medassist.jobs.models import Job
from medassist.tools import faults
from medassist.tools.reports import format_table, machine_description, write_section


class Command(BaseCommand):
    help = "Inject each fault into a running 2,104-abstract job and report items lost, duplicated, time to recover."

    def add_arguments(self, parser):
        parser.add_argument("--scenario", action="append", choices=[*faults.SCENARIOS, "sigkill-visibility"],
                            help="run only these (repeatable); default: all this machine can run")
        parser.add_argument("--no-write", action="store_true", help="print only; leave docs/benchmarks.md alone")

    def handle(self, *args, scenario=None, no_write=False, **options):
        call_command("migrate", interactive=False, verbosity=0)
        call_command("create_api_user", "bench", "--group", "operators", stdout=StringIO())
        owner = get_user_model().objects.get(username="bench")
        available = faults.services_available()
        names = scenario or [*faults.SCENARIOS, "sigkill-visibility"]
        rows, skipped = [], []
        self.stdout.write(f"machine: {machine_description()}")
        for name in names:
            run, needs = faults.SCENARIOS.get(name, (faults.sigkill_worker, ("redis",)))
            missing = [service for service in needs if not available[service]]
            if missing:
                skipped.append(f"{name} (needs {', '.join(missing)})")
                continue
            before = set(Job.objects.filter(owner=owner).values_list("pk", flat=True))
            started = time.perf_counter()
            try:
                with faults.Lab() as lab:
                    outcome = run(lab, owner, reconcile=False) if name == "sigkill-visibility" else run(lab, owner)
            finally:  # whatever happened, the services are left running
                if available["redis"]:
                    faults.redis_start()
                if available["postgres"]:
                    faults.postgres_ensure()
            call_command("audit_verify", stdout=(audit := StringIO()))
            row = outcome.row() + ["OK" if "audit chain OK" in audit.getvalue() else "BROKEN"]
            rows.append(row)
            self.stdout.write(f"{name}: lost {outcome.lost}, duplicated {outcome.duplicated}, "
                              f"fault -> final {outcome.recovery_s:.1f} s ({time.perf_counter() - started:.0f} s in all)"
                              + (f"; {'; '.join(outcome.notes)}" if outcome.notes else ""))
            Job.objects.filter(owner=owner).exclude(pk__in=before).delete()
        table = format_table(faults.HEADERS + ["audit chain"], rows)
        self.stdout.write(table)
        if skipped:
            self.stdout.write("not run: " + ", ".join(skipped))
        if no_write:
            return
        fast = ", ".join(f"{k.removeprefix('MEDASSIST_').lower()}={v}" for k, v in faults.FAST.items()
                         if k not in ("MEDASSIST_FAULT_INJECTION", "MEDASSIST_HPO_PRELOAD", "MEDASSIST_WORKER_PRELOAD"))
        body = (
            "## Faults: what each one costs a job (`manage.py bench_faults`)\n\n"
            "`DATABASE_URL=postgres://... CELERY_BROKER_URL=redis://... python manage.py bench_faults` "
            "(it stops Redis and restarts Postgres: a test machine only). "
            f"Machine: {machine_description()}. Each scenario: one `noop` job of {faults.ITEMS:,} real MEDLINE "
            f"abstracts ({faults.CHUNK_SIZE} per chunk, {faults.SLEEP_MS} ms of work per item), one 2-process "
            "`celery worker` and one `manage.py reconcile --loop`, the fault injected about a quarter of the way "
            "in (the cancel row: 5 jobs, each cancelled by 4 concurrent API callers 3 times over while chunks of "
            "10 store results). *Lost*: items not final or counted short; *duplicated*: stored or counted "
            "twice. *Fault -> final*: from the fault to the job's final state. Recovery settings scaled from "
            f"minutes to seconds ({fast}); the deployed defaults are heartbeat 10 s / timeout 45 s, queued "
            "timeout 900 s, reconcile every 15 s, hard limit 300 s, visibility timeout 360 s, so a crash "
            "there costs about heartbeat timeout + one reconcile pass (~1 min) instead of the former hour.\n\n"
            + table + ("\n\nNot run here: " + ", ".join(skipped) if skipped else "")
        )
        path = write_section("faults", body)
        self.stdout.write(f"written to {path}")
