"""The GPU run of issues 21/22, as one prepared script: chemformer-small denoising pretraining, then the retro
report's Table 2 first rows fine-tuned from it, each stage in a wall-clock budget, figures beside the report's.

Runs the trainer cores directly (``NullReporter``, one process: no Ray, no MLflow), so the offline kit
(``../shared/gpu/make-kit.sh``) is all a GPU host needs beside its torch/transformers/peft/accelerate:

1. ``studies/pretrain_chemformer_small.yaml`` as written (BART 6+6, d 512, FFN 2048; USPTO-50K train molecules,
   its valid/test molecules removed by the leakage guard) for ``--pretrain-minutes``: tokens/s, optimizer steps,
   the held-out masked-token accuracy / greedy reconstruction exact match, and MFU.
2. ``studies/papers/retro_table2_as_published.yaml``'s first two grid rows (``full``, ``fix_encoder``: lr 1e-3
   cyclic, batch 128, dropout 0.1) from stage 1's checkpoint, ``--retro-minutes`` split between them: epochs,
   tokens/s, valid greedy top-1 on ``--valid-subset`` reactions, test top-1/3/5 (beam 10) on ``--test-limit``,
   beside ``studies/papers/published.yaml``.

Each budget covers a stage's training, validation and test. The number of epochs (so the learning-rate schedule's
length) is sized to the budget before training by timing a few training batches and one validation pass; the
epoch loop's ``max_seconds`` ends a stage early if an epoch turns out slower. The summary (markdown) and the
figures (JSON) are printed and, when ``$OUT`` is set, written there after each stage (a killed run keeps stage 1).

    source .gpu/setup.sh && python benchmarks/gpu_papers.py            # on the GPU host, ~9 min
    python benchmarks/gpu_papers.py --smoke                            # CPU, tiny-bart, a few hundred rows
"""

from __future__ import annotations

import argparse
import json
import math
import os
import shutil
import sys
import tempfile
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "benchmarks")]  # the project from source; flops.py beside this file
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

from flops import peak_tflops  # noqa: E402

__all__ = ["main", "parse_args", "run", "summary_markdown"]

PRETRAIN_STUDY = ROOT / "studies" / "pretrain_chemformer_small.yaml"
RETRO_STUDY = ROOT / "studies" / "papers" / "retro_table2_as_published.yaml"
PUBLISHED = ROOT / "studies" / "papers" / "published.yaml"
ROWS = 2  # Table 2's first rows
BEAM_COST = 3.0  # test beam-10 time per product over valid greedy time per product (a reserve, not a figure)
SLACK = 1.15  # calibrated epoch time is padded by this (checkpoint writes, the schedule's tail)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--pretrain-minutes", type=float, default=4.0, help="stage 1 budget (train + valid + test)")
    p.add_argument("--retro-minutes", type=float, default=4.0, help="stage 2 budget, split evenly between the rows")
    p.add_argument("--test-limit", type=int, default=500, help="test molecules / reactions scored per stage")
    p.add_argument("--valid-subset", type=int, default=300, help="held-out molecules / reactions scored each epoch")
    p.add_argument("--max-epochs", type=int, default=None, help="cap on the calibrated epochs (default: the study's)")
    p.add_argument("--smoke", action="store_true", help="CPU-sized: tiny-bart, a few hundred rows, seconds per stage")
    p.add_argument("--out", default=os.environ.get("OUT"), help="folder for gpu_papers.md/.json (default $OUT)")
    args = p.parse_args(argv)
    if args.smoke:  # the same path at the smallest size; explicit flags still win
        given = set(argv if argv is not None else sys.argv[1:])
        for flag, value in (("--pretrain-minutes", 0.3), ("--retro-minutes", 0.5), ("--test-limit", 16),
                            ("--valid-subset", 16), ("--max-epochs", 2)):
            if flag not in given:
                setattr(args, flag[2:].replace("-", "_"), value)
    return args


# -- the studies, as the files write them ------------------------------------------------------------------

def _load(path: Path) -> dict[str, Any]:
    return yaml.safe_load(path.read_text())


