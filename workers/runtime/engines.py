"""Model engines: load a registered model version and run it on CPU threads.

Two roles, four backends each chosen per ``ModelVersion.format``:

- generator (a Hugging Face causal LM directory): ``torch-fp32``, ``torch-int8`` (dynamic int8
  Linear layers, with the ``exclude`` names (``MEDASSIST_INT8_EXCLUDE``) kept in fp32 because they carry
  activation outliers), ``onnx-fp32`` and ``onnx-int8`` (onnxruntime, see ``onnx_models``).
- embedder (a sentence-transformers/BERT directory, mean pooling): ``torch-fp32``, ``onnx-fp32``,
  ``onnx-int8``.

``Generator`` is backend-agnostic: batched, left-padded greedy generation with a KV cache, stop
strings, a repetition penalty, option scoring by likelihood (question answering) and NLL. Nothing
here touches a model hub: every path is a local directory.
"""
from __future__ import annotations

import re
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch

from workers.runtime.onnx_models import left_padded

# Tokens that end a chat turn (SmolLM2 / ChatML): generation stops on them, and fine-tuning labels them.
CHAT_END_TOKENS = ("<|im_end|>", "<|endoftext|>")


def chat_end_token_ids(tokenizer) -> set[int]:
    """The ids that end an assistant turn for this tokenizer: its EOS plus the chat end tokens it knows."""
    ends = {tokenizer.eos_token_id}
    for token in CHAT_END_TOKENS:
        token_id = tokenizer.convert_tokens_to_ids(token)
        if isinstance(token_id, int) and token_id != tokenizer.unk_token_id:
            ends.add(token_id)
    return {t for t in ends if t is not None}


# --- causal LM backends: forward(ids, mask) -> logits; generate(...) -> new token ids per row ---------------------

def position_ids_for(attention_mask: torch.Tensor) -> torch.Tensor:
    """Left padding: positions count real tokens only (0 for the padding itself)."""
    return (attention_mask.long().cumsum(-1) - 1).clamp(min=0)


class TorchCausalLM:
    def __init__(self, model_dir: Path, *, int8: bool = False, exclude: tuple[str, ...] = (), threads: int = 1,
                 int8_state: Path | None = None):
        from transformers import AutoModelForCausalLM

        torch.set_num_threads(threads)
        model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32, local_files_only=True)
        model.eval()
        if int8:
            model = quantize_int8(model, exclude=exclude)
            if int8_state is not None and int8_state.exists():
                # weights_only: a state dict is tensors; never unpickle arbitrary objects from an artifact.
                model.load_state_dict(torch.load(int8_state, weights_only=True))
        self.model = model

    @torch.inference_mode()
    def forward(self, input_ids: np.ndarray, attention_mask: np.ndarray) -> np.ndarray:
        ids = torch.as_tensor(input_ids)
        mask = torch.as_tensor(attention_mask)
        out = self.model(input_ids=ids, attention_mask=mask, position_ids=position_ids_for(mask), use_cache=False)
        return out.logits.float().numpy()

    @torch.inference_mode()
    def forward_last(self, input_ids: np.ndarray, attention_mask: np.ndarray) -> np.ndarray:
        """Logits of the last position only [B, V]: avoids a [B, T, 49k] tensor when scoring."""
        mask = torch.as_tensor(attention_mask)
        out = self.model(input_ids=torch.as_tensor(input_ids), attention_mask=mask,
                         position_ids=position_ids_for(mask), use_cache=False, logits_to_keep=1)
        return out.logits[:, -1, :].float().numpy()

    @torch.inference_mode()
    def generate(self, input_ids: np.ndarray, attention_mask: np.ndarray, *, max_new_tokens: int,
                 eos_token_ids: set[int], pad_token_id: int, repetition_penalty: float = 1.0,
                 should_stop=None, min_new_tokens: int = 0) -> list[list[int]]:
        """Greedy decoding of a left-padded batch, reusing the KV cache at every step (no eos before
        ``min_new_tokens`` new tokens)."""
        from transformers import DynamicCache

        ids = torch.as_tensor(input_ids)
        mask = torch.as_tensor(attention_mask)
        batch = ids.shape[0]
        seen = [set(row[m.bool()].tolist()) for row, m in zip(ids, mask, strict=True)]
        new_tokens: list[list[int]] = [[] for _ in range(batch)]
        done = [False] * batch
        cache = DynamicCache()
        step_ids, positions = ids, position_ids_for(mask)
        for _ in range(max_new_tokens):
            out = self.model(input_ids=step_ids, attention_mask=mask, position_ids=positions, past_key_values=cache,
                             use_cache=True)
            cache = out.past_key_values
            logits = out.logits[:, -1, :].float()
            next_ids = []
            for row in range(batch):
                row_logits = logits[row]
                if repetition_penalty != 1.0 and seen[row]:
                    apply_repetition_penalty(row_logits, seen[row], repetition_penalty)
                if len(new_tokens[row]) < min_new_tokens and eos_token_ids:
                    row_logits[torch.tensor(sorted(eos_token_ids), dtype=torch.long)] = float("-inf")
                token = int(row_logits.argmax())
                if not done[row]:
                    if token in eos_token_ids:
                        done[row] = True
                    else:
                        new_tokens[row].append(token)
                        seen[row].add(token)
                        if should_stop is not None and should_stop(row, new_tokens[row]):
                            done[row] = True
                next_ids.append(token if not done[row] else pad_token_id)
            if all(done):
                break
            step_ids = torch.tensor(next_ids, dtype=torch.long).unsqueeze(1)
            positions = positions[:, -1:] + 1
            mask = torch.cat([mask, torch.ones((batch, 1), dtype=mask.dtype)], dim=1)
        return new_tokens


