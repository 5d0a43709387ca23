"""ONNX export / int8 / onnxruntime inference of the worker's causal LM and sentence embedder.

Everything runs on tiny random-initialised models written into tmp dirs (no hub, no real checkpoint):
a 2-layer GQA Llama (vocab 512) and a 2-layer BERT with a WordPiece tokenizer built here.

Tolerances: the fp32 ONNX graph computes the same fp32 math as torch; only the kernels' accumulation
order differs (MLAS vs torch's GEMMs), which moves O(1) values by ~1e-6. ``atol = rtol = 1e-4`` leaves two
orders of magnitude of headroom while still catching any real difference (a wrong mask, a wrong position,
a dropped cache entry all move logits by >1e-2).
"""
from __future__ import annotations

import numpy as np
import pytest
import torch  # requirements: a missing one fails the run instead of skipping these tests

from workers.runtime.onnx_models import (
    OnnxCausalLM,
    OnnxEmbedder,
    export_causal_lm,
    export_embedder,
    position_ids_for,
    quantize_causal_lm,
    quantize_embedder,
)

ATOL = RTOL = 1e-4
PAD, BOS, EOS = 0, 1, 2
VOCAB = 512


# ------------------------------------------------------------------------------------------------
# Fixtures: tiny models, exported once per module
# ------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def lm_dir(tmp_path_factory):
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(1234)
    config = LlamaConfig(
        vocab_size=VOCAB, hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
        num_key_value_heads=2, max_position_embeddings=256, pad_token_id=PAD, bos_token_id=BOS, eos_token_id=EOS,
        tie_word_embeddings=True, initializer_range=0.1,  # wider than 0.02: logits with a clear argmax
    )
    model = LlamaForCausalLM(config).eval()
    path = tmp_path_factory.mktemp("tiny-llama")
    model.save_pretrained(path)
    return path


@pytest.fixture(scope="module")
def torch_lm(lm_dir):
    from transformers import AutoModelForCausalLM

    return AutoModelForCausalLM.from_pretrained(str(lm_dir), dtype=torch.float32).eval()


@pytest.fixture(scope="module")
def lm_onnx(lm_dir, tmp_path_factory):
    return export_causal_lm(lm_dir, tmp_path_factory.mktemp("lm-onnx"))


@pytest.fixture(scope="module")
def lm(lm_onnx):
    return OnnxCausalLM(lm_onnx)


@pytest.fixture(scope="module")
def lm_int8(lm_onnx, tmp_path_factory):
    return quantize_causal_lm(lm_onnx, tmp_path_factory.mktemp("lm-int8") / "model.int8.onnx")


def left_padded(rows: list[list[int]]) -> tuple[np.ndarray, np.ndarray]:
    width = max(map(len, rows))
    ids = np.full((len(rows), width), PAD, dtype=np.int64)
    mask = np.zeros((len(rows), width), dtype=np.int64)
    for b, row in enumerate(rows):
        ids[b, width - len(row):] = row
        mask[b, width - len(row):] = 1
    return ids, mask


PROMPTS = [[BOS, 17, 250, 33, 9], [BOS, 401, 77, 12, 300, 145, 8, 61, 23]]  # different lengths -> left padding


def torch_logits(model, ids: np.ndarray, mask: np.ndarray) -> np.ndarray:
    with torch.no_grad():
        return model(
            input_ids=torch.from_numpy(ids), attention_mask=torch.from_numpy(mask),
            position_ids=torch.from_numpy(position_ids_for(mask)),
        ).logits.numpy()


def torch_greedy(model, ids: np.ndarray, mask: np.ndarray, new: int, **kwargs) -> list[list[int]]:
    with torch.no_grad():
        out = model.generate(
            input_ids=torch.from_numpy(ids), attention_mask=torch.from_numpy(mask), do_sample=False,
            max_new_tokens=new, min_new_tokens=new, pad_token_id=PAD, eos_token_id=None, **kwargs,
        )
    return out[:, ids.shape[1]:].tolist()


NO_EOS: set[int] = set()


# ------------------------------------------------------------------------------------------------
# Causal LM
# ------------------------------------------------------------------------------------------------