def pretrain_study(args: argparse.Namespace) -> dict[str, Any]:
    """``pretrain_chemformer_small.yaml`` with the held-out sizes of this run (and tiny under ``--smoke``)."""
    study = _load(PRETRAIN_STUDY)
    study["options"] = {**study["options"], "val_subset": args.valid_subset, "test_limit": args.test_limit}
    if args.smoke:
        study["model"] = {"name": "tiny-bart", "max_length": 128}
        study["fixed"] = {**study["fixed"], "batch_size": 32, "lr": 1e-3}
        study["options"]["draw_from"] = [{"name": "uspto50k", "limit": 150}]
        study["options"]["exclude"] = [{"name": "uspto50k", "limit": 30}]
    return study


def retro_study(args: argparse.Namespace, treatment: str, model_dir: Path) -> dict[str, Any]:
    """``retro_table2_as_published.yaml``, one treatment fixed, its pretraining stage replaced by ``model_dir``."""
    study = _load(RETRO_STUDY)
    study["model"] = {**{k: v for k, v in study["model"].items() if k != "pretrain"}, "path": str(model_dir)}
    study.update(sampler="tpe", grid={}, num_trials=1, fixed={**study["fixed"], "treatment": treatment})
    study["options"] = {**study["options"], "val_subset": args.valid_subset, "test_limit": args.test_limit}
    if args.smoke:
        study["dataset"] = {**study["dataset"], "limit": 200}
        study["model"]["max_length"] = 128
        study["fixed"]["batch_size"] = 32
        study["options"]["eval_batch_size"] = 16
    return study


def table2_rows() -> list[str]:
    return list(_load(RETRO_STUDY)["grid"]["treatment"][:ROWS])


def published_row(treatment: str) -> dict[str, float]:
    table = _load(PUBLISHED)["retro_table2"]
    return next(r["published"] for r in table["rows"] if r["key"] == treatment)


# -- budget: epochs that fit, and FLOPs per unit -----------------------------------------------------------

def _sync() -> None:
    import torch

    if torch.cuda.is_available():
        torch.cuda.synchronize()


def _step_seconds(trainer: Any, batches: int = 12, warmup: int = 3) -> tuple[float, int, float]:
    """Seconds and rows of ``batches`` forward + backward passes after ``warmup`` untimed ones (weights unchanged:
    no optimizer step; gradients cleared), and the seconds an epoch's loader takes to build (SMILES enumeration)."""
    from trainables.batching import to_device

    trainer.model.to(trainer.device).train()
    seconds, rows = 0.0, 0
    tic = time.perf_counter()
    loader = trainer.train_loader(0)
    build_s = time.perf_counter() - tic
    for i, batch in enumerate(loader):
        if i == warmup + batches:
            break
        batch = to_device(batch, trainer.device)
        _sync()
        tic = time.perf_counter()
        with trainer.accelerator.autocast():
            loss, _ = trainer.train_step(batch)
        loss.backward()
        _sync()
        if i >= warmup:
            seconds += time.perf_counter() - tic
            rows += len(batch["input_ids"])
    trainer.model.zero_grad(set_to_none=True)
    if hasattr(trainer, "_tokens"):  # the pretrain trainer counts tokens in train_step: these must not count
        trainer._tokens = 0
    return seconds, rows, build_s


def fit_budget(trainer: Any, budget_s: float, test_rows: int, test_cost: float, cap: int) -> dict[str, float]:
    """Size ``trainer``'s run to ``budget_s`` seconds: its epochs (the schedule's length) and ``max_seconds``.

    An epoch costs its training rows at the timed rate plus one validation pass; the test pass is reserved at
    ``test_cost`` times the validation time per row. Returns what the sizing measured.
    """
    tic = time.perf_counter()
    seconds, rows, build_s = _step_seconds(trainer)
    train_s = build_s + seconds / max(rows, 1) * trainer.epoch_rows()[0]  # the optimizer step is small beside these
    valid_tic = time.perf_counter()
    trainer.evaluate_valid(Path(tempfile.gettempdir()))  # the pretrained model's valid metrics, and its time
    valid_s = time.perf_counter() - valid_tic
    reserve = valid_s / max(trainer.valid_rows() or 1, 1) * test_rows * test_cost
    left = budget_s - (time.perf_counter() - tic) - reserve
    epoch_s = (train_s + valid_s) * SLACK
    epochs = max(1, min(cap, math.floor(left / epoch_s)))
    trainer.spec = trainer.spec.model_copy(update={"max_epochs": epochs})
    trainer.max_seconds = max(left, 1.0)
    return {"planned_epochs": epochs, "planned_epoch_s": epoch_s, "test_reserve_s": reserve}