def apply_repetition_penalty(logits: torch.Tensor, token_ids: set[int], penalty: float) -> None:
    """The CTRL/Hugging Face rule, in place: shrink the logits of tokens already seen."""
    index = torch.tensor(sorted(token_ids), dtype=torch.long)
    values = logits[index]
    logits[index] = torch.where(values > 0, values / penalty, values * penalty)


def quantize_int8(model: torch.nn.Module, *, exclude: tuple[str, ...]) -> torch.nn.Module:
    """Dynamic int8 for every Linear whose name contains none of ``exclude`` (e.g. down_proj).

    Weights per output channel: per-tensor scales cost SmolLM2 more NLL on MEDLINE abstracts than per
    channel (docs/benchmarks.md, "Model backends").
    """
    import ctypes
    import gc

    from torch.ao.quantization import per_channel_dynamic_qconfig, quantize_dynamic

    targets = {name: per_channel_dynamic_qconfig for name, module in model.named_modules()
               if isinstance(module, torch.nn.Linear) and not any(part in name for part in exclude)}
    quantized = quantize_dynamic(model, qconfig_spec=targets, dtype=torch.qint8, inplace=True)
    # The fp32 weights just replaced are freed, but glibc keeps the pages: hand them back so the
    # process's resident memory reflects the int8 model (bench_models measures it).
    gc.collect()
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except OSError:
        pass
    return quantized


# --- embedders ------------------------------------------------------------------------------------------------

class TorchEmbedder:
    def __init__(self, model_dir: Path, *, threads: int = 1, max_length: int = 256):
        from transformers import AutoModel, AutoTokenizer

        torch.set_num_threads(threads)
        self.tokenizer = AutoTokenizer.from_pretrained(model_dir, local_files_only=True)
        self.model = AutoModel.from_pretrained(model_dir, dtype=torch.float32, local_files_only=True).eval()
        self.max_length = max_length

    @torch.inference_mode()
    def encode(self, texts: list[str], *, batch_size: int = 32) -> np.ndarray:
        order = sorted(range(len(texts)), key=lambda i: len(texts[i]))  # batch neighbours by length
        out = np.zeros((len(texts), self.model.config.hidden_size), dtype=np.float32)
        for start in range(0, len(order), batch_size):
            index = order[start:start + batch_size]
            enc = self.tokenizer([texts[i] for i in index], padding=True, truncation=True,
                                 max_length=self.max_length, return_tensors="pt")
            hidden = self.model(**enc).last_hidden_state
            mask = enc["attention_mask"].unsqueeze(-1).float()
            pooled = (hidden * mask).sum(1) / mask.sum(1).clamp(min=1e-9)
            out[index] = torch.nn.functional.normalize(pooled, dim=-1).numpy()
        return out


# --- the backend-agnostic generator ---------------------------------------------------------------------------

@dataclass
class GenerationSettings:
    """Recorded with every generated text, so a result can be reproduced."""

    max_new_tokens: int = 64
    repetition_penalty: float = 1.1
    stop: list[str] = field(default_factory=list)
    decoding: str = "greedy"
    # Stop after this many complete sentences (None: no limit); the text is cut at the last one's end. A
    # sentence of fewer than ``sentence_min_words`` words ("No.") does not count: it is kept, and generation goes on.
    sentences: int | None = None
    sentence_min_words: int = 1
    # The end-of-turn tokens cannot come before this many new tokens (a reply of a bare "Yes." goes on).
    min_new_tokens: int = 0

    def as_dict(self) -> dict:
        return asdict(self)


