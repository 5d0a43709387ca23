"""The model runtime: engines that load model artifacts from disk and run them on CPU threads.

It knows no Django and no database: callers hand it plain specs (``store.EngineSpec``, or any object
with the same fields, such as a registry row) and settings as arguments, and get engines back.

- ``store``: artifact checksums and ``load_engine(spec, threads=...)``;
- ``engines``: torch backends, ``Generator`` (batched generation, option scoring), ``TorchEmbedder``;
- ``onnx_models``: ONNX export, int8 quantization and the onnxruntime backends;
- ``answer_evidence``: the conclusion reader behind yes/no/maybe answers;
- ``memory``: returning freed heap to the operating system.

Which version is active is the database's business: ``workers.versions`` asks it and loads here.
"""