def flops_per_unit(trainer: Any) -> float:
    """Model FLOPs of one training step (forward + backward, ``torch.utils.flop_counter`` as in
    benchmarks/flops.py) on a real batch, per unit the trainer's throughput counts (tokens)."""
    from torch.utils.flop_counter import FlopCounterMode

    from trainables.batching import to_device

    model = trainer.unwrapped()
    model.train()
    batch = to_device(next(iter(trainer.train_loader(0))), trainer.device)
    counter = FlopCounterMode(display=False)
    before = getattr(trainer, "_tokens", 0)
    with counter:
        with trainer.accelerator.autocast():
            loss, units = trainer.train_step(batch)
        loss.backward()
    model.zero_grad(set_to_none=True)
    if hasattr(trainer, "_tokens"):  # pretrain: throughput counts source + target tokens, not predicted ones
        units, trainer._tokens = trainer._tokens - before, before
    return counter.get_total_flops() / max(units, 1)


class _KeepModel:
    """A ``NullReporter`` that keeps only the newest checkpoint's ``model/`` (the best epoch's export)."""

    def __init__(self, folder: Path) -> None:
        self.folder, self.history = folder, []

    def report(self, metrics: Mapping[str, Any], checkpoint_dir: Path | None = None) -> None:
        self.history.append(dict(metrics))
        if checkpoint_dir is not None and (checkpoint_dir / "model").is_dir():
            shutil.rmtree(self.folder, ignore_errors=True)
            shutil.copytree(checkpoint_dir / "model", self.folder)

    def resume_dir(self) -> Path | None:
        return None


def _speed(trainer: Any, history: list[dict[str, Any]], flops: float) -> dict[str, Any]:
    """Tokens/s (the mean over epochs), optimizer steps, and MFU against this GPU's dense bf16 peak (``None``:
    the CPU, or a GPU not in benchmarks/flops.py's table)."""
    epochs = len(history)
    tokens_per_s = sum(h["train_tokens_per_s"] for h in history) / max(epochs, 1)
    peak = peak_tflops()
    return {"epochs": epochs, "steps": trainer.schedule_steps(trainer.epoch_rows()[:epochs]),
            "tokens_per_s": tokens_per_s, "flops_per_token": flops,
            "mfu": flops * tokens_per_s / (peak * 1e12) if peak else None,
            "budget_stopped": int(history[-1].get("budget_stopped", 0)) if history else 0}


# -- the stages -------------------------------------------------------------------------------------------

def run_pretrain(args: argparse.Namespace, model_dir: Path) -> dict[str, Any]:
    from studies.spec import parse_study
    from trainables import TASKS
    from trainables.pretrain.task import DenoisingTrainer

    tic = time.perf_counter()
    spec = parse_study(pretrain_study(args))
    prepared = TASKS.get("pretrain").prepare(spec)
    prepare_s = time.perf_counter() - tic
    trainer = DenoisingTrainer(dict(spec.fixed), prepared.payload, spec.trial_spec())
    budget = args.pretrain_minutes * 60 - (time.perf_counter() - tic)
    plan = fit_budget(trainer, budget, len(trainer.test), 1.0, args.max_epochs or spec.max_epochs)
    flops = flops_per_unit(trainer)
    reporter = _KeepModel(model_dir)
    final = trainer.fit(reporter)  # type: ignore[arg-type]
    return {"model": spec.model.name, "corpus": {k: prepared.summary[k] for k in sorted(prepared.summary)},
            "prepare_s": prepare_s, "wall_s": time.perf_counter() - tic, **plan,
            **_speed(trainer, reporter.history, flops),
            **{k: final[k] for k in ("valid_token_acc", "valid_exact", "test_token_acc", "test_exact", "test_loss")},
            "valid_molecules": len(trainer.valid), "test_molecules": len(trainer.test)}


