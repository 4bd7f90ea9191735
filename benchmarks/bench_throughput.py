"""Training throughput: samples/s of chemtune's trainable vs. a Hugging Face `Trainer` on the same
model, data, batch size and device (one epoch each, same thread count; bf16 on both sides where the GPU
has it). Target: at least 1.5x. On a GPU it also prints the model FLOPs utilization of a training step.

    python benchmarks/bench_throughput.py [--model rxnfp-bert] [--n 1024] [--batch-size 32]
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time

import numpy as np
import torch
from torch import nn


class _HFWrapper(nn.Module):
    """The same RegressionModel, shaped for `Trainer` (returns the loss)."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, input_ids, attention_mask, labels=None):  # noqa: ANN001
        pred = self.model(input_ids, attention_mask)
        loss = nn.functional.mse_loss(pred, labels) if labels is not None else None
        return {"loss": loss, "logits": pred}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--model", default="rxnfp-bert")
    parser.add_argument("--n", type=int, default=1024, help="training molecules (Lipophilicity)")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=2, help="alternating runs per side; the best counts")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    from transformers import DataCollatorWithPadding, Trainer, TrainingArguments

    from studies.spec import parse_study
    from trainables import TASKS
    from trainables.property.task import PropertyTrainer

    data_dir = os.environ.get("CHEMTUNE_DATA_DIR", os.path.join(os.path.dirname(__file__), "..", "..", "shared", "data"))
    os.environ["CHEMTUNE_DATA_DIR"] = data_dir
    spec = parse_study({
        "name": "bench-throughput", "task": "property",
        "dataset": {"name": "lipophilicity", "split": "random", "limit": int(args.n / 0.8) + 1},
        "model": {"name": args.model, "max_length": 256}, "search_space": "property", "max_epochs": 1,
    })
    payload = TASKS.get("property").prepare(spec).payload
    config = {"method": "full", "lr": 5e-5, "batch_size": args.batch_size, "weight_decay": 0.0}

    cuda = torch.cuda.is_available()
    bf16 = cuda and torch.cuda.is_bf16_supported()

    def prepared() -> tuple[PropertyTrainer, object, object]:
        trainer = PropertyTrainer(config, payload, spec)
        optimizer = trainer.make_optimizer()
        scheduler = trainer.make_scheduler(optimizer, trainer.schedule_steps([trainer.n_train]))
        trainer.model, optimizer, scheduler = trainer.accelerator.prepare(trainer.model, optimizer, scheduler)
        return trainer, optimizer, scheduler

    def ours() -> tuple[float, int]:
        # chemtune: the trial's own epoch loop (length-grouped dynamic padding, Accelerate, placed batches)
        trainer, optimizer, scheduler = prepared()
        loader = trainer.rows_loader(np.arange(trainer.n_train), epoch=0)
        tic = time.perf_counter()
        trainer.train_epoch(loader, optimizer, scheduler)
        if cuda:
            torch.cuda.synchronize()
        return trainer.n_train / (time.perf_counter() - tic), trainer.n_train

    def theirs() -> float:
        # Hugging Face Trainer: same model class and seed, same data and batch size, its own collation
        hf = PropertyTrainer(config, payload, spec)
        z = hf.model.standardize(hf.candidates.targets[: hf.n_train])
        rows = [{"input_ids": ids, "attention_mask": [1] * len(ids), "labels": float(y)}
                for ids, y in zip(hf.ids["candidates"][: hf.n_train], z)]
        with tempfile.TemporaryDirectory() as out:
            targs = TrainingArguments(
                output_dir=out, per_device_train_batch_size=args.batch_size, num_train_epochs=1, learning_rate=5e-5,
                weight_decay=0.0, report_to=[], save_strategy="no", logging_strategy="no", use_cpu=not cuda, bf16=bf16, seed=0,
                dataloader_num_workers=0, disable_tqdm=True,
            )
            trainer = Trainer(model=_HFWrapper(hf.model), args=targs, train_dataset=rows,
                              data_collator=DataCollatorWithPadding(hf.tokenizer))
            tic = time.perf_counter()
            trainer.train()
            return hf.n_train / (time.perf_counter() - tic)

    ours_runs, hf_runs = [], []
    for _ in range(args.repeats):  # alternate, so load on a shared machine hits both sides alike
        sps, n = ours()
        ours_runs.append(sps)
        hf_runs.append(theirs())
    ours_sps, hf_sps = max(ours_runs), max(hf_runs)

    print(f"model={args.model} molecules={n} batch={args.batch_size} threads={args.threads}")
    print(f"chemtune trainable : {ours_sps:8.1f} samples/s")
    print(f"HF Trainer         : {hf_sps:8.1f} samples/s")
    print(f"device             : {torch.cuda.get_device_name() if cuda else 'cpu'}{' (bf16)' if bf16 else ''}")
    print(f"ratio              : {ours_sps / hf_sps:8.2f}x  (target >= 1.5x)")
    if cuda:
        from flops import train_step_mfu  # benchmarks/flops.py, beside this script

        from trainables.batching import to_device

        trainer, optimizer, scheduler = prepared()
        batch = to_device(next(iter(trainer.rows_loader(np.arange(trainer.n_train), epoch=0))), trainer.device)
        train_step_mfu(trainer, optimizer, batch, f"train step (batch {args.batch_size} x {batch['input_ids'].shape[1]} tokens)")


if __name__ == "__main__":
    main()