# A sentence ends at . ! or ? (and a closing quote or bracket) followed by white space, unless the word before
# the full stop is an abbreviation that does not end sentences. Seen one token late (the white space and the
# next word), so a completion is stopped one token after its sentence ended and cut back to it.
_SENTENCE_END_RE = re.compile(r"[.!?][\"')\]]?(?=\s+\S)")
_NOT_A_SENTENCE_END = {"e.g", "i.e", "vs", "al", "approx", "ca", "cf", "fig", "dr", "mr", "mrs", "ms", "st"}


def sentence_ends(text: str, *, min_words: int = 1) -> list[int]:
    """Offsets just past each complete sentence of ``text`` (one followed by more text) of at least
    ``min_words`` words; a shorter one joins the next."""
    ends, start = [], 0
    for match in _SENTENCE_END_RE.finditer(text):
        word = re.findall(r"[\w.]+$", text[:match.start()])
        if match.group().startswith(".") and word and (word[0].lower() in _NOT_A_SENTENCE_END or len(word[0]) == 1):
            continue  # "e.g.", "vs.", an initial
        if len(text[start:match.end()].split()) < min_words:
            continue
        ends.append(match.end())
        start = match.end()
    return ends


# Shorter shared prefixes are not worth a separate prefill (generate reads prompts afresh then).
MIN_SHARED_PREFIX_TOKENS = 8