def run_retro(args: argparse.Namespace, model_dir: Path, treatment: str, data: Any, budget_s: float) -> dict[str, Any]:
    from search_spaces import SPACES
    from studies.spec import parse_study
    from trainables.retro.task import RetroTrainer

    tic = time.perf_counter()
    spec = parse_study(retro_study(args, treatment, model_dir))
    config = SPACES.get(spec.search_space).sample(seed=spec.seed, fixed=spec.fixed)  # as a trial of the study
    trainer = RetroTrainer(config, data, spec.trial_spec())
    plan = fit_budget(trainer, budget_s - (time.perf_counter() - tic), len(trainer.test), BEAM_COST,
                      args.max_epochs or spec.max_epochs)
    flops = flops_per_unit(trainer)
    with tempfile.TemporaryDirectory(prefix="gpu-papers-") as tmp:
        reporter = _KeepModel(Path(tmp) / "model")
        final = trainer.fit(reporter)  # type: ignore[arg-type]
    return {"treatment": treatment, "wall_s": time.perf_counter() - tic, **plan,
            **_speed(trainer, reporter.history, flops),
            "trainable_params": trainer.n_trainable, "total_params": trainer.n_total,
            "valid_top1": final["valid_top1"], "best_epoch": final["best_epoch"],
            **{f"test_{k}": final[f"test_{k}"] for k in ("top1", "top3", "top5", "token_acc")},
            "valid_reactions": len(trainer.valid), "test_reactions": len(trainer.test),
            "published": published_row(treatment)}


def _device() -> str:
    import torch

    return torch.cuda.get_device_name() if torch.cuda.is_available() else "cpu"


def run(args: argparse.Namespace) -> dict[str, Any]:
    """Both stages; the figures so far are written to ``args.out`` after each."""
    from studies.spec import parse_study
    from trainables.retro.task import prepare_retro

    results: dict[str, Any] = {"device": _device(), "smoke": args.smoke, "peak_tflops": peak_tflops(),
                               "args": {k: v for k, v in vars(args).items() if k != "out"}, "retro": []}
    with tempfile.TemporaryDirectory(prefix="gpu-papers-") as tmp:
        model_dir = Path(tmp) / "pretrained"
        results["pretrain"] = run_pretrain(args, model_dir)
        emit(results, args.out)
        tic = time.perf_counter()
        rows = table2_rows()
        data = prepare_retro(parse_study(retro_study(args, rows[0], model_dir))).payload  # the rows share it
        results["retro_prepare_s"] = time.perf_counter() - tic
        for i, treatment in enumerate(rows):
            left = args.retro_minutes * 60 - (time.perf_counter() - tic)
            results["retro"].append(run_retro(args, model_dir, treatment, data, left / (len(rows) - i)))
            emit(results, args.out)
    return results


# -- the report --------------------------------------------------------------------------------------------

def _pct(x: float | None) -> str:
    return "-" if x is None else f"{100 * x:.1f}"


