"""Retro benchmarks, measured side by side in one run.

1. Training tokens/s: chemtune's retro trainer (length-grouped dynamic padding, our loop) vs. a
   Hugging Face ``Seq2SeqTrainer`` (``DataCollatorForSeq2Seq``) on the same model, data, batch and
   device (bf16 on both sides where the GPU has it). Target: at least 1.5x. On a GPU it also prints
   the model FLOPs utilization of a training step.
2. Beam-search scoring of test products with beam 10: batched and length-sorted vs. one product at
   a time (same model, same outputs). Target: at least 5x.

    python benchmarks/bench_retro.py [--train 512] [--batch 32] [--products 1000] [--model tiny-bart]

Both sides of each comparison alternate (A B A B) and the best of each is reported.
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


def _spec(args: argparse.Namespace, root: Path):
    from studies.spec import parse_study

    data = Path(os.environ.get("CHEMTUNE_DATA_DIR", Path(__file__).resolve().parents[2] / "shared" / "data")) / "uspto50k"
    for split, n in (("train", args.train), ("valid", 8), ("test", args.products)):
        lines = (data / f"{split}.smi").read_text().splitlines()[:n]
        (root / f"{split}.smi").write_text("\n".join(lines) + "\n")
    return parse_study({
        "name": "bench-retro", "task": "retro", "dataset": {"name": "uspto50k", "path": str(root)},
        "model": {"name": args.model, "max_length": args.max_length}, "search_space": "retro",
        "fixed": {"gamma": 0}, "max_epochs": 1, "metric": "valid_top1", "seed": 0,
        "options": {"val_subset": 8, "eval_batch_size": args.eval_batch},
    })


def _prepare(trainer):  # noqa: ANN001, ANN202 - a RetroTrainer; (optimizer, scheduler)
    optimizer = trainer.make_optimizer()
    scheduler = trainer.make_scheduler(optimizer, max(trainer.schedule_steps(trainer.epoch_rows()[:1]), 2))
    trainer.model, optimizer, scheduler = trainer.accelerator.prepare(trainer.model, optimizer, scheduler)
    return optimizer, scheduler


def _ours(trainer) -> float:  # noqa: ANN001 - a RetroTrainer
    import torch

    optimizer, scheduler = _prepare(trainer)
    loader = trainer.train_loader(0)
    tic = time.perf_counter()
    _, tokens = trainer.train_epoch(loader, optimizer, scheduler)
    if torch.cuda.is_available():
        torch.cuda.synchronize()
    return tokens / (time.perf_counter() - tic)


def _mfu(trainer) -> None:  # noqa: ANN001 - a RetroTrainer
    from flops import train_step_mfu  # benchmarks/flops.py, beside this script

    from trainables.batching import to_device

    optimizer, _ = _prepare(trainer)
    batch = to_device(next(iter(trainer.train_loader(0))), trainer.device)
    train_step_mfu(trainer, optimizer, batch, f"  train step (source {tuple(batch['input_ids'].shape)})")


def _hf(trainer, batch: int, lr: float, out: str) -> float:  # noqa: ANN001 - a RetroTrainer (model + data)
    import torch
    from transformers import DataCollatorForSeq2Seq, Seq2SeqTrainer, Seq2SeqTrainingArguments

    model = trainer.model.base()
    items = [{"input_ids": s, "attention_mask": [1] * len(s), "labels": t} for s, t in trainer.epoch_items(0)]
    tokens = sum(len(x["labels"]) for x in items)
    args = Seq2SeqTrainingArguments(
        output_dir=out, per_device_train_batch_size=batch, num_train_epochs=1, learning_rate=lr,
        max_grad_norm=1.0, report_to=[], save_strategy="no", logging_strategy="no",
        use_cpu=not torch.cuda.is_available(), bf16=torch.cuda.is_available() and torch.cuda.is_bf16_supported(),
        dataloader_num_workers=0, disable_tqdm=True, seed=0,
    )
    hf = Seq2SeqTrainer(model=model, args=args, train_dataset=items,
                        data_collator=DataCollatorForSeq2Seq(trainer.tokenizer, model=model))
    tic = time.perf_counter()
    hf.train()
    if torch.cuda.is_available():
        torch.cuda.synchronize()
    return tokens / (time.perf_counter() - tic)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="tiny-bart")
    parser.add_argument("--train", type=int, default=512, help="train reactions per epoch")
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--products", type=int, default=1000, help="test products for the beam-search comparison")
    parser.add_argument("--single", type=int, default=None, help="products scored one at a time (default: all)")
    parser.add_argument("--eval-batch", type=int, default=64)
    parser.add_argument("--max-length", type=int, default=160)
    parser.add_argument("--repeats", type=int, default=2)
    args = parser.parse_args()

    import torch

    from trainables.retro.predictor import generate
    from trainables.retro.task import RetroTrainer, prepare_retro

    with tempfile.TemporaryDirectory() as tmp:
        spec = _spec(args, Path(tmp))
        data = prepare_retro(spec).payload
        config = {"lr": 1e-3, "batch_size": args.batch, "treatment": "full"}
        ours, theirs = [], []
        for _ in range(args.repeats):
            ours.append(_ours(RetroTrainer(config, data, spec)))
            theirs.append(_hf(RetroTrainer(config, data, spec), args.batch, 1e-3, str(Path(tmp) / "hf")))
        print(f"[train] {args.model}, {args.train} reactions, batch {args.batch}, {torch.get_num_threads()} threads")
        print(f"  chemtune  tokens/s: {max(ours):9.0f}   (runs: {', '.join(f'{x:.0f}' for x in ours)})")
        print(f"  HF Seq2SeqTrainer : {max(theirs):9.0f}   (runs: {', '.join(f'{x:.0f}' for x in theirs)})")
        device = torch.cuda.get_device_name() if torch.cuda.is_available() else "cpu"
        print(f"  ratio: {max(ours) / max(theirs):.2f}x (target >= 1.5x), both on {device}")
        if torch.cuda.is_available():
            _mfu(RetroTrainer(config, data, spec))

        # Beam search with the model trained for one epoch above (it has learned to stop).
        trainer = RetroTrainer(config, data, spec)
        _ours(trainer)
        model = trainer.accelerator.unwrap_model(trainer.model)
        inputs = [s for s, _ in trainer.encoded["test"]]
        single = inputs[: args.single or len(inputs)]
        kw = {"num_beams": 10, "top_k": 10, "max_length": args.max_length}
        tic = time.perf_counter()
        batched = generate(model, trainer.tokenizer, inputs, batch_size=args.eval_batch, sort=True, **kw)
        t_batched = (time.perf_counter() - tic) / len(inputs)
        tic = time.perf_counter()
        one = generate(model, trainer.tokenizer, single, batch_size=1, sort=False, **kw)
        t_single = (time.perf_counter() - tic) / len(single)
        same = sum(a[0] == b[0] for a, b in zip(batched, one)) / len(one)
        print(f"[beam 10] {len(inputs)} products batched (batch {args.eval_batch}, length-sorted), "
              f"{len(single)} one at a time")
        print(f"  batched   : {t_batched * 1000:8.1f} ms/product ({t_batched * len(inputs):.1f} s for {len(inputs)})")
        print(f"  one a time: {t_single * 1000:8.1f} ms/product")
        print(f"  ratio: {t_single / t_batched:.2f}x (target >= 5x); same top-1 on {same:.0%} of products")


if __name__ == "__main__":
    main()