def test_lm_graph_has_kv_cache_io(lm_onnx):
    import onnx

    graph = onnx.load(str(lm_onnx)).graph
    inputs = [i.name for i in graph.input]
    outputs = [o.name for o in graph.output]
    assert inputs[:4] == ["input_ids", "attention_mask", "position_ids", "logits_to_keep"]
    assert inputs[4:] == [f"past_key_values.{i}.{kv}" for i in range(2) for kv in ("key", "value")]
    assert outputs == ["logits"] + [f"present.{i}.{kv}" for i in range(2) for kv in ("key", "value")]
    past = next(i for i in graph.input if i.name == "past_key_values.1.value").type.tensor_type.shape.dim
    assert [d.dim_param or d.dim_value for d in past] == ["batch", 2, "past_seq", 16]  # kv heads, head dim from config
    assert len(list(lm_onnx.parent.iterdir())) == 1  # one file, no external data
    # the tied lm_head reads the embedding matrix (no transposed copy of it)
    assert sum(1 for t in graph.initializer if sorted(t.dims) == [64, VOCAB]) == 1


def test_lm_fp32_logits_match_torch_on_left_padded_batch(torch_lm, lm):
    ids, mask = left_padded(PROMPTS)
    expected = torch_logits(torch_lm, ids, mask)
    got = lm.forward(ids, mask)
    assert got.dtype == np.float32 and got.shape == (2, ids.shape[1], VOCAB)
    valid = mask.astype(bool)
    np.testing.assert_allclose(got[valid], expected[valid], atol=ATOL, rtol=RTOL)
    # and the padded row equals that row run alone (padding is invisible)
    alone = lm.forward(np.array([PROMPTS[0]]), np.ones((1, len(PROMPTS[0])), dtype=np.int64))
    np.testing.assert_allclose(got[0][valid[0]], alone[0], atol=ATOL, rtol=RTOL)


def test_lm_cached_step_equals_full_forward(lm, lm_onnx):
    """Prefill + one cached step gives the logits of the full sequence's last position."""
    ids, mask = left_padded(PROMPTS)
    full = lm.forward(ids, mask)
    past = {n: np.zeros((2, lm.kv_heads, 0, lm.head_dim), np.float32) for n in lm.past_names}
    head = {"input_ids": ids[:, :-1], "attention_mask": mask[:, :-1], "position_ids": position_ids_for(mask)[:, :-1],
            "logits_to_keep": np.array([0], dtype=np.int64)}
    outs = lm.session.run(None, {**head, **past})
    present = dict(zip(lm.past_names, outs[1:], strict=True))
    assert present[lm.past_names[0]].shape == (2, 2, ids.shape[1] - 1, 16)
    step = {"input_ids": ids[:, -1:], "attention_mask": mask, "position_ids": position_ids_for(mask)[:, -1:],
            "logits_to_keep": np.array([1], dtype=np.int64)}
    last = lm.session.run(["logits"], {**step, **present})[0]
    np.testing.assert_allclose(last[:, 0], full[:, -1], atol=ATOL, rtol=RTOL)


def test_logits_to_keep_returns_the_last_positions_only(lm):
    """Scoring and generation ask for the last position: the head runs on it alone, same numbers."""
    ids, mask = left_padded(PROMPTS)
    full = lm.forward(ids, mask)
    last = lm.forward_last(ids, mask)
    assert last.shape == (2, VOCAB)
    np.testing.assert_allclose(last, full[:, -1], atol=ATOL, rtol=RTOL)
    feeds = {"input_ids": ids, "attention_mask": mask, "position_ids": position_ids_for(mask),
             **{n: np.zeros((2, lm.kv_heads, 0, lm.head_dim), np.float32) for n in lm.past_names}}
    for keep, width in ((0, ids.shape[1]), (2, 2), (ids.shape[1] + 5, ids.shape[1])):
        got = lm.session.run(["logits"], {**feeds, "logits_to_keep": np.array([keep], dtype=np.int64)})[0]
        assert got.shape == (2, width, VOCAB)
        np.testing.assert_allclose(got, full[:, ids.shape[1] - width:], atol=ATOL, rtol=RTOL)


