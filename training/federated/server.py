"""The coordinator side: a Flower ``ServerApp`` that runs the rounds, aggregates, evaluates and accounts.

``build_server_app(plan)`` returns a ServerApp whose ``main`` runs ``plan.rounds`` rounds. Each round:

1. the strategy (FedAvg, FedProx or FedAdam; wrapped in Flower's server-side fixed-clipping DP when
   ``central_dp``) builds one train message per connected centre: the global adapter + the recipe;
2. the grid delivers them and waits up to ``round_timeout_s``; a centre that fails or times out is
   left out of the round (it is "dropped"); fewer than ``min_centres`` answers fail the run;
3. the answers are aggregated into the new global adapter;
4. the server evaluates the global adapter on the held-out questions (``evaluate``) and hands one
   record per round (loss, dropped centres, bytes each way, each centre's epsilon) to ``on_round``.

``HeldOutLoss`` is that check: the mean assistant-token loss of the held-out questions, computed at the
coordinator (in simulation, in the job's process; deployed, in the ServerApp next to the SuperLink).
``plan.inspect`` (optional) sees every reply the server receives, before aggregation.
The outcome (final adapter state, rounds, per-centre info) is left in ``plan.outcome``.
"""
from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import torch

from .config import FederatedConfig

if TYPE_CHECKING:
    from training.config import FinetuneConfig

try:
    from flwr.app import ArrayRecord, ConfigRecord, Context, Message
    from flwr.serverapp import Grid, ServerApp
except ImportError:  # pragma: no cover
    ServerApp = None


class NotEnoughCentres(RuntimeError):
    """Fewer centres answered a round than ``min_centres``."""


class FederatedStopped(RuntimeError):
    """``should_stop`` turned true between rounds."""


def array_bytes(record) -> int:
    """Payload size of an ArrayRecord (the tensors' bytes as they travel)."""
    return sum(len(array.data) for array in record.values())


def make_strategy(fed: FederatedConfig, *, centres: int):
    from flwr.serverapp.strategy import FedAdam, FedAvg, FedProx

    common = {"fraction_train": 1.0, "fraction_evaluate": 0.0, "min_train_nodes": fed.min_centres,
              "min_available_nodes": fed.min_centres}
    if fed.strategy == "fedprox":
        strategy = FedProx(proximal_mu=fed.proximal_mu, **common)
    elif fed.strategy == "fedadam":
        strategy = FedAdam(eta=fed.server_learning_rate, **common)
    else:
        strategy = FedAvg(**common)
    if fed.central_dp:
        from flwr.serverapp.strategy import DifferentialPrivacyServerSideFixedClipping

        strategy = DifferentialPrivacyServerSideFixedClipping(
            strategy, noise_multiplier=fed.central_noise_multiplier, clipping_norm=fed.central_clip_norm,
            num_sampled_clients=centres)
    return strategy


def central_epsilon(fed: FederatedConfig, rounds: int, delta: float) -> float | None:
    """Centre-level epsilon of the central DP (all centres sampled every round: sample rate 1)."""
    if not fed.central_dp or rounds < 1:
        return None
    from opacus.accountants import RDPAccountant

    accountant = RDPAccountant()
    accountant.history = [(fed.central_noise_multiplier, 1.0, rounds)]
    return round(float(accountant.get_epsilon(delta)), 4)


class HeldOutLoss:
    """Mean assistant-token loss of the held-out questions under a given adapter (the server's per-round check)."""

    def __init__(self, base_dir: Path, config: FinetuneConfig, examples: list[dict], pad_token_id: int):
        from training.trainer import AssistantTokenLoss, load_lora_model

        self.model = load_lora_model(str(base_dir), config)
        self.model.eval()
        self.loss = AssistantTokenLoss(self.model)
        self.examples = examples
        self.pad_token_id = pad_token_id

    def load(self, state: dict[str, torch.Tensor]) -> None:
        with torch.no_grad():
            for name, param in self.model.named_parameters():
                if name in state:
                    param.copy_(state[name])

    def __call__(self, state: dict[str, torch.Tensor]) -> dict:
        from training.trainer import collate

        if not self.examples:
            return {}
        self.load(state)
        total = 0.0
        with torch.no_grad():
            for start in range(0, len(self.examples), 8):
                batch = collate(self.examples[start:start + 8], self.pad_token_id)
                loss, _ = self.loss(batch["input_ids"], batch["attention_mask"], batch["labels"], batch["weights"])
                total += float(loss) * batch["input_ids"].shape[0]
        return {"eval_loss": round(total / len(self.examples), 5)}


