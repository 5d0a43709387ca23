"""ONNX export, int8 quantisation and onnxruntime inference for the worker's small models.

Two model families, both CPU-first:

* a Llama-style causal LM (SmolLM2-135M-Instruct) exported *with a KV cache*: the graph takes
  ``input_ids``, ``attention_mask`` (past + current tokens), ``position_ids`` and one
  ``past_key_values.{i}.key/value`` pair per layer, and ``logits_to_keep`` ([1] int64: logits for the
  last n positions only, 0 = all); it returns ``logits`` plus ``present.{i}.key/value`` (the past with
  the current tokens appended). ``OnnxCausalLM.generate`` runs greedy decoding of a left-padded batch
  on it, asking for the last position's logits only (the head is 49k x 576: computing it for every
  prompt position was a fifth of the prefill's work and a [B, T, 49k] fp32 tensor);
* a BERT sentence embedder (all-MiniLM-L6-v2): the encoder is exported (``last_hidden_state``) and
  ``OnnxEmbedder.encode`` does the mean pooling and L2 normalisation in numpy.

Export uses the TorchScript exporter (``torch.onnx.export(..., dynamo=False)``) on a thin wrapper that
builds the 4-D additive attention mask itself (causal x padding), so the graph does not depend on the
mask-construction fast paths of ``transformers`` that a tracer would freeze (e.g. "no padding, skip the
mask"). Attention is exported as plain matmul/softmax, which every onnxruntime build runs, in its grouped
form (:func:`grouped_attention_forward`: the query heads of a key/value head read it without copies).
onnxruntime's fused GroupQueryAttention contrib op was tried and is not used: its CPU kernel refuses a batch
of several prompts read over a past cache ("batch_size must be 1 when sequence_length > 1 and past context
is given", onnxruntime 1.32), which is how a shared prompt prefix is read once (``OnnxCausalLM.prefill``).

Known numerics of the int8 graph (measured 2026-12-06, onnxruntime 1.32, AMD EPYC with AVX-512 VNNI): MatMulNBits
at accuracy level 4 computes the last (rows mod 4) rows of its [batch x positions] input with other kernels than
whole groups of 4, so a prompt's logits move (by up to ~1 on SmolLM2, 87.5% argmax agreement per position) with its
own left padding of 1-3 tokens and with the decoding batch's size, while 4, 8 or 16 pads change nothing and the fp32
graph agrees to 5e-5. A generated text can therefore depend on the batch it was generated in; labels (the
answer-evidence model) do not. Making every call's row count a multiple of 4 would fix it at the cost of dummy rows.

torch/transformers are imported lazily: the inference classes need only numpy, onnxruntime and tokenizers.
"""
from __future__ import annotations

import contextlib
import functools
import json
import logging
from collections.abc import Callable
from pathlib import Path

import numpy as np

log = logging.getLogger(__name__)

OPSET = 17
# What an exported causal-LM graph takes and returns; part of every derived artifact's build spec, so a
# change here rebuilds onnx-fp32 and onnx-int8 (models_prepare, fine-tuning exports).
CAUSAL_LM_GRAPH = "KV cache inputs/outputs, logits_to_keep input, grouped-query attention without repeated keys"
# The attention the causal LM is exported with: "grouped" (the default, :func:`grouped_attention_forward`) or
# transformers' "eager" (keys and values repeated to every query head first), kept to compare against.
ATTENTION_KINDS = ("grouped", "eager")
_PLAIN_HEAD_MODEL_TYPES = {"llama", "mistral", "qwen2", "qwen3", "smollm3"}
_MAX_SINGLE_FILE_BYTES = 2 * 1024**3 - 64 * 1024**2  # protobuf limit, with some margin


# --------------------------------------------------------------------------------------------------
# Causal LM: export
# --------------------------------------------------------------------------------------------------