def test_generate_with_cache_equals_torch_greedy(torch_lm, lm):
    ids, mask = left_padded(PROMPTS)
    expected = torch_greedy(torch_lm, ids, mask, 12)
    got = lm.generate(ids, mask, max_new_tokens=12, eos_token_ids=NO_EOS, pad_token_id=PAD)
    assert got == expected
    assert all(len(row) == 12 for row in got)


def test_generate_stops_rows_at_eos_and_should_stop(lm):
    ids, mask = left_padded(PROMPTS)
    free = lm.generate(ids, mask, max_new_tokens=10, eos_token_ids=NO_EOS, pad_token_id=PAD)
    # eos: the 4th token of row 0, unless row 1 produced it earlier
    eos = free[0][3]
    stopped = lm.generate(ids, mask, max_new_tokens=10, eos_token_ids={eos}, pad_token_id=PAD)
    for row, new in enumerate(free):
        cut = new.index(eos) if eos in new else len(new)
        assert stopped[row] == new[:cut]  # eos itself excluded
    assert len(stopped[0]) == free[0].index(eos) <= 3

    calls: list[tuple[int, int]] = []

    def stop_row1_after_2(row: int, new_ids: list[int]) -> bool:
        calls.append((row, len(new_ids)))
        return row == 1 and len(new_ids) >= 2

    partial = lm.generate(ids, mask, max_new_tokens=10, eos_token_ids=NO_EOS, pad_token_id=PAD, should_stop=stop_row1_after_2)
    assert partial == [free[0], free[1][:2]]
    assert (1, 3) not in calls and (0, 9) in calls  # row 1 left the batch; row 0 ran to max_new_tokens

    both = lm.generate(ids, mask, max_new_tokens=10, eos_token_ids=NO_EOS, pad_token_id=PAD, should_stop=lambda r, n: True)
    assert both == [free[0][:1], free[1][:1]]


def test_generate_row_results_do_not_depend_on_batch_mates(lm):
    ids, mask = left_padded(PROMPTS)
    batch = lm.generate(ids, mask, max_new_tokens=8, eos_token_ids=NO_EOS, pad_token_id=PAD)
    for row, prompt in enumerate(PROMPTS):
        alone = lm.generate(np.array([prompt]), np.ones((1, len(prompt)), np.int64), max_new_tokens=8,
                            eos_token_ids=NO_EOS, pad_token_id=PAD)
        assert alone[0] == batch[row]


def _prompt_containing_its_argmax(lm, base: list[int]) -> list[int]:
    """A prompt whose next-token argmax is already in it, so that a repetition penalty matters."""
    prompt = list(base)
    for _ in range(20):
        top = int(lm.forward(np.array([prompt]), np.ones((1, len(prompt)), np.int64))[0, -1].argmax())
        if top in prompt:
            return prompt
        prompt = [prompt[0], top, *prompt[1:]]
    pytest.fail("no prompt whose argmax repeats one of its tokens")


def test_repetition_penalty(torch_lm, lm):
    prompt = _prompt_containing_its_argmax(lm, [BOS, 17, 250, 33, 9])
    ids, mask = np.array([prompt]), np.ones((1, len(prompt)), np.int64)
    plain = lm.generate(ids, mask, max_new_tokens=6, eos_token_ids=NO_EOS, pad_token_id=PAD)
    penalty = 1.5
    penalised = lm.generate(ids, mask, max_new_tokens=6, eos_token_ids=NO_EOS, pad_token_id=PAD, repetition_penalty=penalty)
    assert penalised != plain
    assert plain[0][0] in prompt and penalised[0][0] != plain[0][0]

    # one step, computed independently from torch's logits with the HF/CTRL rule
    logits = torch.from_numpy(torch_logits(torch_lm, ids, mask)[0, -1])
    seen = torch.zeros_like(logits, dtype=torch.bool)
    seen[torch.tensor(sorted(set(prompt)))] = True
    scored = torch.where(seen, torch.where(logits > 0, logits / penalty, logits * penalty), logits)
    assert penalised[0][0] == int(scored.argmax())

    # whole run: HF's RepetitionPenaltyLogitsProcessor (prompt + generated ids; no padding in this batch)
    assert penalised == torch_greedy(torch_lm, ids, mask, 6, repetition_penalty=penalty)