@dataclass
class ServerPlan:
    fed: FederatedConfig
    initial_state: dict[str, torch.Tensor]
    train_config: dict  # sent to every centre each round (recipe, local steps, paths in simulation)
    evaluate: Callable[[dict[str, torch.Tensor]], dict] | None = None
    on_round: Callable[[dict], None] | None = None
    should_stop: Callable[[], bool] | None = None
    inspect: Callable[[int, Message], None] | None = None
    dp_delta: float = 1e-5
    outcome: dict = field(default_factory=dict)


def run_rounds(grid: Grid, plan: ServerPlan) -> dict:
    fed = plan.fed
    strategy = make_strategy(fed, centres=fed.centres)
    arrays = ArrayRecord(torch_state_dict=plan.initial_state)
    centres: dict[str, dict] = {}
    rounds: list[dict] = []
    node_centre: dict[int, str] = {}
    if plan.evaluate is not None:
        rounds.append({"round": 0, **plan.evaluate(arrays.to_torch_state_dict())})
    for server_round in range(1, fed.rounds + 1):
        if plan.should_stop is not None and plan.should_stop():
            raise FederatedStopped(f"stopped before round {server_round}")
        started = time.perf_counter()
        messages = list(strategy.configure_train(server_round, arrays, ConfigRecord(dict(plan.train_config)), grid))
        sent = sum(array_bytes(m.content["arrays"]) for m in messages)
        replies = list(grid.send_and_receive(messages=messages, timeout=fed.round_timeout_s))
        answered = {m.metadata.src_node_id for m in replies}
        valid = [m for m in replies if not m.has_error()]
        failed = [m for m in replies if m.has_error()]
        missing = [m.metadata.dst_node_id for m in messages if m.metadata.dst_node_id not in answered]
        received = 0
        epsilons: dict[str, float] = {}
        for reply in valid:
            if plan.inspect is not None:
                plan.inspect(server_round, reply)
            centre = str(reply.content["centre"]["id"])
            node_centre[reply.metadata.src_node_id] = centre
            metrics = reply.content["metrics"]
            received += array_bytes(reply.content["arrays"])
            info = centres.setdefault(centre, {"id": centre, "rounds": 0})
            info.update(examples=int(metrics["num-examples"]), rounds=info["rounds"] + 1,
                        last_train_loss=float(metrics["train-loss"]))
            if "epsilon" in metrics:
                info["epsilon"] = epsilons[centre] = float(metrics["epsilon"])
        dropped = sorted(node_centre.get(m.metadata.src_node_id, f"node-{m.metadata.src_node_id}") for m in failed)
        dropped += sorted(node_centre.get(node, f"node-{node}") for node in missing)
        if len(valid) < fed.min_centres:
            raise NotEnoughCentres(f"round {server_round}: {len(valid)} of {len(messages)} centres answered, "
                                   f"min_centres is {fed.min_centres} (dropped: {', '.join(dropped) or 'none'}; "
                                   + "; ".join(m.error.reason[:200] for m in failed) + ")")
        aggregated, _ = strategy.aggregate_train(server_round, valid)
        if aggregated is None:
            raise RuntimeError(f"round {server_round}: the strategy could not aggregate the replies")
        arrays = aggregated
        record = {"round": server_round, "rounds": fed.rounds, "centres": len(valid), "dropped": dropped,
                  "bytes_sent": sent, "bytes_received": received,
                  "train_loss": round(sum(float(m.content["metrics"]["train-loss"]) *
                                          int(m.content["metrics"]["num-examples"]) for m in valid) /
                                      max(1, sum(int(m.content["metrics"]["num-examples"]) for m in valid)), 5),
                  "round_s": round(time.perf_counter() - started, 1)}
        if epsilons:
            record["epsilon"] = epsilons
            record["epsilon_max"] = max(epsilons.values())
        central = central_epsilon(fed, server_round, plan.dp_delta)
        if central is not None:
            record["central_epsilon"] = central
        if plan.evaluate is not None:
            record.update(plan.evaluate(arrays.to_torch_state_dict()))
        rounds.append(record)
        if plan.on_round is not None:
            plan.on_round(record)
    plan.outcome.update(state=arrays.to_torch_state_dict(), rounds=rounds, centres=centres)
    return plan.outcome


def build_server_app(plan: ServerPlan) -> ServerApp:
    app = ServerApp()

    @app.main()
    def main(grid: Grid, context: Context) -> None:
        try:
            run_rounds(grid, plan)
        except BaseException as exc:  # the simulation engine only logs a ServerApp's failure: keep it
            plan.outcome["error"] = exc
            raise

    return app
