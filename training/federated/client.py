"""The centre side: a Flower ``ClientApp`` that trains the LoRA adapter on the centre's own data.

Per round, a centre receives the global adapter (``arrays``) and the recipe (``config``), trains
``local-steps`` optimizer steps on its local examples with the existing trainer's pieces
(``training.trainer``: the same model loading, assistant-token loss, batching and clipping), with
optional DP-SGD (Opacus, Poisson sampling), and replies with:

- ``arrays``: the adapter weights only (the LoRA matrices, a few hundred KB to a few MB; never the base
  model, never examples or token ids);
- ``metrics``: example count (the FedAvg weight), mean training loss, steps, seconds and, under DP,
  the centre's spent epsilon at ``dp_delta``, composed over every round it has trained so far;
- ``centre``: the centre's id.

The privacy accountant's history lives in the node's ``context.state`` (kept by the SuperNode, or by
the simulation engine, across the rounds of one run), so epsilon grows with the rounds that spent it.

Where the data is: ``node_config["data-path"]`` (a deployed SuperNode, see ``federated_node``), else
``<simulation-data-dir>/centre-<partition-id>.pt`` (simulation). A centre whose data cannot be read or
whose training fails replies with an error; the server goes on without it if enough centres remain.

No Django here: Ray actors and SuperNodes import this module on their own.
"""
from __future__ import annotations

import json
import os
import time
from pathlib import Path

import torch

from training.config import FinetuneConfig
from training.trainer import (
    AssistantTokenLoss,
    TokenizedDataset,
    _unwrap,
    collate,
    length_grouped_batches,
    load_lora_model,
    lora_state,
)

try:  # flwr is required to run federated; this module's training function works without it
    from flwr.app import ArrayRecord, ConfigRecord, Context, Message, MetricRecord, RecordDict
    from flwr.clientapp import ClientApp
except ImportError:  # pragma: no cover
    ClientApp = None

ACCOUNTANT_KEY = "privacy-accountant"


def centre_name(node_config) -> str:
    if node_config.get("centre"):
        return str(node_config["centre"])
    return f"centre-{node_config.get('partition-id', 0)}"


def load_centre_examples(path: str | Path) -> list[dict]:
    """A centre's tokenized examples ({"input_ids", "labels", "weights"} lists), from its local file."""
    examples = torch.load(path, weights_only=True)
    if not isinstance(examples, list) or not examples:
        raise ValueError(f"{path}: no training examples")
    return examples