def test_generate_validates_left_padding(lm):
    ids, mask = left_padded(PROMPTS)
    with pytest.raises(ValueError, match="LEFT"):
        lm.generate(ids[:, ::-1].copy(), mask[:, ::-1].copy(), max_new_tokens=2, eos_token_ids=NO_EOS, pad_token_id=PAD)
    assert lm.generate(ids, mask, max_new_tokens=0, eos_token_ids=NO_EOS, pad_token_id=PAD) == [[], []]


def _artifact_bytes(model_path):
    return sum(p.stat().st_size for p in model_path.parent.glob(model_path.name + "*"))


def test_int8_lm_runs_and_mostly_agrees(lm, lm_onnx, lm_int8):
    import onnx

    graph = onnx.load(str(lm_int8), load_external_data=False).graph
    quantized = [n for n in graph.node if n.op_type == "MatMulNBits"]
    assert quantized and all(a.i == 8 for n in quantized for a in n.attribute if a.name == "bits")
    # Weight-only int8 of every projection, down_proj and the (untied) head included: no fp32 weight MatMul left.
    weights = {i.name for i in graph.initializer}
    assert not [n.name for n in graph.node if n.op_type in ("MatMul", "Gemm") and n.input[1] in weights]
    assert any("lm_head" in n.name for n in quantized) and any("down_proj" in n.name for n in quantized)
    # The embedding table too: an 8-bit GatherBlockQuantized, no fp32 table left.
    assert [n for n in graph.node if n.op_type == "GatherBlockQuantized"]
    assert not [n for n in graph.node if n.op_type == "Gather" and n.input[0] in weights
                and len(next(i for i in graph.initializer if i.name == n.input[0]).dims) == 2]
    assert lm_int8.with_name(lm_int8.name + ".data").is_file()  # external data: mapped, not copied, at load
    assert _artifact_bytes(lm_int8) < lm_onnx.stat().st_size

    rows = [[BOS, *range(20 + 7 * k, 60 + 7 * k)] for k in range(4)]
    ids, mask = left_padded(rows)
    fp32 = lm.forward(ids, mask)
    int8 = OnnxCausalLM(lm_int8).forward(ids, mask)
    assert int8.shape == fp32.shape and np.isfinite(int8).all()
    agree = (fp32.argmax(-1) == int8.argmax(-1))[mask.astype(bool)].mean()
    assert agree >= 0.9, agree
    out = OnnxCausalLM(lm_int8).generate(ids, mask, max_new_tokens=3, eos_token_ids=NO_EOS, pad_token_id=PAD)
    assert [len(r) for r in out] == [3, 3, 3, 3]


def test_quantize_exclusions_are_by_name(lm_onnx, lm, tmp_path):
    import onnx

    path = quantize_causal_lm(lm_onnx, tmp_path / "some.onnx", exclude_ops=("down_proj", "lm_head"))
    graph = onnx.load(str(path), load_external_data=False).graph
    assert len([n for n in graph.node if n.op_type == "MatMul" and "down_proj" in n.name]) == 2  # one per layer
    assert any(n.op_type == "Gemm" and "lm_head" in n.name for n in graph.node)  # the tied fp32 head, as exported
    assert not [n for n in graph.node if n.op_type == "MatMulNBits" and ("down_proj" in n.name or "lm_head" in n.name)]
    ids, mask = left_padded(PROMPTS)
    out = OnnxCausalLM(path).forward(ids, mask)
    assert np.isfinite(out).all() and out.shape == lm.forward(ids, mask).shape


# ------------------------------------------------------------------------------------------------
# Embedder
# ------------------------------------------------------------------------------------------------

WORDS = (
    "the a of and in to is was patient patients with for on by as trial treatment dose risk study group "
    "clinical randomized placebo outcome mortality cancer heart blood pressure therapy results were significant "
    "increase decrease compared control age years women men children hospital"
).split()
TEXTS = [
    "Patients with heart failure",
    "a",
    "The randomized placebo controlled trial of blood pressure therapy in older women and men showed significant "
    "decrease of mortality compared with the control group over ten years",
    "cancer risk",
    "Children in hospital were treated with a dose of therapy",
    "results",
    "unknownword zzz and the outcome",
]