class Generator:
    def __init__(self, backend, tokenizer_dir: Path, *, max_prompt_tokens: int = 1024):
        from transformers import AutoTokenizer

        self.backend = backend
        self.tokenizer = AutoTokenizer.from_pretrained(tokenizer_dir, local_files_only=True)
        self.tokenizer.padding_side = "left"
        if self.tokenizer.pad_token_id is None:
            self.tokenizer.pad_token = self.tokenizer.eos_token
        self.max_prompt_tokens = max_prompt_tokens
        self.eos_token_ids = chat_end_token_ids(self.tokenizer)

    def chat_prompt(self, user_message: str, *, system: str | None = None,
                    history: list[tuple[str, str]] = ()) -> str:
        """The model's chat format; ``history`` holds earlier (user, assistant) turns."""
        messages = [{"role": "system", "content": system}] if system else []
        for user, assistant in history:
            messages += [{"role": "user", "content": user}, {"role": "assistant", "content": assistant}]
        messages.append({"role": "user", "content": user_message})
        if self.tokenizer.chat_template:
            return self.tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
        return "\n".join(m["content"] for m in messages) + "\n"

    def _encode(self, prompts: list[str]):
        # Truncate from the left: the instruction sits at the end of our prompts.
        self.tokenizer.truncation_side = "left"
        enc = self.tokenizer(prompts, padding=True, truncation=True, max_length=self.max_prompt_tokens,
                             return_tensors="np", add_special_tokens=False)
        return enc["input_ids"].astype(np.int64), enc["attention_mask"].astype(np.int64)

    def _token_rows(self, prompts: list[str]) -> list[list[int]]:
        """Each prompt's token ids, unpadded, truncated from the left like ``_encode``."""
        self.tokenizer.truncation_side = "left"
        return self.tokenizer(prompts, truncation=True, max_length=self.max_prompt_tokens,
                              add_special_tokens=False)["input_ids"]

    @staticmethod
    def shared_prefix_length(rows: list[list[int]]) -> int:
        """Tokens every row starts with, leaving each row at least one of its own (the last position's logits
        come from it)."""
        if not rows:
            return 0
        limit = min(len(row) for row in rows) - 1
        first = rows[0]
        length = 0
        while length < limit and all(row[length] == first[length] for row in rows):
            length += 1
        return max(length, 0)

    def generate(self, prompts: list[str], settings_: GenerationSettings, *, batch_size: int = 8,
                 share_prefix: bool = True) -> list[str]:
        """Greedy completions, returned in input order, at most ``batch_size`` decoding at a time.

        The tokens all prompts start with (the chat template's system turn, a job's one question) are read
        once per call when the backend can keep a cache (``prefill``): each batch then starts from that cache.
        A backend with ``generate_rows`` (onnxruntime) batches continuously, shortest prompts first: a finished
        row's place goes to the next prompt; otherwise prompts are batched by length (less padding).
        """
        texts: list[str] = [""] * len(prompts)
        if not prompts:
            return texts
        rows = self._token_rows(prompts)
        prefix = None
        shared = self.shared_prefix_length(rows) if share_prefix and hasattr(self.backend, "prefill") else 0
        if shared >= MIN_SHARED_PREFIX_TOKENS:
            prefix_ids = list(rows[0][:shared])
            prefix = (prefix_ids, self.backend.prefill(prefix_ids))
            rows = [row[shared:] for row in rows]

        def should_stop(row: int, new_ids: list[int]) -> bool:
            if settings_.sentences and len(sentence_ends(self.tokenizer.decode(new_ids, skip_special_tokens=True),
                                                         min_words=settings_.sentence_min_words)) >= settings_.sentences:
                return True
            if not settings_.stop:
                return False
            tail = self.tokenizer.decode(new_ids[-8:], skip_special_tokens=True)
            return any(stop in tail for stop in settings_.stop)

        if hasattr(self.backend, "generate_rows"):
            # Continuous batching: up to batch_size rows decode at once, and waiting prompts join as rows finish.
            outputs = self.backend.generate_rows(rows, max_batch=batch_size, max_new_tokens=settings_.max_new_tokens,
                                                 eos_token_ids=self.eos_token_ids,
                                                 pad_token_id=self.tokenizer.pad_token_id,
                                                 repetition_penalty=settings_.repetition_penalty,
                                                 should_stop=should_stop, prefix=prefix,
                                                 min_new_tokens=settings_.min_new_tokens)
            return [self._finish(self.tokenizer.decode(new_ids, skip_special_tokens=True), settings_)
                    for new_ids in outputs]
        order = sorted(range(len(prompts)), key=lambda i: len(rows[i]))
        for start in range(0, len(order), batch_size):
            index = order[start:start + batch_size]
            # (no prefix here: only the onnxruntime backend keeps one, and it batches continuously)
            ids, mask = left_padded([rows[i] for i in index], self.tokenizer.pad_token_id)
            outputs = self.backend.generate(ids, mask, max_new_tokens=settings_.max_new_tokens,
                                            eos_token_ids=self.eos_token_ids,
                                            pad_token_id=self.tokenizer.pad_token_id,
                                            repetition_penalty=settings_.repetition_penalty, should_stop=should_stop,
                                            min_new_tokens=settings_.min_new_tokens)
            for i, new_ids in zip(index, outputs, strict=True):
                texts[i] = self._finish(self.tokenizer.decode(new_ids, skip_special_tokens=True), settings_)
        return texts

    @staticmethod
    def _finish(text: str, settings_: GenerationSettings) -> str:
        for stop in settings_.stop:
            text = text.split(stop)[0]
        if settings_.sentences:
            ends = sentence_ends(text, min_words=settings_.sentence_min_words)
            if len(ends) >= settings_.sentences:
                text = text[:ends[settings_.sentences - 1]]
        return text.strip()

    def _forward_last(self, ids: np.ndarray, mask: np.ndarray) -> np.ndarray:
        if hasattr(self.backend, "forward_last"):
            return self.backend.forward_last(ids, mask)
        return self.backend.forward(ids, mask)[:, -1, :]

    def score_options(self, prompts: list[str], options: list[str], *, batch_size: int = 4) -> list[dict[str, float]]:
        """P(option | prompt) from the model's next-token likelihoods, normalised over the options.

        The options must start with distinct tokens (``Yes``/``No``/``Maybe`` do): one forward pass
        per batch of prompts then scores every option. The answer is read from these numbers, never
        parsed out of free text.
        """
        first_tokens = [self.tokenizer(o, add_special_tokens=False)["input_ids"][0] for o in options]
        if len(set(first_tokens)) != len(first_tokens):
            raise ValueError(f"options {options} do not start with distinct tokens")
        results: list[dict[str, float]] = [{} for _ in prompts]
        order = sorted(range(len(prompts)), key=lambda i: len(prompts[i]))
        for start in range(0, len(order), batch_size):
            index = order[start:start + batch_size]
            ids, mask = self._encode([prompts[i] for i in index])
            last = torch.as_tensor(self._forward_last(ids, mask))  # left padding: the last column is real
            log_probs = torch.log_softmax(last.float(), dim=-1)
            for row, i in enumerate(index):
                scores = torch.stack([log_probs[row, t] for t in first_tokens])
                probs = torch.softmax(scores, dim=0).tolist()
                results[i] = dict(zip(options, probs, strict=True))
        return results

    def nll(self, texts: list[str], *, max_tokens: int = 256) -> float:
        """Mean negative log-likelihood per token over the texts (quality of a backend)."""
        total, count = 0.0, 0
        for text in texts:
            ids = np.array([self.tokenizer(text, add_special_tokens=False)["input_ids"][:max_tokens]], dtype=np.int64)
            logits = torch.as_tensor(self.backend.forward(ids, np.ones_like(ids)))
            log_probs = torch.log_softmax(logits[0, :-1], dim=-1)
            target = torch.as_tensor(ids[0, 1:])
            total -= float(log_probs[torch.arange(len(target)), target].sum())
            count += len(target)
        return total / max(count, 1)

