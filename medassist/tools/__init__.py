"""Measurement and operations: every bench_*, evaluate, demo, finetune and models_* command, and the
evaluation harnesses they run. The top of the layer stack: tools may import any layer, and no other
package imports tools (the import contract in ``tests/test_layers.py`` checks it)."""