@pytest.fixture(scope="module")
def bert_dir(tmp_path_factory):
    from tokenizers import Tokenizer, decoders, normalizers, pre_tokenizers, processors
    from tokenizers.models import WordPiece
    from transformers import BertConfig, BertModel

    specials = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
    pieces = sorted({c for w in WORDS for c in w})
    tokens = list(dict.fromkeys([*specials, *WORDS, *pieces, *(f"##{c}" for c in pieces)]))
    vocab = {token: i for i, token in enumerate(tokens)}
    tok = Tokenizer(WordPiece(vocab, unk_token="[UNK]"))
    tok.normalizer = normalizers.BertNormalizer(lowercase=True)
    tok.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    tok.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]", pair="[CLS] $A [SEP] $B:1 [SEP]:1", special_tokens=[("[CLS]", 2), ("[SEP]", 3)]
    )
    tok.decoder = decoders.WordPiece()
    # as MiniLM's tokenizer.json does: a fixed padding/truncation that the embedder must override
    tok.enable_padding(pad_id=0, pad_token="[PAD]", length=12)
    tok.enable_truncation(max_length=12)

    path = tmp_path_factory.mktemp("tiny-bert")
    tok.save(str(path / "tokenizer.json"))
    torch.manual_seed(99)
    config = BertConfig(vocab_size=len(vocab), hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                        intermediate_size=64, max_position_embeddings=64, pad_token_id=0)
    BertModel(config).eval().save_pretrained(path)
    return path


@pytest.fixture(scope="module")
def emb_onnx(bert_dir, tmp_path_factory):
    return export_embedder(bert_dir, tmp_path_factory.mktemp("emb-onnx"))


def torch_sentence_embeddings(model_dir, texts: list[str], max_length: int) -> np.ndarray:
    from tokenizers import Tokenizer
    from transformers import AutoModel

    tok = Tokenizer.from_file(str(model_dir / "tokenizer.json"))
    tok.no_padding()
    tok.enable_truncation(max_length=max_length)
    tok.enable_padding(pad_id=0, pad_token="[PAD]")
    enc = tok.encode_batch(texts)
    ids = torch.tensor([e.ids for e in enc])
    mask = torch.tensor([e.attention_mask for e in enc])
    model = AutoModel.from_pretrained(str(model_dir)).eval()
    with torch.no_grad():
        hidden = model(input_ids=ids, attention_mask=mask, token_type_ids=torch.zeros_like(ids)).last_hidden_state
    m = mask.unsqueeze(-1).float()
    pooled = (hidden * m).sum(1) / m.sum(1).clamp(min=1e-9)
    return torch.nn.functional.normalize(pooled, dim=-1).numpy()


def test_embedder_matches_torch_mean_pooling(bert_dir, emb_onnx):
    expected = torch_sentence_embeddings(bert_dir, TEXTS, max_length=256)
    got = OnnxEmbedder(emb_onnx, bert_dir).encode(TEXTS, batch_size=32)
    assert got.dtype == np.float32 and got.shape == (len(TEXTS), 32)
    np.testing.assert_allclose(got, expected, atol=ATOL, rtol=RTOL)
    np.testing.assert_allclose(np.linalg.norm(got, axis=1), 1.0, atol=1e-5)


def test_embedder_truncates_at_max_length(bert_dir, emb_onnx):
    long = " ".join(WORDS * 3)
    got = OnnxEmbedder(emb_onnx, bert_dir, max_length=10).encode([long, "cancer risk"])
    expected = torch_sentence_embeddings(bert_dir, [long, "cancer risk"], max_length=10)
    np.testing.assert_allclose(got, expected, atol=ATOL, rtol=RTOL)


def test_encode_preserves_input_order_across_length_sorted_batches(bert_dir, emb_onnx):
    embedder = OnnxEmbedder(emb_onnx, bert_dir)
    batched = embedder.encode(TEXTS, batch_size=2)  # 4 batches of length-sorted neighbours
    one_by_one = np.stack([embedder.encode([t])[0] for t in TEXTS])
    np.testing.assert_allclose(batched, one_by_one, atol=1e-5)
    reversed_ = embedder.encode(TEXTS[::-1], batch_size=3)
    np.testing.assert_allclose(reversed_[::-1], batched, atol=1e-5)
    assert embedder.encode([]).shape[0] == 0


