"""The artifact store: where model versions live on disk, their checksums, and loading one.

The runtime knows no database: it loads from an ``EngineSpec`` (role, format, directory, checksum,
config, label). A registry ``ModelVersion`` row has the same fields, so it can be passed as it is;
``workers.versions`` is where the database's choice of active versions meets this module.

A version's ``artifact_path`` is a directory; ``checksum`` is the SHA-256 over every file in it
(relative path + bytes, in sorted order), checked again when a worker loads it, so a changed or
truncated artifact is refused with a clear error instead of serving something unregistered.
``config["base_dir"]`` names the fp32 directory that holds the tokenizer and architecture
(int8 and ONNX variants point at it).
"""
from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

from .engines import Generator, TorchCausalLM, TorchEmbedder
from .memory import release_freed_memory

# The roles the runtime can load (the registry's role values for engines).
GENERATOR, EMBEDDER, ANSWER_EVIDENCE = "generator", "embedder", "answer_evidence"


class Spec(Protocol):
    role: str
    format: str
    artifact_path: str
    checksum: str
    config: dict
    label: str


@dataclass(frozen=True)
class EngineSpec:
    """Everything needed to load one model version, as plain values."""

    role: str  # generator, embedder or answer_evidence
    format: str  # torch-fp32, torch-int8, onnx-fp32, onnx-int8, or the answer-evidence format
    artifact_path: str  # the version's directory
    checksum: str = ""  # sha256 of the directory (``directory_checksum``); empty: refused when loading
    config: dict = field(default_factory=dict)  # base_dir, int8 exclusions, ...
    label: str = ""  # how errors and results name it


class ArtifactError(RuntimeError):
    """A model version's files are missing, changed or unreadable."""


def directory_checksum(path: Path) -> tuple[str, int]:
    """(sha256, total bytes) of every file under ``path``."""
    path = Path(path)
    if not path.is_dir():
        raise ArtifactError(f"artifact directory {path} does not exist")
    digest = hashlib.sha256()
    size = 0
    for file in sorted(p for p in path.rglob("*") if p.is_file()):
        digest.update(str(file.relative_to(path)).encode())
        with open(file, "rb") as f:
            for block in iter(lambda: f.read(1 << 20), b""):
                digest.update(block)
                size += len(block)
    return digest.hexdigest(), size


def verify(version: Spec) -> None:
    """Refuse a version whose files differ from its registered checksum, or that has none (a blank
    checksum would otherwise skip the check and serve whatever lies at its path)."""
    if version.format == "dictionary":
        return
    try:
        checksum, _ = directory_checksum(Path(version.artifact_path))
    except OSError as exc:
        raise ArtifactError(f"{version.label}: artifact unreadable ({exc})") from exc
    if not (version.checksum or "").strip():
        raise ArtifactError(f"{version.label}: no registered checksum, so its files cannot be verified; "
                            "register it with models_register or models_prepare")
    if checksum != version.checksum:
        raise ArtifactError(f"{version.label}: artifact at {version.artifact_path} does not match its registered "
                            "checksum (changed or corrupt); re-run models_prepare or register it again")


def load_engine(version: Spec, *, threads: int = 1):
    """Load a generator (``Generator``), embedder (``encode()``) or answer-evidence model for a version.

    ``threads``: torch/onnxruntime threads of this process (workers pass MEDASSIST_TORCH_THREADS so
    that processes x threads = cores)."""
    verify(version)
    try:
        return _load_engine(version, threads=max(1, int(threads)))
    finally:
        release_freed_memory()  # what loading freed (fp32 copies, the parsed graph) leaves the process


def _load_engine(version: Spec, *, threads: int):
    artifact = Path(version.artifact_path)
    base = Path(version.config.get("base_dir") or artifact)
    try:
        if version.role == GENERATOR:
            if version.format == "torch-fp32":
                backend = TorchCausalLM(artifact, threads=threads)
            elif version.format == "torch-int8":
                backend = TorchCausalLM(base, int8=True, exclude=tuple(version.config.get("exclude", ())),
                                        threads=threads, int8_state=artifact / "model_int8.pt")
            elif version.format in ("onnx-fp32", "onnx-int8"):
                from .onnx_models import OnnxCausalLM

                backend = OnnxCausalLM(artifact / "model.onnx", threads=threads)
            else:
                raise ArtifactError(f"{version.label}: unknown generator format {version.format!r}")
            return Generator(backend, base)
        if version.role == EMBEDDER:
            if version.format == "torch-fp32":
                return TorchEmbedder(artifact, threads=threads)
            if version.format in ("onnx-fp32", "onnx-int8"):
                from .onnx_models import OnnxEmbedder

                return OnnxEmbedder(artifact / "model.onnx", base, threads=threads)
            raise ArtifactError(f"{version.label}: unknown embedder format {version.format!r}")
        if version.role == ANSWER_EVIDENCE:
            from .answer_evidence import FORMAT, AnswerEvidenceModel

            if version.format != FORMAT:
                raise ArtifactError(f"{version.label}: unknown answer-evidence format {version.format!r}")
            return AnswerEvidenceModel.load(artifact)
    except ArtifactError:
        raise
    except Exception as exc:  # a corrupt file surfaces as whatever the loader raises: name the version
        raise ArtifactError(f"{version.label}: could not load the model ({type(exc).__name__}: {exc})") from exc
    raise ArtifactError(f"{version.label}: role {version.role!r} has no loader")
