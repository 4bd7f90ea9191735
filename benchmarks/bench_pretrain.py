"""Pretraining throughput: chemtune's MLM epoch (the pretrain task's trainer) vs Hugging Face ``Trainer`` with
``DataCollatorForLanguageModeling``: same model (a BERT under an MLM head, same init), same tokenizer, corpus,
batch size, learning rate and device; one epoch each. Tokens/s counts the non-pad input tokens of the corpus
over the training time (chemtune: the epoch loop's ``train_tokens_per_s``; Trainer: ``train_runtime``).
Trainer runs twice: its default sampler (random batches, padded to their longest) and ``group_by_length``
(``train_sampling_strategy``, transformers 5). Both sides run at one precision (``--precision``: chemtune's
``resources.precision``, Trainer's ``bf16``; ``use_cpu`` without a GPU), fp32 by default.

    python benchmarks/bench_pretrain.py [--model tiny-bert|rxnfp-bert] [--molecules 3000] [--batch-size 64]
        [--repeats 2] [--precision fp32|bf16] [--threads N]
"""

from __future__ import annotations

import argparse
import os
import tempfile
from typing import Any

os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


def study(args: argparse.Namespace) -> dict[str, Any]:
    return {
        "name": "bench-pretrain", "task": "pretrain", "search_space": "pretrain", "metric": "valid_token_acc",
        "dataset": {"name": "corpus", "split": "random", "fractions": {"valid": 0.02, "test": 0.02}},
        "model": {"name": args.model, "max_length": 128}, "num_trials": 1, "max_epochs": 1,
        "fixed": {"batch_size": args.batch_size, "lr": 5e-4, "warmup_ratio": 0.05, "mask_prob": 0.15},
        "options": {"draw_from": [{"name": "nci-logp", "limit": args.molecules}], "val_subset": 16, "test_limit": 16},
        "resources": {"precision": args.precision},
    }


def chemtune_epoch(spec: Any, payload: Any) -> tuple[float, Any, Any]:
    """Tokens/s of one chemtune epoch, and the trainer (its model's init and tokenizer are reused)."""
    from trainables import NullReporter
    from trainables.pretrain.task import MLMTrainer

    trainer = MLMTrainer(dict(spec.fixed), payload, spec.trial_spec())
    init = {k: v.clone() for k, v in trainer.model.state_dict().items()}
    reporter = NullReporter()
    trainer.fit(reporter)
    return reporter.history[0]["train_tokens_per_s"], trainer, init


def trainer_epoch(trainer: Any, init: dict, payload: Any, batch_size: int, group_by_length: bool,
                  precision: str = "fp32") -> float:
    """Tokens/s of one HF ``Trainer`` epoch on the same model, tokenizer, corpus and batch size."""
    import torch
    from transformers import AutoModelForMaskedLM, DataCollatorForLanguageModeling, Trainer, TrainingArguments

    model = AutoModelForMaskedLM.from_config(trainer.unwrapped().config)
    model.load_state_dict(init)
    ids = trainer.encode(payload.train)
    rows = [{"input_ids": x} for x in ids]
    with tempfile.TemporaryDirectory() as out:
        args = TrainingArguments(
            output_dir=out, per_device_train_batch_size=batch_size, num_train_epochs=1, learning_rate=5e-4,
            warmup_steps=0.05, weight_decay=0.01, max_grad_norm=1.0, report_to=[], save_strategy="no",
            logging_strategy="no", dataloader_num_workers=0,
            train_sampling_strategy="group_by_length" if group_by_length else "random",
            bf16=precision == "bf16", use_cpu=not torch.cuda.is_available(),
            disable_tqdm=True, seed=0)
        collator = DataCollatorForLanguageModeling(trainer.tokenizer, mlm_probability=0.15, seed=0)
        hf = Trainer(model=model, args=args, train_dataset=rows, data_collator=collator)
        metrics = hf.train().metrics
    return sum(len(x) for x in ids) / metrics["train_runtime"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", default="tiny-bert")
    parser.add_argument("--molecules", type=int, default=3000)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--threads", type=int, default=max(1, (os.cpu_count() or 2) // 2))
    parser.add_argument("--precision", choices=("fp32", "bf16"), default="fp32",
                        help="both sides: chemtune's resources.precision, Trainer's bf16 (autocast, fp32 weights)")
    args = parser.parse_args()
    import torch

    from studies.spec import parse_study
    from trainables import TASKS

    torch.set_num_threads(args.threads)
    spec = parse_study(study(args))
    payload = TASKS.get("pretrain").prepare(spec).payload
    # Interleaved repeats, best of each: on a shared machine the load drifts between runs. The order flips every
    # repeat (chemtune first, then last), so neither side always runs cold (the first epoch of a process pays
    # for kernel and allocator warm-up).
    runs: dict[str, list[float]] = {"chemtune": [], "random": [], "grouped": []}
    trainer = init = None
    for i in range(args.repeats):
        for side in list(runs) if i % 2 == 0 else list(runs)[::-1]:
            if side == "chemtune":
                ours, trainer, init = chemtune_epoch(spec, payload)  # the same init every time (seeded)
                runs[side].append(ours)
            else:
                runs[side].append(trainer_epoch(trainer, init, payload, args.batch_size, side == "grouped",
                                                args.precision))
    best = {k: max(v) for k, v in runs.items()}
    print(f"model {args.model}, {len(payload.train)} molecules, batch {args.batch_size}, device "
          f"{trainer.device}, {args.precision}, {args.threads} threads, best of {args.repeats} interleaved runs")
    print(f"chemtune pretrain (MLM) epoch:        {best['chemtune']:10.0f} tokens/s")
    for key, label in (("random", "HF Trainer (default sampler)"), ("grouped", "HF Trainer, group_by_length")):
        print(f"{label + ':':37s} {best[key]:10.0f} tokens/s  ratio chemtune/Trainer "
              f"{best['chemtune'] / best[key]:.2f}x")

if __name__ == "__main__":
    main()
