"""``sftkit train``: LoRA or full fine-tuning on sftkit's own tokens and labels.

Why a small loop of our own (on ``accelerate`` + ``transformers`` models + ``peft``) rather
than ``transformers.Trainer``/TRL ``SFTTrainer``: the batches are sftkit's encoded examples
(so the masking previewed is exactly what trains), packed without padding and with attention
kept inside each example; the loss runs the LM head only on trained positions; checkpoints
are written atomically and resume is exact.

The rooms, in the order a run walks through them:

- ``command``: the CLI, recipe and flags merged into a ``Recipe``;
- ``sources``: the training files prepared, validated and encoded once (``sftkit.pipeline``);
- ``data``: samples, the seeded mixing order, packed or padded batches;
- ``model``: the base model with LoRA or fully trainable, precision;
- ``attention`` and ``loss``: the packed-attention kernel, the loss on trained positions;
- ``optim``: optimizer and learning-rate schedule;
- ``loop``: the run itself (``train``), its steps, evaluation, checkpoints;
- ``checkpoints``: crash-safe checkpoints and resume;
- ``run_files``: metrics.jsonl, the final weights, the result handed to the reporters;
- ``progress``: the progress bar;
- ``trackers``: experiment trackers (``report_to``: TensorBoard, W&B, MLflow, ... through accelerate).
"""