def test_int8_embedder_close_to_fp32(bert_dir, emb_onnx, tmp_path):
    int8_path = quantize_embedder(emb_onnx, tmp_path / "model.int8.onnx")
    assert int8_path.stat().st_size < emb_onnx.stat().st_size
    fp32 = OnnxEmbedder(emb_onnx, bert_dir).encode(TEXTS)
    int8 = OnnxEmbedder(int8_path, bert_dir, threads=2).encode(TEXTS)
    cosine = (fp32 * int8).sum(axis=1)  # both L2-normalised
    assert cosine.min() > 0.95, cosine


# Three prompts that start with the same seven tokens (a chat template's system turn, a job's one question).
SHARED = [BOS, 17, 250, 33, 9, 44, 12]
OWN = [[401, 77], [12, 300, 145, 8, 61], [23]]


@pytest.mark.parametrize("graph", ["fp32", "int8"])
@pytest.mark.parametrize("penalty", [1.0, 1.3])
def test_generate_from_a_shared_prefix_cache_equals_a_fresh_prefill(lm, lm_int8, graph, penalty):
    """The prefix read once (``prefill``) and repeated over the batch gives the tokens of the whole prompts read
    afresh, padding, positions and the repetition penalty (which counts the prefix's tokens) included."""
    model = lm if graph == "fp32" else OnnxCausalLM(lm_int8)
    fresh_ids, fresh_mask = left_padded([SHARED + own for own in OWN])
    fresh = model.generate(fresh_ids, fresh_mask, max_new_tokens=10, eos_token_ids=NO_EOS, pad_token_id=PAD,
                           repetition_penalty=penalty)
    cache = model.prefill(SHARED)
    assert [c.shape for c in cache] == [(1, model.kv_heads, len(SHARED), model.head_dim)] * (2 * model.num_layers)
    ids, mask = left_padded(OWN)
    cached = model.generate(ids, mask, max_new_tokens=10, eos_token_ids=NO_EOS, pad_token_id=PAD,
                            repetition_penalty=penalty, prefix=(SHARED, cache))
    assert cached == fresh
    # Rows leaving the batch early (their cache compacted) keep the rest exact.
    stop_row0 = model.generate(ids, mask, max_new_tokens=10, eos_token_ids=NO_EOS, pad_token_id=PAD,
                               repetition_penalty=penalty, prefix=(SHARED, cache),
                               should_stop=lambda row, new: row == 0 and len(new) >= 2)
    assert stop_row0 == [fresh[0][:2], fresh[1], fresh[2]]


def test_prefill_cache_equals_the_full_prompts_cache(lm):
    """The prefix's keys and values are the ones a whole-prompt pass computes for those positions (atol 1e-4)."""
    ids, mask = left_padded([SHARED + OWN[1]])
    feeds = {"input_ids": ids, "attention_mask": mask, "position_ids": position_ids_for(mask),
             "logits_to_keep": np.array([1], dtype=np.int64),
             **{n: np.zeros((1, lm.kv_heads, 0, lm.head_dim), np.float32) for n in lm.past_names}}
    whole = lm.session.run(lm.present_names, feeds)
    for got, full in zip(lm.prefill(SHARED), whole, strict=True):
        np.testing.assert_allclose(got, full[:, :, :len(SHARED)], atol=ATOL, rtol=RTOL)


