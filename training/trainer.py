"""The LoRA training loop, run by Ray Train (``TorchTrainer`` on CPU workers, DDP over gloo).

``train_loop(loop_config)`` runs on every Ray Train worker, or in this process in local mode
(``num_workers=0``). What it does, per worker:

- loads the base causal LM in fp32 and wraps it with a peft LoRA adapter (rank, alpha, dropout,
  target modules, optionally only the top N layers);
- computes the loss on assistant tokens only, and applies the (large, frozen) output projection
  to those positions alone: on a CPU the 49k-word vocabulary projection of every prompt token
  would cost ~20% of the step for nothing;
- length-grouped micro-batches (little padding), gradient accumulation, clipping, linear warm-up
  then cosine decay, bf16 autocast only where the CPU has native bf16;
- optional DP-SGD with Opacus (Poisson sampling, per-sample clipping, noise; the spent epsilon is
  reported at the configured delta);
- rank 0 writes progress (step, loss, tokens/s, epsilon) to ``progress.jsonl`` in the run
  directory, where the driver reads it; a ``STOP`` file there stops every rank at the same step
  (an all-reduced flag, so DDP ranks never wait on each other);
- checkpoints (adapter, optimizer, scheduler, step, accountant) every ``checkpoint_every`` steps,
  written atomically; ``resume_from`` continues from the latest one at the same step.

It returns (rank 0) a summary dict; Ray passes it back as ``Result.return_value``.
"""
from __future__ import annotations

import json
import math
import os
import random
import shutil
import time
from pathlib import Path

import torch
import torch.nn.functional as F  # noqa: N812 (the usual alias)

from .config import FinetuneConfig

PROGRESS_FILE = "progress.jsonl"
STOP_FILE = "STOP"


def native_bf16() -> bool:
    capability = torch.backends.cpu.get_cpu_capability().lower()
    return "amx" in capability or "bf16" in capability or "avx512_bf16" in capability


def resolve_precision(config: FinetuneConfig) -> str:
    if config.precision == "auto":
        return "bf16" if native_bf16() else "fp32"
    return config.precision


class AssistantTokenLoss(torch.nn.Module):
    """Mean per-sequence cross-entropy over labelled (assistant) tokens; logits only where needed.

    Per sequence first, then the batch mean: the reduction Opacus' ``loss_reduction="mean"``
    assumes, so per-sample gradients are scaled right under DP-SGD.
    """

    def __init__(self, peft_model):
        super().__init__()
        self.peft_model = peft_model

    def forward(self, input_ids, attention_mask, labels, weights):
        causal = self.peft_model.get_base_model()
        hidden = causal.model(input_ids=input_ids, attention_mask=attention_mask, use_cache=False).last_hidden_state
        targets = labels[:, 1:]
        mask = targets != -100
        logits = causal.lm_head(hidden[:, :-1][mask]).float()
        token_weights = weights[:, 1:][mask]
        token_loss = F.cross_entropy(logits, targets[mask], reduction="none") * token_weights
        rows = mask.nonzero()[:, 0]
        per_sequence = torch.zeros(input_ids.shape[0], dtype=token_loss.dtype).index_add(0, rows, token_loss)
        # A weighted mean per sequence: the weights shift emphasis inside a sequence, never between them.
        counts = torch.zeros(input_ids.shape[0], dtype=token_loss.dtype).index_add(0, rows, token_weights).clamp(min=1e-6)
        # == mean() for a non-empty batch; 0 (not NaN) for the empty batch Poisson sampling can draw,
        # which under DP-SGD is still a step (noise only) and still counted by the accountant.
        return (per_sequence / counts).sum() / max(1, input_ids.shape[0]), int(mask.sum())


def load_lora_model(base_dir: str, config: FinetuneConfig):
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(base_dir, dtype=torch.float32, local_files_only=True)
    model.config.use_cache = False
    layers = None
    if config.lora_top_layers:
        total = model.config.num_hidden_layers
        layers = list(range(max(0, total - config.lora_top_layers), total))
    lora = LoraConfig(r=config.lora_r, lora_alpha=config.lora_alpha, lora_dropout=config.lora_dropout,
                      target_modules=list(config.target_modules), layers_to_transform=layers, bias="none",
                      task_type="CAUSAL_LM")
    return get_peft_model(model, lora)