def summary_markdown(r: dict[str, Any]) -> str:
    """The note's tables: stage 1's speed and held-out accuracy; stage 2's rows beside the report's."""
    mfu = lambda s: "unknown" if s["mfu"] is None else f"{100 * s['mfu']:.1f}%"  # noqa: E731
    peak = "unknown" if r["peak_tflops"] is None else f"{r['peak_tflops']:.0f} TFLOP/s"
    lines = [f"# GPU papers run on {r['device']}{' (smoke: CPU-sized, numbers mean nothing)' if r['smoke'] else ''}",
             "", f"Peak dense bf16: {peak}; "
             "MFU = FLOPs per token (torch.utils.flop_counter, one real training batch, forward + backward) x "
             "tokens/s / peak. Arguments: " + ", ".join(f"{k}={v}" for k, v in r["args"].items()), ""]
    p = r.get("pretrain")
    if p:
        c = p["corpus"]
        lines += ["## Stage 1: chemformer-small denoising pretraining (studies/pretrain_chemformer_small.yaml)", "",
                  f"Model {p['model']}; corpus {c.get('n_train')} train / {c.get('n_valid')} valid / {c.get('n_test')} "
                  f"test molecules, {c.get('n_leakage_removed')} removed by the leakage guard; prepare "
                  f"{p['prepare_s']:.0f} s, stage {p['wall_s']:.0f} s.", "",
                  "| epochs (planned) | steps | tokens/s | GFLOP/token | MFU | valid token acc | valid exact "
                  "| test token acc | test exact | test loss |", "|" + "---|" * 10,
                  f"| {p['epochs']} ({p['planned_epochs']}) | {p['steps']} | {p['tokens_per_s']:,.0f} | "
                  f"{p['flops_per_token'] / 1e9:.3f} | {mfu(p)} | {_pct(p['valid_token_acc'])} | {_pct(p['valid_exact'])} "
                  f"| {_pct(p['test_token_acc'])} | {_pct(p['test_exact'])} | {p['test_loss']:.3f} |", "",
                  f"Held out: valid {p['valid_molecules']}, test {p['test_molecules']} molecules; masked-token accuracy "
                  "(teacher forced) and exact greedy reconstruction, in %.", ""]
    if r["retro"]:
        lines += ["## Stage 2: retro Table 2, first rows, from stage 1's checkpoint "
                  "(studies/papers/retro_table2_as_published.yaml)", "",
                  "lr 1e-3 cyclic, batch 128, dropout 0.1; the report trains 100 epochs, this run as many as its "
                  "budget holds (schedule sized to them). Test: beam 10, no deduplication (Chemformer's protocol), "
                  "in %; published: Table 2 of 004_29137dbc71a98e4c.txt.", "",
                  "| row | epochs (planned) | tokens/s | MFU | valid top-1 | test top-1 | top-3 | top-5 | token acc "
                  "| published top-1 | top-3 | top-5 | token acc |", "|" + "---|" * 13]
        for row in r["retro"]:
            pub = row["published"]
            lines.append(
                f"| {row['treatment']} | {row['epochs']} ({row['planned_epochs']}) | {row['tokens_per_s']:,.0f} | "
                f"{mfu(row)} | {_pct(row['valid_top1'])} | {_pct(row['test_top1'])} | {_pct(row['test_top3'])} | "
                f"{_pct(row['test_top5'])} | {_pct(row['test_token_acc'])} | {_pct(pub.get('test_top1'))} | "
                f"{_pct(pub.get('test_top3'))} | {_pct(pub.get('test_top5'))} | {_pct(pub.get('test_token_acc'))} |")
        first = r["retro"][0]
        lines += ["", f"Valid top-1: greedy on {first['valid_reactions']} reactions; test on the first "
                  f"{first['test_reactions']} test reactions; tokens/s counts target tokens."]
    return "\n".join(lines) + "\n"


def emit(results: dict[str, Any], out: str | None) -> str:
    """Write ``gpu_papers.md`` and ``gpu_papers.json`` into ``out`` (when given); return the markdown."""
    text = summary_markdown(results)
    if out:
        folder = Path(out)
        folder.mkdir(parents=True, exist_ok=True)
        (folder / "gpu_papers.md").write_text(text)
        (folder / "gpu_papers.json").write_text(json.dumps(results, indent=1, default=str))
    return text


def main(argv: list[str] | None = None) -> dict[str, Any]:
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()  # a bar per checkpoint save would bury the log the device tool returns
    args = parse_args(argv)
    results = run(args)
    print(emit(results, args.out))
    print(json.dumps(results, default=str))
    return results


if __name__ == "__main__":
    main()
