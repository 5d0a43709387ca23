"""The coordinator's ServerApp for a deployed federation (Flower SuperLink + one SuperNode per centre).

``flwr run training/federated/app <federation> --run-config 'recipe-path="..." out-dir="..."'`` submits
this app (``app/pyproject.toml`` names ``server_app`` here and ``training.federated.client:app``); the
SuperLink runs ``server_app`` and every connected SuperNode runs the ClientApp on its own local file
(``federated_node`` prepared it and passes ``data-path`` in its node config).

Run config (strings are paths on the coordinator's machine):

- ``recipe-path``: a JSON file ``{"finetune": {...FinetuneConfig...}, "federated": {...FederatedConfig...},
  "base-dir": "...", "pad-token-id": 0, "eval-path": "..." (optional)}``; ``eval-path`` is a torch file
  of tokenized held-out examples, scored after every round (``server.HeldOutLoss``) as in simulation;
- ``out-dir``: where ``rounds.jsonl`` (one line per round), ``outcome.json`` (rounds and every centre's
  id, example count and epsilon) and ``adapter/`` (the final global LoRA adapter) are written; a failed
  run leaves ``error.json`` (``{"type", "message"}``) instead of ``outcome.json``.

Rounds, aggregation, dropout tolerance and accounting are ``server.run_rounds``, as in simulation. A
``finetune`` job with ``federated.engine: "deployment"`` submits this app and follows those files
(``deployment.run_deployed``); ``flwr run`` by hand works the same way.
"""
from __future__ import annotations

import json
from pathlib import Path

from flwr.app import Context
from flwr.serverapp import Grid, ServerApp

from training.config import FinetuneConfig

from .config import FederatedConfig
from .server import HeldOutLoss, ServerPlan, run_rounds

server_app = ServerApp()


@server_app.main()
def main(grid: Grid, context: Context) -> None:
    out_dir = Path(str(context.run_config["out-dir"]))
    out_dir.mkdir(exist_ok=True)  # not its parents: a cancelled job's deleted run stays deleted
    try:
        run(grid, Path(str(context.run_config["recipe-path"])), out_dir)
    except BaseException as exc:  # the coordinator reads why from here, not from the SuperLink's log
        try:
            _write_json(out_dir / "error.json", {"type": type(exc).__name__, "message": str(exc)[:4000]})
        except OSError:
            pass
        raise


def _write_json(path: Path, value) -> None:
    """Whole or not at all: the coordinator polls for this file."""
    partial = path.with_suffix(".partial")
    partial.write_text(json.dumps(value, indent=1))
    partial.replace(path)


def run(grid: Grid, recipe_path: Path, out_dir: Path) -> None:
    import torch

    from training.trainer import lora_state

    recipe = json.loads(recipe_path.read_text())
    config = FinetuneConfig.from_dict(recipe["finetune"])
    fed = FederatedConfig.from_dict(recipe.get("federated"))
    pad_id = int(recipe.get("pad-token-id", 0))
    examples = torch.load(recipe["eval-path"], weights_only=True) if recipe.get("eval-path") else []
    held_out = HeldOutLoss(Path(recipe["base-dir"]), config, examples, pad_id)  # also the model we save

    def on_round(record: dict) -> None:
        with open(out_dir / "rounds.jsonl", "a") as f:
            f.write(json.dumps(record) + "\n")

    # The first round waits for min_centres SuperNodes to connect (Flower's node sampling).
    train_config = {"finetune": json.dumps(config.as_dict()), "local-steps": fed.local_steps,
                    "pad-token-id": pad_id, "base-dir": str(recipe["base-dir"]), "threads": fed.threads_per_centre}
    plan = ServerPlan(fed=fed, initial_state=lora_state(held_out.model), train_config=train_config,
                      evaluate=held_out if examples else None, on_round=on_round, dp_delta=config.dp_delta)
    outcome = run_rounds(grid, plan)
    held_out.load(outcome["state"])
    held_out.model.save_pretrained(out_dir / "adapter")
    _write_json(out_dir / "outcome.json", {"rounds": outcome["rounds"], "centres": sorted(
        outcome["centres"].values(), key=lambda c: c["id"])})
