"""`manage.py federated_node --data PATH --superlink HOST:PORT`: run this site as one centre of a federation.

1. Reads the centre's own data (a PubMedQA JSON, MEDLINE/PubMed XML or JSONL file: ``training.data``),
   builds the instruction examples and tokenizes them with the base model's tokenizer into
   ``<work-dir>/examples.pt``. The data and that file stay on this machine.
2. Starts Flower's SuperNode (``flower-supernode``) connected to the coordinator's SuperLink, with
   ``--node-config 'centre=... data-path=... base-dir=...'``: the ClientApp (``training.federated.client``)
   trains on that file and sends back only adapter weights and counts.

Connections use TLS unless ``--insecure`` is given: ``--root-certificates`` is the CA that signed the
SuperLink's certificate (see README, "Federated fine-tuning"). ``--auth-private-key`` enables node
authentication (the SuperLink runs with ``--enable-supernode-auth`` and the node's public key was
registered with ``flwr supernode register``). ``--prepare-only`` stops after step 1.
"""
from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError

_CENTRE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")


class Command(BaseCommand):
    help = "Prepare this centre's local data and run a Flower SuperNode for federated fine-tuning."

    def add_arguments(self, parser):
        parser.add_argument("--data", required=True, help="the centre's data file (PubMedQA JSON, MEDLINE XML, JSONL)")
        parser.add_argument("--superlink", required=True, help="the coordinator's SuperLink Fleet API, HOST:PORT")
        parser.add_argument("--centre", default=os.environ.get("MEDASSIST_CENTRE", "centre"),
                            help="this centre's id, as the coordinator reports it (never its data)")
        parser.add_argument("--base-dir", default="", help="the base model's fp32 directory (default: the active "
                                                           "generator's)")
        parser.add_argument("--tasks", default="qa", help="comma-separated: qa, summary")
        parser.add_argument("--max-length", type=int, default=384)
        parser.add_argument("--work-dir", default="", help="default: <MEDASSIST_VAR_DIR>/federated-node/<centre>")
        parser.add_argument("--root-certificates", default=os.environ.get("FLWR_ROOT_CERTIFICATES", ""),
                            help="CA certificate (PEM) of the SuperLink: TLS")
        parser.add_argument("--insecure", action="store_true", help="no TLS (tests and a private network only)")
        parser.add_argument("--auth-private-key", default=os.environ.get("FLWR_AUTH_PRIVATE_KEY", ""),
                            help="this node's private key (node authentication)")
        parser.add_argument("--runtime-port", type=int, default=9094,
                            help="the SuperNode's local runtime API port (one per SuperNode on a host)")
        parser.add_argument("--prepare-only", action="store_true", help="prepare the local examples and stop")

    def handle(self, *args, data, superlink, centre, base_dir, tasks, max_length, work_dir, root_certificates,
               insecure, auth_private_key, runtime_port, prepare_only, **options):
        import torch

        from training import data as training_data
        from training.run import answer_weights

        if not _CENTRE.match(centre):
            raise CommandError("--centre: letters, digits, '.', '_' and '-' only (at most 64)")
        if not re.match(r"^[A-Za-z0-9.\-\[\]:]+:\d+$", superlink):
            raise CommandError("--superlink: expected HOST:PORT")
        if not insecure and not root_certificates and not prepare_only:
            raise CommandError("TLS needs --root-certificates (the CA that signed the SuperLink's certificate); "
                               "--insecure only on a private network")
        for label, path in (("--root-certificates", root_certificates), ("--auth-private-key", auth_private_key)):
            if path and not Path(path).is_file():
                raise CommandError(f"{label}: {path} is not a file")
        base = Path(base_dir) if base_dir else self._active_base_dir()
        if not (base / "config.json").is_file():
            raise CommandError(f"--base-dir: {base} holds no model (config.json)")
        chosen = [t.strip() for t in tasks.split(",") if t.strip()]
        if not chosen or not set(chosen) <= {"qa", "summary"}:
            raise CommandError("--tasks: choose from qa, summary")
        try:
            records = training_data.read_records(data)
        except (FileNotFoundError, ValueError) as exc:
            raise CommandError(f"--data: {exc}") from exc
        examples = training_data.build_examples(records, tasks=chosen)
        if not examples:
            raise CommandError(f"--data: {data} gave no {', '.join(chosen)} examples")
        tokenized = training_data.tokenize_examples(examples, base, max_length=max_length)
        out_dir = Path(work_dir) if work_dir else Path(settings.VAR_DIR) / "federated-node" / centre
        out_dir.mkdir(parents=True, exist_ok=True)
        data_path = out_dir / "examples.pt"
        torch.save([{"input_ids": e.input_ids, "labels": e.labels,
                     "weights": answer_weights(e.labels, 10.0 if e.task == "qa" else 1.0)} for e in tokenized],
                   data_path)
        self.stdout.write(f"{centre}: {len(records)} records -> {len(tokenized)} examples in {data_path}")
        if prepare_only:
            return
        executable = shutil.which("flower-supernode") or str(Path(sys.executable).parent / "flower-supernode")
        command = [executable, "--superlink", superlink, "--port", str(runtime_port),
                   "--node-config", f'centre="{centre}" data-path="{data_path}" base-dir="{base}"']
        command += ["--insecure"] if insecure else ["--root-certificates", root_certificates]
        if auth_private_key:
            command += ["--auth-supernode-private-key", auth_private_key]
        self.stdout.write("starting: " + " ".join(command))
        # The ClientApp runs in processes the SuperNode starts (flower-superexec, flwr-clientapp, found on
        # PATH next to this Python): they must find those programs and import this project. No telemetry.
        from training.federated.deployment import flower_env

        raise SystemExit(subprocess.call(command, env=flower_env()))

    def _active_base_dir(self) -> Path:
        from training.config import FinetuneConfig
        from training.export import base_weights
        from training.run import resolve_base

        try:
            return base_weights(resolve_base(FinetuneConfig()))[0]
        except (ValueError, FileNotFoundError) as exc:
            raise CommandError(f"--base-dir not given and {exc}") from exc