def _kv_layout(config) -> tuple[int, int, int]:
    """(layers, kv heads, head dim) from a HF decoder config."""
    text = config.get_text_config(decoder=True) if hasattr(config, "get_text_config") else config
    layers = int(text.num_hidden_layers)
    heads = int(text.num_attention_heads)
    kv_heads = int(getattr(text, "num_key_value_heads", None) or heads)
    head_dim = int(getattr(text, "head_dim", None) or text.hidden_size // heads)
    return layers, kv_heads, head_dim


def _past_names(layers: int) -> tuple[list[str], list[str]]:
    inputs, outputs = [], []
    for i in range(layers):
        inputs += [f"past_key_values.{i}.key", f"past_key_values.{i}.value"]
        outputs += [f"present.{i}.key", f"present.{i}.value"]
    return inputs, outputs


def _causal_lm_wrapper(model):
    import torch
    from transformers import DynamicCache

    layers, _, _ = _kv_layout(model.config)
    neg = torch.finfo(torch.float32).min
    head = model.get_output_embeddings()
    # The logits are lm_head(last hidden state), nothing more, for these families (no softcapping/scaling).
    plain_head = (
        model.config.model_type in _PLAIN_HEAD_MODEL_TYPES
        and isinstance(head, torch.nn.Linear)
        and isinstance(getattr(model, "model", None), torch.nn.Module)
    )

    class CausalLMWithPast(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.lm = model
            self.lm_head = head  # the same module, so its nodes are named /lm_head/...

        def forward(self, input_ids, attention_mask, position_ids, logits_to_keep, *flat_past):
            seq = input_ids.shape[1]
            total = attention_mask.shape[1]  # past + current
            # Query t (absolute index total-seq+t) sees key j iff j <= its index and key j is not padding.
            key_idx = torch.arange(total, device=input_ids.device)
            query_idx = key_idx[total - seq:]
            causal = key_idx.unsqueeze(0) <= query_idx.unsqueeze(1)  # [T, total]
            allowed = causal.unsqueeze(0).unsqueeze(0) & attention_mask.bool().unsqueeze(1).unsqueeze(2)  # [B,1,T,total]
            mask4d = torch.zeros(allowed.shape, dtype=torch.float32, device=input_ids.device).masked_fill(~allowed, neg)

            cache = DynamicCache(config=self.lm.config)
            if len(cache.layers) < layers:
                raise RuntimeError(f"DynamicCache(config=...) built {len(cache.layers)} layers, the model has {layers}")
            for i, layer in enumerate(cache.layers[:layers]):
                # What DynamicLayer.lazy_initialization sets, with the past itself as the content.
                layer.keys, layer.values = flat_past[2 * i], flat_past[2 * i + 1]
                layer.device, layer.is_initialized = layer.keys.device, True
            kwargs = dict(input_ids=input_ids, attention_mask=mask4d, position_ids=position_ids, cache=cache, use_cache=True)
            # Positions whose logits are wanted: the last n (n = logits_to_keep[0]), all when n is 0.
            n = logits_to_keep.reshape(()).clamp(min=0, max=seq)
            first = torch.where(n > 0, seq - n, torch.zeros_like(n))
            kept = torch.arange(first, seq, device=input_ids.device)
            if plain_head:
                # The head on [B*T, H] (2-D), so that _share_tied_head can turn it into Gemm(h, W, transB=1)
                # reading the tied embedding matrix as stored, instead of an exported transposed copy.
                hidden = self.lm.model(**kwargs).last_hidden_state.index_select(1, kept)
                flat = self.lm_head(hidden.reshape(-1, hidden.shape[-1]))
                logits = flat.reshape(hidden.shape[0], hidden.shape[1], flat.shape[-1])
            else:
                logits = self.lm(**kwargs).logits.index_select(1, kept)
            present = []
            for layer in cache.layers[:layers]:
                present += [layer.keys, layer.values]
            return (logits.float(), *present)

    return CausalLMWithPast().eval()


def grouped_attention_forward(module, query, key, value, attention_mask, scaling: float, dropout: float = 0.0,
                              **kwargs):
    """Scaled dot-product attention of grouped-query attention *without repeating the keys and values*.

    transformers' eager attention copies each of the ``kv_heads`` key/value heads to the ``groups`` query
    heads that read it (``repeat_kv``: an Expand of the whole cache per layer and per decoding step, an
    eighth of a batch-8 decoding step of SmolLM2 in onnxruntime's profile). Here the query heads of a group
    are stacked along the sequence axis instead, [B, H, S, D] -> [B, KV, G*S, D], and read the keys as
    stored: the same dot products, the same softmax, the same sums, without the copy. Query head h reads
    key head h // G, as ``repeat_kv`` lays them out. Returns ([B, S, H, D], None), as eager does.
    """
    import torch

    batch, heads, seq, dim = query.shape
    kv_heads = key.shape[1]
    groups = heads // kv_heads
    scores = torch.matmul(query.reshape(batch, kv_heads, groups * seq, dim), key.transpose(2, 3)) * scaling
    scores = scores.reshape(batch, kv_heads, groups, seq, -1)
    if attention_mask is not None:  # [B, 1, S, T]: the same for every head
        scores = scores + attention_mask[:, :, None, :, : scores.shape[-1]]
    weights = torch.nn.functional.softmax(scores, dim=-1, dtype=torch.float32).to(query.dtype)
    out = torch.matmul(weights.reshape(batch, kv_heads, groups * seq, -1), value)
    return out.reshape(batch, heads, seq, dim).transpose(1, 2).contiguous(), None


def _load_causal_lm(model_dir: Path, attention: str = "grouped"):
    import torch
    from transformers import AttentionInterface, AutoModelForCausalLM

    if attention not in ATTENTION_KINDS:
        raise ValueError(f"attention: {attention!r} unknown; use one of {', '.join(ATTENTION_KINDS)}")
    if attention == "grouped":
        AttentionInterface.register("medassist_grouped", grouped_attention_forward)
    return AutoModelForCausalLM.from_pretrained(
        str(model_dir), dtype=torch.float32,
        attn_implementation="medassist_grouped" if attention == "grouped" else "eager",
    ).eval()


def export_causal_lm(model_dir: Path, out_dir: Path, *, attention: str = "grouped") -> Path:
    """Export a HF causal LM (Llama-style, DynamicCache) with KV-cache inputs/outputs to ``out_dir/model.onnx``.

    ``attention``: "grouped" (:func:`grouped_attention_forward`) or "eager" (transformers' own, keys and
    values repeated per query head); the two graphs give the same logits (tests/workers/test_onnx_models.py)."""
    import torch

    model_dir, out_dir = Path(model_dir), Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    model = _load_causal_lm(model_dir, attention)
    model.config.use_cache = True
    layers, kv_heads, head_dim = _kv_layout(model.config)
    wrapper = _causal_lm_wrapper(model)

    # Example inputs: distinct batch / seq / past sizes, some padding, so no size is traced as a constant.
    batch, seq, past = 2, 3, 4
    input_ids = torch.randint(0, model.config.vocab_size, (batch, seq), dtype=torch.int64)
    attention_mask = torch.ones(batch, past + seq, dtype=torch.int64)
    attention_mask[1, :2] = 0
    position_ids = (attention_mask.cumsum(-1) - 1).clamp(min=0)[:, past:]
    logits_to_keep = torch.tensor([2], dtype=torch.int64)  # neither 0 nor seq: traced as a value, not a constant
    flat_past = [torch.randn(batch, kv_heads, past, head_dim) for _ in range(2 * layers)]

    past_in, present_out = _past_names(layers)
    input_names = ["input_ids", "attention_mask", "position_ids", "logits_to_keep", *past_in]
    output_names = ["logits", *present_out]
    dynamic_axes = {
        "input_ids": {0: "batch", 1: "seq"},
        "attention_mask": {0: "batch", 1: "total_seq"},
        "position_ids": {0: "batch", 1: "seq"},
        "logits": {0: "batch", 1: "kept_seq"},
    }
    for name in past_in:
        dynamic_axes[name] = {0: "batch", 2: "past_seq"}
    for name in present_out:
        dynamic_axes[name] = {0: "batch", 2: "total_seq"}

    out_path = out_dir / "model.onnx"
    _torch_onnx_export(
        wrapper,
        (input_ids, attention_mask, position_ids, logits_to_keep, *flat_past),
        str(out_path),
        input_names=input_names,
        output_names=output_names,
        dynamic_axes=dynamic_axes,
        opset_version=OPSET,
        do_constant_folding=True,
    )
    _consolidate(out_path, share_tied_head=True)
    return out_path


# --------------------------------------------------------------------------------------------------
# Embedder: export
# --------------------------------------------------------------------------------------------------


def _encoder_wrapper(model):
    import torch

    neg = torch.finfo(torch.float32).min

    class EncoderWithMask(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.encoder = model

        def forward(self, input_ids, attention_mask, token_type_ids):
            seq = input_ids.shape[1]
            keep = attention_mask.bool()[:, None, None, :].expand(-1, 1, seq, -1)
            mask4d = torch.zeros(keep.shape, dtype=torch.float32, device=input_ids.device).masked_fill(~keep, neg)
            out = self.encoder(input_ids=input_ids, attention_mask=mask4d, token_type_ids=token_type_ids)
            return out.last_hidden_state

    return EncoderWithMask().eval()


def export_embedder(model_dir: Path, out_dir: Path) -> Path:
    """Export a HF BERT-style encoder to ``out_dir/model.onnx``.

    Inputs ``input_ids``, ``attention_mask``, ``token_type_ids`` [B,T] int64; output ``last_hidden_state`` [B,T,H].
    """
    import torch
    from transformers import AutoModel

    model_dir, out_dir = Path(model_dir), Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    model = AutoModel.from_pretrained(str(model_dir), dtype=torch.float32, attn_implementation="eager").eval()
    wrapper = _encoder_wrapper(model)

    batch, seq = 2, 7
    input_ids = torch.randint(0, model.config.vocab_size, (batch, seq), dtype=torch.int64)
    attention_mask = torch.ones(batch, seq, dtype=torch.int64)
    attention_mask[1, 4:] = 0
    token_type_ids = torch.zeros(batch, seq, dtype=torch.int64)

    out_path = out_dir / "model.onnx"
    axes = {0: "batch", 1: "seq"}
    _torch_onnx_export(
        wrapper,
        (input_ids, attention_mask, token_type_ids),
        str(out_path),
        input_names=["input_ids", "attention_mask", "token_type_ids"],
        output_names=["last_hidden_state"],
        dynamic_axes={"input_ids": axes, "attention_mask": axes, "token_type_ids": axes, "last_hidden_state": axes},
        opset_version=OPSET,
        do_constant_folding=True,
    )
    _consolidate(out_path)
    return out_path


def _share_tied_head(model) -> int:
    """Turn ``MatMul(A, W^T)`` into ``Gemm(A, W, transB=1)`` where ``W``, a token embedding table, is also stored.

    The exporter writes a Linear's weight transposed; with tied embeddings that is a second copy of the
    largest matrix of a small LM (V x H, 113 MB for SmolLM2). Only a 2-D A qualifies (Gemm is 2-D).
    Returns how many nodes were rewritten.
    """
    import onnx
    from onnx import helper, numpy_helper

    graph = model.graph
    inits = {init.name: init for init in graph.initializer}
    by_shape: dict[tuple[int, ...], list[str]] = {}  # embedding tables (data of a Gather), by shape
    for node in graph.node:
        if node.op_type == "Gather" and node.input[0] in inits and len(inits[node.input[0]].dims) == 2:
            by_shape.setdefault(tuple(inits[node.input[0]].dims), []).append(node.input[0])
    if not by_shape:
        return 0
    inferred = onnx.shape_inference.infer_shapes(model).graph
    ranks = {
        vi.name: len(vi.type.tensor_type.shape.dim)
        for vi in [*inferred.value_info, *inferred.input]
        if vi.type.tensor_type.HasField("shape")
    }
    rewritten, dropped = 0, set()
    for index, node in enumerate(list(graph.node)):
        if node.op_type != "MatMul" or node.input[1] not in inits or len(inits[node.input[1]].dims) != 2:
            continue
        rows, cols = inits[node.input[1]].dims
        if (cols, rows) not in by_shape or ranks.get(node.input[0]) != 2:
            continue
        transposed = numpy_helper.to_array(inits[node.input[1]])
        twin = next(
            (n for n in by_shape.get((cols, rows), []) if np.array_equal(numpy_helper.to_array(inits[n]), transposed.T)),
            None,
        )
        if twin is None:
            continue
        if node.name.endswith("_MatMul"):  # quantize_dynamic's name for a Gemm it rewrote: restore the original
            name = node.name[: -len("_MatMul")]
        else:
            name = node.name.replace("MatMul", "Gemm") if "MatMul" in node.name else node.name + "_Gemm"
        gemm = helper.make_node("Gemm", [node.input[0], twin], list(node.output), name=name, transB=1)
        graph.node.remove(node)
        graph.node.insert(index, gemm)
        dropped.add(node.input[1])
        rewritten += 1
    still_used = {i for n in graph.node for i in n.input}
    for name in dropped - still_used:
        graph.initializer.remove(inits[name])
    if rewritten and model.ByteSize() < _MAX_SINGLE_FILE_BYTES:  # the in-memory checker stops at 2 GB
        onnx.checker.check_model(model)
    return rewritten


def _torch_onnx_export(*args, **kwargs) -> None:
    """``torch.onnx.export`` with the TorchScript exporter, minus its "legacy exporter" deprecation notices."""
    import warnings

    import torch

    with warnings.catch_warnings(), torch.no_grad():
        warnings.filterwarnings("ignore", category=DeprecationWarning, module=r"torch\.onnx.*")
        warnings.filterwarnings("ignore", message=r".*legacy TorchScript-based ONNX export.*")
        torch.onnx.export(*args, dynamo=False, **kwargs)


def _consolidate(path: Path, *, share_tied_head: bool = False) -> None:
    """Keep the model in one file when it fits (the exporter may have written external data files)."""
    import onnx

    model = onnx.load(str(path), load_external_data=True)
    if share_tied_head:
        _share_tied_head(model)
    external = {
        entry.value
        for init in model.graph.initializer
        if init.data_location == onnx.TensorProto.EXTERNAL
        for entry in init.external_data
        if entry.key == "location"
    }
    size = sum(t.ByteSize() for t in model.graph.initializer)
    if size < _MAX_SINGLE_FILE_BYTES:
        onnx.save_model(model, str(path))
        for name in external:
            (path.parent / name).unlink(missing_ok=True)
    elif not external:
        onnx.save_model(model, str(path), save_as_external_data=True, location=path.name + ".data")


# --------------------------------------------------------------------------------------------------
# Quantisation
# --------------------------------------------------------------------------------------------------


@contextlib.contextmanager
def _quiet_log(name: str | None = None, level: int = logging.WARNING):
    """Raise a logger (the root logger by default) to ``level`` for the block: onnxruntime's quantizers
    log one INFO line per tensor or node."""
    logger = logging.getLogger(name)
    previous = logger.level
    logger.setLevel(max(level, previous))
    try:
        yield
    finally:
        logger.setLevel(previous)


def _quantize(onnx_path: Path, out_path: Path, nodes_to_exclude: list[str], *, per_channel: bool) -> Path:
    from onnxruntime.quantization import QuantType, quantize_dynamic

    onnx_path, out_path = Path(onnx_path), Path(out_path)
    out_path.parent.mkdir(parents=True, exist_ok=True)
    with _quiet_log():  # quantize_dynamic logs on the root logger
        quantize_dynamic(
            model_input=str(onnx_path),
            model_output=str(out_path),
            per_channel=per_channel,
            weight_type=QuantType.QInt8,
            nodes_to_exclude=nodes_to_exclude,
            op_types_to_quantize=["MatMul"],
        )
    # quantize_dynamic turned every Gemm(transB=1) into MatMul(A, W^T) with a transposed copy of W; where
    # that MatMul stayed fp32 (excluded) and W is still stored, read W again (the tied lm_head).
    _consolidate(out_path, share_tied_head=True)
    return out_path


def _untie_head(model) -> int:
    """``Gemm(h, E, transB=1)`` (the tied head reading the embedding table) -> ``MatMul(h, E^T)`` with its
    own transposed initializer, so that the head is quantized like every other projection; the fp32
    table stays for the embedding Gather only. Returns how many nodes were rewritten."""
    from onnx import helper, numpy_helper

    graph = model.graph
    inits = {init.name: init for init in graph.initializer}
    rewritten = 0
    for index, node in enumerate(list(graph.node)):
        transposed = any(a.name == "transB" and a.i == 1 for a in node.attribute)
        if node.op_type != "Gemm" or node.input[1] not in inits or not transposed or len(node.input) > 2:
            continue
        weight = numpy_helper.to_array(inits[node.input[1]]).T.copy()
        name = f"{node.input[1]}.T"
        graph.initializer.append(numpy_helper.from_array(weight, name))
        matmul = helper.make_node("MatMul", [node.input[0], name], list(node.output), name=f"{node.name}_MatMul")
        graph.node.remove(node)
        graph.node.insert(index, matmul)
        rewritten += 1
    return rewritten


def _quantize_embedding_gather(model, block_size: int) -> int:
    """The token embedding ``Gather`` -> ``com.microsoft.GatherBlockQuantized`` over an 8-bit table (symmetric,
    one fp32 scale per ``block_size`` values of a row, zero point 128). onnxruntime's own quantizer does
    Gather only at 4 bits; 8 bits keeps the embedding as exact as the projections (docs/benchmarks.md,
    "Model backends"). Only a table no other node reads is replaced (after ``_untie_head`` that is the
    embedding). Returns how many Gathers were rewritten."""
    from onnx import helper, numpy_helper

    graph = model.graph
    inits = {init.name: init for init in graph.initializer}
    readers: dict[str, int] = {}
    for node in graph.node:
        for name in node.input:
            readers[name] = readers.get(name, 0) + 1
    rewritten = 0
    for index, node in enumerate(list(graph.node)):
        table = inits.get(node.input[0]) if node.op_type == "Gather" else None
        if table is None or len(table.dims) != 2 or readers[node.input[0]] != 1 or table.dims[1] % block_size:
            continue
        if any(a.name == "axis" and a.i != 0 for a in node.attribute):
            continue
        weights = numpy_helper.to_array(table).astype(np.float32)
        rows, width = weights.shape
        blocks = weights.reshape(rows, width // block_size, block_size)
        scales = np.abs(blocks).max(axis=-1) / 127.0
        scales[scales == 0] = 1.0
        quantized = (np.clip(np.round(blocks / scales[..., None]), -127, 127) + 128).astype(np.uint8).reshape(rows, width)
        name = node.input[0]
        graph.initializer.extend([numpy_helper.from_array(quantized, f"{name}.q8"),
                                  numpy_helper.from_array(scales.astype(np.float32), f"{name}.scales"),
                                  numpy_helper.from_array(np.full(scales.shape, 128, np.uint8), f"{name}.zero_points")])
        gather = helper.make_node("GatherBlockQuantized", [f"{name}.q8", node.input[1], f"{name}.scales",
                                                           f"{name}.zero_points"], list(node.output),
                                  name=f"{node.name}_q8", domain="com.microsoft", gather_axis=0, quantize_axis=1,
                                  block_size=block_size, bits=8)
        graph.node.remove(node)
        graph.node.insert(index, gather)
        graph.initializer.remove(table)
        rewritten += 1
    if rewritten and not any(o.domain == "com.microsoft" for o in model.opset_import):
        model.opset_import.append(helper.make_opsetid("com.microsoft", 1))
    return rewritten


def quantize_causal_lm(onnx_path: Path, out_path: Path, *, exclude_ops: tuple[str, ...] = (),
                       block_size: int = 64) -> Path:
    """Weight-only int8 of the LM's projections: ``MatMulNBits`` (8 bits, symmetric, one scale per
    ``block_size`` weights along K, int8 compute: accuracy level 4; level 1, fp32 compute, decoded 7x
    slower), the head included; MatMuls whose node name contains an ``exclude_ops`` key stay fp32
    ("lm_head" keeps the tied fp32 head). The token embedding table becomes 8-bit too
    (:func:`_quantize_embedding_gather`) unless an ``exclude_ops`` key contains "embed".

    Why not ``quantize_dynamic`` (what this used before; both compared in docs/benchmarks.md, "Model backends"):
    activations stay fp32, so the activation outliers that enter ``down_proj`` cost nothing, and block
    scales follow the weights closely. Dynamic per-tensor int8 needed ``down_proj`` and the head kept
    fp32 and still lost more NLL; this quantizes everything, loses less, decodes faster (the head is
    int8) and is smaller.

    The weights go to ``<model>.data`` beside the graph (ONNX external data): onnxruntime maps the file
    instead of copying it, so the embedding table, which only its Gather reads, is paged in only for
    the tokens actually seen.
    """
    import onnx
    from onnxruntime.quantization import QuantFormat
    from onnxruntime.quantization.matmul_nbits_quantizer import DefaultWeightOnlyQuantConfig, MatMulNBitsQuantizer

    onnx_path, out_path = Path(onnx_path), Path(out_path)
    model = onnx.load(str(onnx_path), load_external_data=True)
    if not any("lm_head" in key for key in exclude_ops):
        _untie_head(model)
    excluded = [n.name for n in model.graph.node if n.op_type == "MatMul" and any(k in n.name for k in exclude_ops)]
    config = DefaultWeightOnlyQuantConfig(block_size=block_size, is_symmetric=True, accuracy_level=4,
                                          quant_format=QuantFormat.QOperator, op_types_to_quantize=("MatMul",),
                                          bits=8)
    quantizer = MatMulNBitsQuantizer(model, bits=8, block_size=block_size, is_symmetric=True, accuracy_level=4,
                                     nodes_to_exclude=excluded, algo_config=config)
    with _quiet_log("onnxruntime.quantization.matmul_nbits_quantizer"):
        quantizer.process()
    model = quantizer.model.model
    if not any("embed" in key for key in exclude_ops):
        _quantize_embedding_gather(model, block_size)
    out_path.parent.mkdir(parents=True, exist_ok=True)
    data = out_path.with_name(out_path.name + ".data")
    data.unlink(missing_ok=True)  # save_model appends to an existing data file
    onnx.save_model(model, str(out_path), save_as_external_data=True, all_tensors_to_one_file=True,
                    location=data.name, size_threshold=1024)
    data.chmod(0o644)  # onnx writes it owner-only; the graph file beside it is world-readable
    return out_path


def quantize_embedder(onnx_path: Path, out_path: Path) -> Path:
    """Dynamic int8 (QInt8 weights, *per-channel* scales) of every MatMul of the encoder.

    Per-channel: closer to fp32 than per-tensor scales (cosine on PubMedQA sentences, docs/benchmarks.md,
    "Model backends"), at the same speed and size.
    """
    return _quantize(onnx_path, out_path, [], per_channel=True)


# --------------------------------------------------------------------------------------------------
# Inference
# --------------------------------------------------------------------------------------------------


def _session(onnx_path: Path, threads: int):
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.intra_op_num_threads = int(threads)
    opts.inter_op_num_threads = 1
    opts.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    # Both models keep onnxruntime's arena: a decode step reallocates every layer's KV cache one token
    # longer, and without the arena glibc's heap fragmented under it (peak memory with and without:
    # docs/benchmarks.md, "Model backends"). The generator gives the arena back after each call and the embedder
    # after each encode() (``_shrink_arena``); the embedder is slower without one.
    opts.enable_cpu_mem_arena = True
    return ort.InferenceSession(str(onnx_path), sess_options=opts, providers=["CPUExecutionProvider"])


@functools.cache
def _shrink_arena():
    """Run options that free the arena's unused regions when a run ends (onnxruntime's arena shrinkage)."""
    import onnxruntime as ort

    options = ort.RunOptions()
    options.add_run_config_entry("memory.enable_memory_arena_shrinkage", "cpu:0")
    return options


def left_padded(rows: list[list[int]], pad_token_id: int) -> tuple[np.ndarray, np.ndarray]:
    """Token rows as a LEFT-padded batch: (ids, attention mask), both [len(rows), longest] int64."""
    width = max(map(len, rows))
    ids = np.full((len(rows), width), pad_token_id, dtype=np.int64)
    mask = np.zeros((len(rows), width), dtype=np.int64)
    for b, row in enumerate(rows):
        if row:
            ids[b, width - len(row):] = row
            mask[b, width - len(row):] = 1
    return ids, mask


def position_ids_for(attention_mask: np.ndarray) -> np.ndarray:
    """Positions of a left-padded batch: cumsum(mask) - 1, clipped at 0 (padding gets 0)."""
    return np.clip(np.cumsum(attention_mask, axis=1) - 1, 0, None).astype(np.int64)


class OnnxCausalLM:
    """onnxruntime session over a graph written by :func:`export_causal_lm` (fp32 or int8)."""

    def __init__(self, onnx_path: Path, *, threads: int = 1):
        import onnxruntime as ort

        self._ort = ort
        self.session = _session(Path(onnx_path), threads)
        inputs = {i.name: i for i in self.session.get_inputs()}
        self.past_names = sorted(
            (n for n in inputs if n.startswith("past_key_values.")),
            key=lambda n: (int(n.split(".")[1]), n.endswith(".value")),
        )
        self.num_layers = len(self.past_names) // 2
        self.present_names = [n.replace("past_key_values.", "present.") for n in self.past_names]
        first = inputs[self.past_names[0]].shape  # [batch, kv_heads, past_seq, head_dim]
        self.kv_heads, self.head_dim = int(first[1]), int(first[3])
        self.output_names = ["logits", *self.present_names]
        # Graphs exported before the input existed return every position's logits.
        self.keeps_logits = "logits_to_keep" in inputs
        vocab = self.session.get_outputs()[0].shape[-1]
        self.vocab_size = vocab if isinstance(vocab, int) else None  # exported graphs fix it

    def _empty_past(self, batch: int) -> dict[str, np.ndarray]:
        empty = np.zeros((batch, self.kv_heads, 0, self.head_dim), dtype=np.float32)
        return {name: empty for name in self.past_names}

    def _keep(self, n: int) -> dict[str, np.ndarray]:
        """The ``logits_to_keep`` feed: the last ``n`` positions' logits, 0 = all."""
        return {"logits_to_keep": np.array([n], dtype=np.int64)} if self.keeps_logits else {}

    def _logits(self, input_ids: np.ndarray, attention_mask: np.ndarray, keep: int) -> np.ndarray:
        """Logits [B, kept, V] of a (left-padded) batch from an empty cache, written straight into a numpy
        array (IO binding): an output left in the arena would outlive the run's shrinkage (50 MB for one
        256-token abstract's logits)."""
        input_ids = np.ascontiguousarray(input_ids, dtype=np.int64)
        attention_mask = np.ascontiguousarray(attention_mask, dtype=np.int64)
        batch, seq = input_ids.shape
        feeds = {
            "input_ids": input_ids,
            "attention_mask": attention_mask,
            "position_ids": position_ids_for(attention_mask),
            **self._keep(keep),
            **self._empty_past(batch),
        }
        if self.vocab_size is None:
            return self.session.run(["logits"], feeds, _shrink_arena())[0]
        kept = seq if keep <= 0 or not self.keeps_logits else min(keep, seq)
        logits = np.empty((batch, kept, self.vocab_size), dtype=np.float32)
        binding = self.session.io_binding()
        for name, value in feeds.items():
            binding.bind_cpu_input(name, np.ascontiguousarray(value))
        binding.bind_output("logits", "cpu", 0, np.float32, list(logits.shape), logits.ctypes.data)
        # The KV cache is an output too: into numpy as well, dropped on return (nothing outlives the run).
        caches = [np.empty((batch, self.kv_heads, seq, self.head_dim), dtype=np.float32) for _ in self.present_names]
        for name, cache in zip(self.present_names, caches, strict=True):
            binding.bind_output(name, "cpu", 0, np.float32, list(cache.shape), cache.ctypes.data)
        self.session.run_with_iobinding(binding, _shrink_arena())
        return logits

    def forward(self, input_ids: np.ndarray, attention_mask: np.ndarray) -> np.ndarray:
        """Logits [B,T,V] (float32) of a (left-padded) batch, from an empty cache."""
        return self._logits(input_ids, attention_mask, 0)

    def forward_last(self, input_ids: np.ndarray, attention_mask: np.ndarray) -> np.ndarray:
        """Logits [B,V] of the last position only (left padding: every row's last token is real)."""
        return self._logits(input_ids, attention_mask, 1)[:, -1, :]

    def release_arena(self) -> None:
        """Give the arena's free regions back (after a generation: its KV caches are garbage now).

        Shrinkage happens at the end of a run, and only the caller knows a generation's last step was
        the last, so this is one extra 1-token run (milliseconds) with the shrink option.
        """
        ids = np.zeros((1, 1), dtype=np.int64)
        feeds = {"input_ids": ids, "attention_mask": np.ones_like(ids), "position_ids": ids, **self._keep(1),
                 **self._empty_past(1)}
        self.session.run(["logits"], feeds, _shrink_arena())

    def prefill(self, token_ids) -> list[np.ndarray]:
        """The KV cache (``present.*``, each [1, kv_heads, T, head_dim]) of one unpadded token sequence: a
        prefix that many prompts share, computed once and passed to :meth:`generate` as ``prefix``."""
        _, present, _ = self._prefill_rows([list(token_ids)], 0, None)
        return [np.ascontiguousarray(self._array(p)) for p in present]

    def _run(self, feeds: dict) -> tuple[np.ndarray, list]:
        """One step with OrtValues: the present tensors stay in onnxruntime's memory and feed the next step as is."""
        as_ort = self._ort.OrtValue.ortvalue_from_numpy
        ort_feeds = {k: v if isinstance(v, self._ort.OrtValue) else as_ort(v) for k, v in feeds.items()}
        outputs = self.session.run_with_ort_values(self.output_names, ort_feeds)
        return outputs[0].numpy(), list(outputs[1:])

    def generate(
        self,
        input_ids: np.ndarray,
        attention_mask: np.ndarray,
        *,
        max_new_tokens: int,
        eos_token_ids: set[int],
        pad_token_id: int,
        repetition_penalty: float = 1.0,
        should_stop: Callable[[int, list[int]], bool] | None = None,
        prefix: tuple[list[int], list[np.ndarray]] | None = None,
        min_new_tokens: int = 0,
    ) -> list[list[int]]:
        """Greedy decoding of a LEFT-padded batch with the KV cache (every row at once: :meth:`generate_rows`).

        Returns the new token ids of each row (no prompt, no padding, eos excluded). A row stops at an eos
        token, after ``max_new_tokens`` tokens, or when ``should_stop(row, new_ids)`` is true; finished rows
        leave the batch (its cache is compacted), and the loop ends when none is left.
        ``repetition_penalty`` is the HF/CTRL rule over each row's prompt (non-padding) + generated ids.

        ``prefix`` = (token ids, :meth:`prefill` of them): every row's prompt is those ids followed by its row
        of ``input_ids``; the prefix is not read again (its cache is repeated over the batch), and the result
        is that of the whole prompts read afresh (tests/workers/test_onnx_models.py checks it token for token).
        The arena is shrunk when the call ends (:meth:`release_arena`).
        """
        input_ids = np.ascontiguousarray(input_ids, dtype=np.int64)
        mask = np.ascontiguousarray(attention_mask, dtype=np.int64)
        if input_ids.ndim != 2 or input_ids.shape != mask.shape:
            raise ValueError(f"input_ids {input_ids.shape} and attention_mask {mask.shape} must be the same [B,T]")
        if mask.shape[1] and (mask[:, -1] == 0).any():
            raise ValueError("the batch must be LEFT-padded (every row's last token valid)")
        rows = [input_ids[b][mask[b] != 0].tolist() for b in range(input_ids.shape[0])]
        return self.generate_rows(rows, max_batch=max(len(rows), 1), max_new_tokens=max_new_tokens,
                                  eos_token_ids=eos_token_ids, pad_token_id=pad_token_id,
                                  repetition_penalty=repetition_penalty, should_stop=should_stop, prefix=prefix,
                                  min_new_tokens=min_new_tokens)

    def generate_rows(
        self,
        rows: list[list[int]],
        *,
        max_batch: int,
        max_new_tokens: int,
        eos_token_ids: set[int],
        pad_token_id: int,
        repetition_penalty: float = 1.0,
        should_stop: Callable[[int, list[int]], bool] | None = None,
        prefix: tuple[list[int], list[np.ndarray]] | None = None,
        min_new_tokens: int = 0,
    ) -> list[list[int]]:
        """Greedy decoding of many prompts (unpadded token rows), at most ``max_batch`` decoding at a time.

        Continuous batching: when rows finish, the next waiting prompts are read (prefilled together) and join
        the running batch, their cache left-padded to its length (or its cache to theirs), so that decoding
        steps stay full instead of running a batch's last long row alone. Padding is invisible to every row
        (mask and positions), so each row's tokens are those it gets alone (tested). Rows are admitted
        shortest prompt first. ``should_stop`` gets the index into ``rows``. No eos token is chosen before a
        row has ``min_new_tokens`` new tokens.
        """
        try:
            return self._generate_rows(rows, max_batch=max_batch, max_new_tokens=max_new_tokens,
                                       eos_token_ids=eos_token_ids, pad_token_id=pad_token_id,
                                       repetition_penalty=repetition_penalty, should_stop=should_stop, prefix=prefix,
                                       min_new_tokens=min_new_tokens)
        finally:
            self.release_arena()

    def _prefill_rows(self, rows: list[list[int]], pad_token_id: int, prefix) -> tuple[np.ndarray, list, np.ndarray]:
        """(last-position logits [k, V], present caches, attention mask) of prompts read together, left-padded,
        after the shared ``prefix`` cache when there is one."""
        ids, mask = left_padded(rows, pad_token_id)
        past = self._empty_past(len(rows))
        skip = 0
        if prefix is not None:
            skip = len(prefix[0])
            past = {name: np.repeat(cache, len(rows), axis=0) for name, cache in zip(self.past_names, prefix[1], strict=True)}
            mask = np.concatenate([np.ones((len(rows), skip), dtype=np.int64), mask], axis=1)
        feeds = {"input_ids": ids, "attention_mask": mask, "position_ids": position_ids_for(mask)[:, skip:],
                 **self._keep(1), **past}
        logits, present = self._run(feeds)
        return logits[:, -1, :], present, mask

    def _array(self, value) -> np.ndarray:
        """A cache tensor as numpy: an OrtValue (what a step returns, fed back as is) only when it must change."""
        return value.numpy() if isinstance(value, self._ort.OrtValue) else value

    def _left_pad(self, array, width: int, axis: int) -> np.ndarray:
        array = self._array(array)
        missing = width - array.shape[axis]
        if missing <= 0:
            return array
        pad = [(0, 0)] * array.ndim
        pad[axis] = (missing, 0)
        return np.pad(array, pad)

    def _generate_rows(self, rows, *, max_batch, max_new_tokens, eos_token_ids, pad_token_id, repetition_penalty,
                       should_stop, prefix, min_new_tokens=0):
        results: list[list[int]] = [[] for _ in rows]
        if not rows or max_new_tokens <= 0:
            return results
        if any(not row for row in rows):
            raise ValueError("every prompt needs at least one token")
        max_batch = max(int(max_batch), 1)
        eos = {int(t) for t in eos_token_ids}
        penalise = repetition_penalty != 1.0
        prefix_ids = list(prefix[0]) if prefix is not None else []
        waiting = sorted(range(len(rows)), key=lambda i: len(rows[i]))
        waiting.reverse()  # pop() from the end: the shortest first
        # The running batch: original row indices, their next-token logits, caches, mask and seen tokens.
        active = np.zeros(0, dtype=np.int64)
        next_logits = present = mask = seen = None

        def admit():
            nonlocal active, next_logits, present, mask, seen
            chosen = [waiting.pop() for _ in range(min(max_batch - len(active), len(waiting)))]
            logits, caches, new_mask = self._prefill_rows([rows[i] for i in chosen], pad_token_id, prefix)
            new_seen = None
            if penalise:
                vocab = logits.shape[-1]
                new_seen = np.zeros((len(chosen), vocab), dtype=bool)
                for b, i in enumerate(chosen):
                    ids = np.asarray(prefix_ids + rows[i], dtype=np.int64)
                    new_seen[b, ids[(ids >= 0) & (ids < vocab)]] = True
            if not len(active):
                active, next_logits, present, mask, seen = np.asarray(chosen), logits, caches, new_mask, new_seen
                return
            width = max(mask.shape[1], new_mask.shape[1])
            present = [np.concatenate([self._left_pad(old, width, 2), self._left_pad(new, width, 2)])
                       for old, new in zip(present, caches, strict=True)]
            mask = np.concatenate([self._left_pad(mask, width, 1), self._left_pad(new_mask, width, 1)])
            next_logits = np.concatenate([next_logits, logits])
            seen = np.concatenate([seen, new_seen]) if penalise else None
            active = np.concatenate([active, np.asarray(chosen)])

        admit()
        # Rows join when this many slots are free (a join copies the batch's cache once), or when none is left.
        refill_at = max(1, max_batch // 4)
        while len(active):
            scores = next_logits
            if penalise:
                scores = np.where(seen, np.where(scores > 0, scores / repetition_penalty, scores * repetition_penalty),
                                  scores)
            if min_new_tokens > 0 and eos:
                early = [pos for pos, row in enumerate(active) if len(results[row]) < min_new_tokens]
                if early:
                    scores = scores.copy()
                    scores[np.ix_(early, sorted(t for t in eos if 0 <= t < scores.shape[-1]))] = -np.inf
            tokens = scores.argmax(axis=-1)
            keep = np.ones(len(active), dtype=bool)
            for pos, row in enumerate(active):
                token = int(tokens[pos])
                if token in eos:
                    keep[pos] = False
                    continue
                results[row].append(token)
                if penalise:
                    seen[pos, token] = True
                if len(results[row]) >= max_new_tokens or (should_stop is not None and should_stop(int(row), list(results[row]))):
                    keep[pos] = False
            if not keep.all():  # finished rows leave the batch and its cache
                active, tokens, mask = active[keep], tokens[keep], mask[keep]
                present = [np.ascontiguousarray(self._array(p)[keep]) for p in present]
                if penalise:
                    seen = seen[keep]
            if len(active):
                step_positions = mask.sum(axis=1, keepdims=True).astype(np.int64)  # valid tokens so far = next position
                mask = np.concatenate([mask, np.ones((len(active), 1), dtype=np.int64)], axis=1)
                feeds = {"input_ids": tokens.astype(np.int64).reshape(-1, 1), "attention_mask": mask,
                         "position_ids": step_positions, **self._keep(1),
                         **dict(zip(self.past_names, present, strict=True))}
                logits, present = self._run(feeds)
                next_logits = logits[:, -1, :]
            if waiting and (max_batch - len(active) >= refill_at or not len(active)):
                admit()
        return results


class OnnxEmbedder:
    """Sentence embeddings (mean pooling over the attention mask, L2-normalised) from an exported encoder."""

    def __init__(self, onnx_path: Path, tokenizer_dir: Path, *, threads: int = 1, max_length: int = 256):
        from tokenizers import Tokenizer

        self.session = _session(Path(onnx_path), threads)
        self.input_names = {i.name for i in self.session.get_inputs()}
        self.max_length = int(max_length)
        self.tokenizer = Tokenizer.from_file(str(Path(tokenizer_dir) / "tokenizer.json"))
        self.tokenizer.no_padding()  # tokenizer.json may pin a fixed padding; batches are padded here
        self.tokenizer.enable_truncation(max_length=self.max_length)
        self.pad_id = self._pad_id(Path(tokenizer_dir))

    def _pad_id(self, tokenizer_dir: Path) -> int:
        for token in ("[PAD]", "<pad>"):
            token_id = self.tokenizer.token_to_id(token)
            if token_id is not None:
                return int(token_id)
        config = tokenizer_dir / "config.json"
        if config.exists():
            return int(json.loads(config.read_text()).get("pad_token_id") or 0)
        return 0

    def encode(self, texts: list[str], *, batch_size: int = 32) -> np.ndarray:
        """[N, dim] float32; texts are batched by length (less padding) and returned in input order."""
        texts = list(texts)
        if not texts:
            dim = self.session.get_outputs()[0].shape[-1]
            return np.zeros((0, dim if isinstance(dim, int) else 0), dtype=np.float32)
        encodings = self.tokenizer.encode_batch(texts)
        order = sorted(range(len(texts)), key=lambda i: len(encodings[i].ids))
        out: np.ndarray | None = None
        for start in range(0, len(order), batch_size):
            chunk = order[start:start + batch_size]
            width = max(len(encodings[i].ids) for i in chunk)
            ids = np.full((len(chunk), width), self.pad_id, dtype=np.int64)
            mask = np.zeros((len(chunk), width), dtype=np.int64)
            types = np.zeros((len(chunk), width), dtype=np.int64)
            for row, i in enumerate(chunk):
                enc = encodings[i]
                n = len(enc.ids)
                ids[row, :n] = enc.ids
                mask[row, :n] = 1
                types[row, :n] = enc.type_ids
            feeds = {"input_ids": ids, "attention_mask": mask, "token_type_ids": types}
            # The arena serves every batch of the call, then the last run gives its free regions back: a
            # worker keeps the largest batch's activations only while it embeds.
            last = start + batch_size >= len(order)
            hidden = self.session.run(None, {k: v for k, v in feeds.items() if k in self.input_names},
                                      _shrink_arena() if last else None)[0]
            m = mask[:, :, None].astype(np.float32)
            pooled = (hidden * m).sum(axis=1) / np.clip(m.sum(axis=1), 1e-9, None)
            pooled /= np.clip(np.linalg.norm(pooled, axis=1, keepdims=True), 1e-12, None)
            if out is None:
                out = np.empty((len(texts), pooled.shape[1]), dtype=np.float32)
            out[chunk] = pooled
        return out
