"""`manage.py models_register --path DIR`: register a local Hugging Face causal LM as a candidate.

For a checkpoint a user downloaded themselves (e.g. DeepSeek-R1-Distill-Qwen, DeepSeek-LLM): the
directory is checked (config, weights, tokenizer, a causal-LM architecture), hashed and registered
as a ``candidate`` generator; promote it in Django admin or through the API. Nothing is downloaded.
"""
import json
from pathlib import Path

from django.core.management.base import BaseCommand, CommandError

from medassist.registry.models import ModelVersion


class Command(BaseCommand):
    help = "Register a local Hugging Face causal-LM directory as a candidate generator version."

    def add_arguments(self, parser):
        parser.add_argument("--path", type=Path, required=True)
        parser.add_argument("--name", default=None, help="default: the directory name")
        parser.add_argument("--promote", action="store_true", help="make it the active generator at once")

    def handle(self, *args, path: Path, name, promote, **options):
        from medassist.audit.services import os_actor
        from medassist.registry.services import PromotionRefused, model_version_promote
        from training.prepare import register_variant

        path = path.resolve()
        config_file = path / "config.json"
        if not config_file.is_file():
            raise CommandError(f"{path} is not a Hugging Face model directory (no config.json)")
        try:
            config = json.loads(config_file.read_text())
        except json.JSONDecodeError as exc:
            raise CommandError(f"{config_file} is not valid JSON: {exc}") from exc
        architectures = config.get("architectures") or []
        if not any(a.endswith("ForCausalLM") for a in architectures):
            raise CommandError(f"{path}: architectures {architectures or 'missing'} is not a causal LM (*ForCausalLM)")
        if not list(path.glob("*.safetensors")) and not list(path.glob("pytorch_model*.bin")):
            raise CommandError(f"{path}: no weights (*.safetensors or pytorch_model*.bin)")
        if not (path / "tokenizer.json").is_file() and not (path / "tokenizer_config.json").is_file():
            raise CommandError(f"{path}: no tokenizer (tokenizer.json or tokenizer_config.json)")
        try:  # load it once so that a broken checkpoint is refused here, not in a worker
            from transformers import AutoConfig

            AutoConfig.from_pretrained(path, local_files_only=True)
        except Exception as exc:
            raise CommandError(f"{path}: transformers cannot read this model ({exc})") from exc
        version, created = register_variant(
            role=ModelVersion.Role.GENERATOR, name=name or path.name, format="torch-fp32", artifact=path,
            config={"source": "registered local directory", "model_type": config.get("model_type"),
                    "architectures": architectures})
        if promote:
            try:
                # Audited with the operating-system user as actor (issue 13).
                version = model_version_promote(version=version, reason="models_register --promote",
                                                actor_name=os_actor())
            except PromotionRefused as exc:
                raise CommandError(f"not promoted: {exc} (use Django admin or the API to force it with a reason)") from exc
        self.stdout.write(f"{'registered' if created else 'already registered'} {version.label} "
                          f"({version.size_bytes / 1e6:,.1f} MB, sha256 {version.checksum[:12]}…, {version.status})")
