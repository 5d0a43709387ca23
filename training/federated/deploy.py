"""The coordinator's ServerApp for a deployed federation (Flower SuperLink + one SuperNode per centre).

``flwr run training/federated/app <federation> --run-config 'recipe-path="..." out-dir="..."'`` submits
this app (``app/pyproject.toml`` names ``server_app`` here and ``training.federated.client:app``); the
SuperLink runs ``server_app`` and every connected SuperNode runs the ClientApp on its own local file
(``federated_node`` prepared it and passes ``data-path`` in its node config).

Run config (strings are paths on the coordinator's machine):

- ``recipe-path``: a JSON file ``{"finetune": {...FinetuneConfig...}, "federated": {...FederatedConfig...},
  "base-dir": "...", "pad-token-id": 0}``;
- ``out-dir``: where ``rounds.jsonl`` (one line per round), ``outcome.json`` (rounds and every centre's
  id, example count and epsilon) and ``adapter/`` (the final global LoRA adapter) are written.

Rounds, aggregation, dropout tolerance and accounting are ``server.run_rounds``, as in simulation.
"""
from __future__ import annotations

import json
from pathlib import Path

from flwr.app import Context
from flwr.serverapp import Grid, ServerApp

from training.config import FinetuneConfig

from .config import FederatedConfig
from .server import ServerPlan, run_rounds

server_app = ServerApp()


@server_app.main()
def main(grid: Grid, context: Context) -> None:
    import torch

    from training.trainer import load_lora_model, lora_state

    recipe = json.loads(Path(str(context.run_config["recipe-path"])).read_text())
    out_dir = Path(str(context.run_config["out-dir"]))
    out_dir.mkdir(parents=True, exist_ok=True)
    config = FinetuneConfig.from_dict(recipe["finetune"])
    fed = FederatedConfig.from_dict(recipe.get("federated"))
    model = load_lora_model(str(recipe["base-dir"]), config)

    def on_round(record: dict) -> None:
        with open(out_dir / "rounds.jsonl", "a") as f:
            f.write(json.dumps(record) + "\n")

    # The first round waits for min_centres SuperNodes to connect (Flower's node sampling).
    train_config = {"finetune": json.dumps(config.as_dict()), "local-steps": fed.local_steps,
                    "pad-token-id": int(recipe.get("pad-token-id", 0)), "base-dir": str(recipe["base-dir"]),
                    "threads": fed.threads_per_centre}
    plan = ServerPlan(fed=fed, initial_state=lora_state(model), train_config=train_config, on_round=on_round,
                      dp_delta=config.dp_delta)
    outcome = run_rounds(grid, plan)
    with torch.no_grad():
        for name, param in model.named_parameters():
            if name in outcome["state"]:
                param.copy_(outcome["state"][name])
    model.save_pretrained(out_dir / "adapter")
    (out_dir / "outcome.json").write_text(json.dumps({"rounds": outcome["rounds"], "centres": sorted(
        outcome["centres"].values(), key=lambda c: c["id"])}, indent=1))