def lora_state(peft_model) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in peft_model.named_parameters() if v.requires_grad}


def _unwrap(module):
    """The peft model inside DDP / Opacus wrappers."""
    while not isinstance(module, AssistantTokenLoss):
        module = getattr(module, "module", None) or getattr(module, "_module", None)
        if module is None:
            raise RuntimeError("could not find the training module inside its wrappers")
    return module.peft_model


# --- data -----------------------------------------------------------------------------------------------

class TokenizedDataset(torch.utils.data.Dataset):
    def __init__(self, examples: list[dict]):
        self.examples = examples

    def __len__(self):
        return len(self.examples)

    def __getitem__(self, index):
        return self.examples[index]


def collate(examples: list[dict], pad_token_id: int = 0) -> dict[str, torch.Tensor]:
    """Right-pad a micro-batch (labels -100 on padding)."""
    if not examples:  # Poisson sampling can draw an empty batch
        return {"input_ids": torch.zeros((0, 1), dtype=torch.long), "attention_mask": torch.zeros((0, 1), dtype=torch.long),
                "labels": torch.full((0, 1), -100, dtype=torch.long), "weights": torch.zeros((0, 1))}
    width = max(len(e["input_ids"]) for e in examples)
    ids = torch.full((len(examples), width), pad_token_id, dtype=torch.long)
    mask = torch.zeros((len(examples), width), dtype=torch.long)
    labels = torch.full((len(examples), width), -100, dtype=torch.long)
    weights = torch.zeros((len(examples), width))
    for row, e in enumerate(examples):
        n = len(e["input_ids"])
        ids[row, :n] = torch.as_tensor(e["input_ids"])
        mask[row, :n] = 1
        labels[row, :n] = torch.as_tensor(e["labels"])
        weights[row, :n] = torch.as_tensor(e.get("weights") or [1.0] * n)
    return {"input_ids": ids, "attention_mask": mask, "labels": labels, "weights": weights}


def length_grouped_batches(lengths: list[int], batch_size: int, seed: int) -> list[list[int]]:
    """Shuffled micro-batches of similar length: shuffle, sort within windows of 50 batches, shuffle batches."""
    rng = random.Random(seed)
    order = list(range(len(lengths)))
    rng.shuffle(order)
    window = batch_size * 50
    batches = []
    for start in range(0, len(order), window):
        chunk = sorted(order[start:start + window], key=lambda i: lengths[i])
        batches += [chunk[i:i + batch_size] for i in range(0, len(chunk), batch_size)]
    rng.shuffle(batches)
    return batches


def lr_lambda(total_steps: int, warmup_ratio: float):
    warmup = max(1, int(total_steps * warmup_ratio))

    def factor(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        progress = (step - warmup) / max(1, total_steps - warmup)
        return 0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * min(1.0, progress)))

    return factor


# --- checkpoints ----------------------------------------------------------------------------------------

def latest_checkpoint(path: str | Path) -> Path | None:
    """``path`` is a checkpoint directory, or a run directory whose newest checkpoint is wanted."""
    path = Path(path)
    if (path / "state.pt").exists():
        return path
    candidates = sorted((path / "checkpoints").glob("step-*"), key=lambda p: int(p.name.split("-")[1]))
    candidates = [c for c in candidates if (c / "state.pt").exists()]
    return candidates[-1] if candidates else None


def save_checkpoint(run_dir: Path, step: int, state: dict, keep: int) -> Path:
    root = run_dir / "checkpoints"
    target = root / f"step-{step}"
    tmp = root / f".step-{step}.partial"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    torch.save(state, tmp / "state.pt")
    shutil.rmtree(target, ignore_errors=True)
    tmp.rename(target)  # atomic: a checkpoint directory with state.pt is always complete
    for old in sorted(root.glob("step-*"), key=lambda p: int(p.name.split("-")[1]))[:-keep]:
        shutil.rmtree(old, ignore_errors=True)
    return target


