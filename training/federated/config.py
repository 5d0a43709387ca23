"""The federated part of a recipe: centres, rounds, aggregation, dropout tolerance, central DP.

``FederatedConfig`` travels as a plain dict (job params ``federated``, Flower's message config, the
registered ``ModelVersion.config``) next to the ``FinetuneConfig`` that every centre trains with:
learning rate, LoRA shape, batch size and DP-SGD (``dp``, ``noise_multiplier``, ``dp_delta``,
``max_grad_norm``) are the centralised recipe's own knobs, applied per centre.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

from training.config import ConfigError

STRATEGIES = ("fedavg", "fedprox", "fedadam")
PARTITIONS = ("year", "mesh")
ENGINES = ("ray", "inprocess", "deployment")


@dataclass
class FederatedConfig:
    # Virtual centres in a simulation (each reads only its own partition of the data); deployed, the
    # centres are the SuperNodes connected to the SuperLink and this is only the expected count.
    centres: int = 3
    # How the records are split into simulated centres: "year" (publication year bands: older to newer
    # literature, unequal sizes: non-IID in topic, vocabulary and label mix) or "mesh" (whole MeSH tree
    # branches, e.g. C04 Neoplasms to one centre, C14 Cardiovascular Diseases to another: non-IID in topic).
    partition: str = "year"
    # Federated rounds: in each, every centre trains ``local_steps`` optimizer steps from the global adapter.
    rounds: int = 3
    local_steps: int = 4
    # Aggregation: "fedavg" (example-weighted mean), "fedprox" (fedavg + a pull of each centre's
    # weights towards the global adapter, strength ``proximal_mu``), "fedadam" (server-side Adam with
    # learning rate ``server_learning_rate`` on the averaged update).
    strategy: str = "fedavg"
    proximal_mu: float = 0.01
    server_learning_rate: float = 0.01
    # A round goes on without centres that fail or time out while at least this many answered; fewer fails the run.
    min_centres: int = 2
    round_timeout_s: float = 900.0
    # Central DP on the aggregate (Flower's server-side fixed clipping): each centre's update is clipped
    # to ``central_clip_norm`` and Gaussian noise (``central_noise_multiplier`` x clip) is added to the sum.
    central_dp: bool = False
    central_noise_multiplier: float = 1.0
    central_clip_norm: float = 1.0
    # Torch threads for each simulated centre (Ray actor, one CPU each).
    threads_per_centre: int = 1
    # "ray": Flower's simulation engine (flwr.simulation, Ray backend: centres in parallel actors, RAY_ADDRESS
    # for a cluster). "inprocess": the same ServerApp/ClientApp messages delivered in this process one centre
    # after the other (training.federated.inprocess): no ~25 s Ray start-up, no parallelism, no round timeout.
    # "deployment": submitted to the coordinator's running Flower SuperLink (settings MEDASSIST_FLWR_SUPERLINK,
    # MEDASSIST_FLWR_ROOT_CERTIFICATES; training.federated.deployment), whose SuperNodes are the real centres
    # (``manage.py federated_node``), each training on its own local data: the coordinator holds none of it.
    engine: str = "ray"

    @classmethod
    def from_dict(cls, values: dict[str, Any] | None) -> FederatedConfig:
        values = dict(values or {})
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise ConfigError(f"federated.{unknown[0]}", f"unknown setting (known: {', '.join(sorted(known))})")
        try:
            config = cls(**values)
        except TypeError as exc:  # pragma: no cover - dataclass signature mismatch
            raise ConfigError("federated", str(exc)) from exc
        config.validate()
        return config

    def as_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def validate(self) -> None:
        for name in ("centres", "rounds", "local_steps", "min_centres", "threads_per_centre"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ConfigError(f"federated.{name}", "must be an integer of at least 1")
        for name, most in (("rounds", 1000), ("local_steps", 100_000), ("threads_per_centre", 256)):
            if getattr(self, name) > most:
                raise ConfigError(f"federated.{name}", f"at most {most}")
        if self.centres > 16:
            raise ConfigError("federated.centres", "at most 16 simulated centres")
        if self.min_centres > self.centres:
            raise ConfigError("federated.min_centres", f"must not exceed centres ({self.centres})")
        if self.strategy not in STRATEGIES:
            raise ConfigError("federated.strategy", f"choose from {', '.join(STRATEGIES)}")
        if self.engine not in ENGINES:
            raise ConfigError("federated.engine", f"choose from {', '.join(ENGINES)}")
        if self.partition not in PARTITIONS:
            raise ConfigError("federated.partition", f"choose from {', '.join(PARTITIONS)}")
        for name in ("proximal_mu", "server_learning_rate", "round_timeout_s", "central_noise_multiplier",
                     "central_clip_norm"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int | float) or value < 0:
                raise ConfigError(f"federated.{name}", "must be a non-negative number")
        if self.round_timeout_s <= 0 or self.server_learning_rate <= 0:
            raise ConfigError("federated.round_timeout_s" if self.round_timeout_s <= 0 else
                              "federated.server_learning_rate", "must be positive")
        if self.central_dp and (self.central_noise_multiplier <= 0 or self.central_clip_norm <= 0):
            raise ConfigError("federated.central_noise_multiplier", "must be positive with central_dp")