def train_centre(global_state: dict[str, torch.Tensor], examples: list[dict], *, base_dir: str, config: FinetuneConfig,
                 local_steps: int, pad_token_id: int, seed: int, proximal_mu: float = 0.0,
                 accountant_history: list | None = None) -> tuple[dict[str, torch.Tensor], dict, list]:
    """``local_steps`` optimizer steps from ``global_state``: (new adapter state, metrics, accountant history)."""
    torch.manual_seed(seed)
    peft_model = load_lora_model(base_dir, config)
    with torch.no_grad():
        for name, param in peft_model.named_parameters():
            if param.requires_grad:
                param.copy_(global_state[name])
    module = AssistantTokenLoss(peft_model)
    module.train()
    trainable = [p for p in module.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(trainable, lr=config.learning_rate, weight_decay=config.weight_decay)
    privacy = None
    if config.dp:
        from opacus import PrivacyEngine

        privacy = PrivacyEngine(accountant="prv")
        # Earlier rounds' steps: epsilon composes over the whole run, not per round.
        privacy.accountant.history = [tuple(entry) for entry in accountant_history or []]
        base_loader = torch.utils.data.DataLoader(TokenizedDataset(examples), batch_size=config.batch_size,
                                                  collate_fn=lambda b: collate(b, pad_token_id))
        module, optimizer, loader = privacy.make_private(
            module=module, optimizer=optimizer, data_loader=base_loader, noise_multiplier=config.noise_multiplier,
            max_grad_norm=config.max_grad_norm, poisson_sampling=True, grad_sample_mode="hooks")

    lengths = [len(e["input_ids"]) for e in examples]

    def micro_batches():
        epoch = 0
        while True:
            if privacy is not None:
                yield from loader
            else:
                for batch in length_grouped_batches(lengths, config.batch_size, seed + 1000 * epoch):
                    yield collate([examples[i] for i in batch], pad_token_id)
            epoch += 1

    anchor = {name: tensor.detach().clone() for name, tensor in global_state.items()} if proximal_mu else {}
    named = {name: p for name, p in _unwrap(module).named_parameters() if p.requires_grad}
    stream = micro_batches()
    started = time.perf_counter()
    losses: list[float] = []
    for _ in range(local_steps):
        optimizer.zero_grad(set_to_none=True)
        step_loss = 0.0
        for _ in range(config.grad_accumulation):
            batch = next(stream)
            if batch["input_ids"].shape[0] == 0:  # Poisson drew nothing: a noise-only DP step (see trainer)
                for param in trainable:
                    param.grad_sample = torch.zeros((0, *param.shape))
                continue
            loss, _ = module(batch["input_ids"], batch["attention_mask"], batch["labels"], batch["weights"])
            (loss / config.grad_accumulation).backward()
            step_loss += float(loss.detach()) / config.grad_accumulation
        if privacy is None:
            torch.nn.utils.clip_grad_norm_(trainable, config.max_grad_norm)
        optimizer.step()
        if proximal_mu:
            # FedProx's proximal term mu/2 ||w - w_global||^2, applied as its gradient step after the
            # optimizer's: post-processing of the private update, so it costs no privacy under DP-SGD.
            with torch.no_grad():
                for name, param in named.items():
                    param.sub_(config.learning_rate * proximal_mu * (param - anchor[name]))
        losses.append(step_loss)
    metrics = {"num-examples": len(examples), "train-loss": round(sum(losses) / max(1, len(losses)), 5),
               "steps": local_steps, "seconds": round(time.perf_counter() - started, 2)}
    history: list = []
    if privacy is not None:
        metrics["epsilon"] = round(float(privacy.get_epsilon(config.dp_delta)), 5)
        history = [list(entry) for entry in privacy.accountant.history]
    return lora_state(_unwrap(module)), metrics, history


if ClientApp is not None:
    app = ClientApp()

    @app.train()
    def train(msg: Message, context: Context) -> Message:
        config = msg.content["config"]
        centre = centre_name(context.node_config)
        data_path = context.node_config.get("data-path") or Path(str(config["simulation-data-dir"])) / f"{centre}.pt"
        base_dir = str(context.node_config.get("base-dir") or config["base-dir"])
        torch.set_num_threads(int(config.get("threads", 0)) or max(1, os.cpu_count() or 1))
        finetune = FinetuneConfig.from_dict(json.loads(str(config["finetune"])))
        examples = load_centre_examples(data_path)
        saved = context.state.config_records.get(ACCOUNTANT_KEY)
        history = json.loads(str(saved["history"])) if saved is not None else []
        global_state = msg.content["arrays"].to_torch_state_dict()
        state, metrics, history = train_centre(
            global_state, examples, base_dir=base_dir, config=finetune, local_steps=int(config["local-steps"]),
            pad_token_id=int(config["pad-token-id"]), seed=finetune.seed + 7919 * int(config["server-round"]),
            proximal_mu=float(config.get("proximal-mu", 0.0)), accountant_history=history)
        if finetune.dp:
            context.state[ACCOUNTANT_KEY] = ConfigRecord({"history": json.dumps(history)})
        return Message(RecordDict({"arrays": ArrayRecord(torch_state_dict=state), "metrics": MetricRecord(metrics),
                                   "centre": ConfigRecord({"id": centre})}), reply_to=msg)