# --- the loop -------------------------------------------------------------------------------------------

def _context():
    """(rank, world size) from Ray Train, or (0, 1) outside it."""
    try:
        import ray.train

        context = ray.train.get_context()
        return context.get_world_rank(), context.get_world_size()
    except Exception:
        return 0, 1


def train_loop(loop_config: dict) -> dict:
    config = FinetuneConfig.from_dict(loop_config["finetune"])
    run_dir = Path(loop_config["run_dir"])
    rank, world = _context()
    threads = config.threads_per_worker or max(1, (os.cpu_count() or 1) // max(1, world))
    torch.set_num_threads(threads)  # Ray starts workers with OMP_NUM_THREADS=1
    torch.manual_seed(config.seed + rank)
    precision = resolve_precision(config)

    examples = torch.load(loop_config["data_path"], weights_only=True)  # plain lists/dicts: no pickled code
    shard = examples[rank::world]  # each rank its own slice; the same number of steps everywhere
    peft_model = load_lora_model(loop_config["base_dir"], config)
    module = AssistantTokenLoss(peft_model)
    module.train()
    if world > 1:
        import ray.train.torch

        module = ray.train.torch.prepare_model(module, move_to_device=False)
    trainable = [p for p in module.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(trainable, lr=config.learning_rate, weight_decay=config.weight_decay)

    micro_per_epoch = math.ceil(min(len(e) for e in [examples[r::world] for r in range(world)]) / config.batch_size)
    steps_per_epoch = max(1, micro_per_epoch // config.grad_accumulation)
    total_steps = max(1, round(steps_per_epoch * config.epochs))

    privacy = None
    loader = None
    if config.dp:
        from opacus import PrivacyEngine

        privacy = PrivacyEngine(accountant="prv")
        base_loader = torch.utils.data.DataLoader(TokenizedDataset(shard), batch_size=config.batch_size,
                                                  collate_fn=lambda b: collate(b, loop_config["pad_token_id"]))
        module, optimizer, loader = privacy.make_private(
            module=module, optimizer=optimizer, data_loader=base_loader, noise_multiplier=config.noise_multiplier,
            max_grad_norm=config.max_grad_norm, poisson_sampling=True, grad_sample_mode="hooks")
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lr_lambda(total_steps, config.warmup_ratio))

    step = 0
    resumed_from, resumed_at = None, 0
    if config.resume_from:
        checkpoint = latest_checkpoint(config.resume_from)
        if checkpoint is None:
            raise FileNotFoundError(f"resume_from: no checkpoint under {config.resume_from}")
        state = torch.load(checkpoint / "state.pt", weights_only=True)  # tensors and plain values only
        if state["total_steps"] != total_steps:
            raise ValueError(f"resume_from: the checkpoint was made for {state['total_steps']} steps, this run has "
                             f"{total_steps} (the data or the recipe changed)")
        with torch.no_grad():
            for name, param in _unwrap(module).named_parameters():
                if name in state["adapter"]:
                    param.copy_(state["adapter"][name])
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        if privacy is not None and state.get("accountant_history") is not None:
            privacy.accountant.history = state["accountant_history"]
        step = resumed_at = state["step"]
        resumed_from = str(checkpoint)

    progress_path = run_dir / PROGRESS_FILE
    stop_path = run_dir / STOP_FILE
    lengths = [len(e["input_ids"]) for e in shard]
    started = time.perf_counter()
    tokens_seen = trained_tokens = 0
    window_loss: list[float] = []
    stopped = False
    autocast = torch.autocast("cpu", dtype=torch.bfloat16, enabled=precision == "bf16")

    def micro_batches():
        """Endless stream of micro-batches: epoch e is shuffled with seed + e (resume replays it)."""
        epoch = 0
        while True:
            if loader is not None:
                yield from loader
            else:
                for batch in length_grouped_batches(lengths, config.batch_size, config.seed + 1000 * epoch + rank):
                    yield collate([shard[i] for i in batch], loop_config["pad_token_id"])
            epoch += 1

    stream = micro_batches()
    # A resumed run skips the micro-batches its checkpoint already consumed (same order: same seeds).
    if loader is None:
        for _ in range(step * config.grad_accumulation):
            next(stream)

    while step < total_steps:
        if _should_stop(stop_path, world):
            stopped = True
            break
        optimizer.zero_grad(set_to_none=True)
        step_loss = 0.0
        for _ in range(config.grad_accumulation):
            batch = next(stream)
            if batch["input_ids"].shape[0] == 0:
                # Poisson sampling drew no example: under DP-SGD this is still a step (noise only) that
                # the accountant counts; the model cannot run on an empty batch, so give it empty grads.
                for param in trainable:
                    param.grad_sample = torch.zeros((0, *param.shape))
                continue
            with autocast:
                loss, n_tokens = module(batch["input_ids"], batch["attention_mask"], batch["labels"], batch["weights"])
            (loss / config.grad_accumulation).backward()
            step_loss += float(loss.detach()) / config.grad_accumulation
            tokens_seen += int(batch["attention_mask"].sum())
            trained_tokens += n_tokens
        if privacy is None:
            torch.nn.utils.clip_grad_norm_(trainable, config.max_grad_norm)
        optimizer.step()
        scheduler.step()
        step += 1
        window_loss.append(step_loss)
        if rank == 0:
            elapsed = time.perf_counter() - started
            record = {"step": step, "total_steps": total_steps, "loss": round(step_loss, 4),
                      "loss_avg": round(sum(window_loss[-20:]) / len(window_loss[-20:]), 4),
                      "lr": scheduler.get_last_lr()[0], "tokens": tokens_seen * world,
                      "tokens_per_s": round(tokens_seen * world / max(elapsed, 1e-9), 1),
                      "elapsed_s": round(elapsed, 1), "precision": precision}
            if privacy is not None:
                record["epsilon"] = round(privacy.get_epsilon(config.dp_delta), 4)
            with open(progress_path, "a") as f:
                f.write(json.dumps(record) + "\n")
            if config.checkpoint_every and step % config.checkpoint_every == 0 and step < total_steps:
                save_checkpoint(run_dir, step, _checkpoint_state(module, optimizer, scheduler, step, total_steps,
                                                                 privacy), config.keep_checkpoints)

    elapsed = time.perf_counter() - started
    summary = {"steps": step, "total_steps": total_steps, "stopped": stopped, "precision": precision,
               "threads_per_worker": threads, "world_size": world, "train_examples": len(examples),
               "tokens": tokens_seen * world, "loss_tokens": trained_tokens * world, "seconds": round(elapsed, 1),
               "tokens_per_s": round(tokens_seen * world / max(elapsed, 1e-9), 1),
               "final_loss": round(sum(window_loss[-20:]) / max(1, len(window_loss[-20:])), 4) if window_loss else None,
               "resumed_from": resumed_from, "resumed_at_step": resumed_at}
    if privacy is not None:
        summary.update(epsilon=round(privacy.get_epsilon(config.dp_delta), 4), delta=config.dp_delta,
                       noise_multiplier=config.noise_multiplier, clip_norm=config.max_grad_norm,
                       accountant="prv", sample_rate=round(config.batch_size / max(1, len(shard)), 5))
    if rank == 0 and not stopped:
        adapter_dir = run_dir / "adapter"
        shutil.rmtree(adapter_dir, ignore_errors=True)
        _unwrap(module).save_pretrained(adapter_dir)
        summary["adapter_dir"] = str(adapter_dir)
    return summary


def _checkpoint_state(module, optimizer, scheduler, step, total_steps, privacy) -> dict:
    return {"adapter": lora_state(_unwrap(module)), "optimizer": optimizer.state_dict(),
            "scheduler": scheduler.state_dict(), "step": step, "total_steps": total_steps,
            "accountant_history": list(privacy.accountant.history) if privacy is not None else None}


def _should_stop(stop_path: Path, world: int) -> bool:
    flag = stop_path.exists()
    if world > 1:
        import torch.distributed as dist

        tensor = torch.tensor([1 if flag else 0])
        dist.all_reduce(tensor, op=dist.ReduceOp.MAX)
        flag = bool(tensor.item())
    return flag