def test_grouped_attention_export_equals_the_eager_export(lm_dir, lm_onnx, lm, tmp_path):
    """The default export's attention reads each key/value head from every query head of its group without
    copying it (no repeat_kv Expand per layer); logits equal the eager export's within atol = rtol = 1e-4,
    on a left-padded prefill and on a cached decoding step."""
    import onnx

    eager_path = export_causal_lm(lm_dir, tmp_path / "eager", attention="eager")
    eager = OnnxCausalLM(eager_path)

    def expands(path):
        return sum(n.op_type == "Expand" for n in onnx.load(str(path), load_external_data=False).graph.node)

    assert expands(lm_onnx) <= expands(eager_path) - 2 * 2  # keys and values, per layer (2 layers)
    ids, mask = left_padded(PROMPTS)
    valid = mask.astype(bool)
    np.testing.assert_allclose(lm.forward(ids, mask)[valid], eager.forward(ids, mask)[valid], atol=ATOL, rtol=RTOL)
    assert lm.generate(ids, mask, max_new_tokens=8, eos_token_ids=NO_EOS, pad_token_id=PAD) == \
        eager.generate(ids, mask, max_new_tokens=8, eos_token_ids=NO_EOS, pad_token_id=PAD)
    # one cached step over a past computed by each graph itself
    cache = {}
    for name, model in (("grouped", lm), ("eager", eager)):
        past = model.prefill(PROMPTS[1][:-1])
        step = {"input_ids": np.array([[PROMPTS[1][-1]]]), "attention_mask": np.ones((1, len(PROMPTS[1])), np.int64),
                "position_ids": np.array([[len(PROMPTS[1]) - 1]]), "logits_to_keep": np.array([1], dtype=np.int64),
                **dict(zip(model.past_names, past, strict=True))}
        cache[name] = model.session.run(["logits"], step)[0]
    np.testing.assert_allclose(cache["grouped"], cache["eager"], atol=ATOL, rtol=RTOL)
    with pytest.raises(ValueError, match="attention"):
        export_causal_lm(lm_dir, tmp_path / "other", attention="flash")


@pytest.mark.parametrize("penalty", [1.0, 1.3])
def test_continuous_batching_gives_each_prompt_the_tokens_it_gets_alone(lm, penalty):
    """Five prompts through two decoding slots: rows finish at different steps (should_stop), waiting prompts
    join the running batch with caches of other lengths (both ways round), with and without a shared prefix."""
    prompts = [[BOS, 401, 77], [BOS, 12, 300, 145, 8, 61, 23, 9, 90, 91, 92], [BOS, 23], [BOS, 5, 6, 7, 8],
               [BOS, 250, 33, 9, 44, 12, 301]]
    stop_at = {0: 2, 1: 9, 2: 4, 3: 1, 4: 6}  # rows leave early, at different steps

    def alone(prompt, stop):
        return lm.generate(np.array([prompt]), np.ones((1, len(prompt)), np.int64), max_new_tokens=9,
                           eos_token_ids=NO_EOS, pad_token_id=PAD, repetition_penalty=penalty,
                           should_stop=lambda row, new: len(new) >= stop)[0]

    expected = [alone(p, stop_at[i]) for i, p in enumerate(prompts)]
    got = lm.generate_rows(prompts, max_batch=2, max_new_tokens=9, eos_token_ids=NO_EOS, pad_token_id=PAD,
                           repetition_penalty=penalty, should_stop=lambda row, new: len(new) >= stop_at[row])
    assert got == expected
    assert [len(g) for g in got] == [2, 9, 4, 1, 6]
    # after a shared prefix, read once
    shared = [BOS, 17, 250]
    with_prefix = [alone(shared + p[1:], stop_at[i]) for i, p in enumerate(prompts)]
    got = lm.generate_rows([p[1:] for p in prompts], max_batch=3, max_new_tokens=9, eos_token_ids=NO_EOS,
                           pad_token_id=PAD, repetition_penalty=penalty, prefix=(shared, lm.prefill(shared)),
                           should_stop=lambda row, new: len(new) >= stop_at[row])
    assert got == with_prefix
    with pytest.raises(ValueError, match="at least one token"):
        lm.generate_rows([[BOS], []], max_batch=2, max_new_tokens=2, eos_token_ids=NO_EOS, pad_token_id=PAD)


def test_min_new_tokens_holds_back_the_end_token(lm):
    """A reply cannot end (eos) before ``min_new_tokens`` tokens; after that, eos ends it as before."""
    ids, mask = left_padded(PROMPTS)
    free = lm.generate(ids, mask, max_new_tokens=8, eos_token_ids=NO_EOS, pad_token_id=PAD)
    eos = free[0][0]  # row 0's first token, made the end token: row 0 would stop at once
    assert lm.generate(ids, mask, max_new_tokens=8, eos_token_ids={eos}, pad_token_id=PAD)[0] == []
    held = lm.generate(ids, mask, max_new_tokens=8, eos_token_ids={eos}, pad_token_id=PAD, min_new_tokens=3)
    assert len(held[0]) >= 3 and eos not in held[0][:3]
    assert all(eos not in row for row in held)  # eos is never emitted as a token
