"""LoRA fine-tuning of the generator: data, training loop, evaluation, export."""
