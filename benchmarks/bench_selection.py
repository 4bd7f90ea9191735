"""Selection benchmarks, measured side by side in one run (CPU unless CUDA is there).

1. Per-sample gradients for influence scoring (each dotted with s_test): one autograd call per
   sample vs ``vmap(grad)`` vs one forward-mode ``jvp`` of the per-sample losses (what scoring runs),
   same head (rxnfp-sized: hidden 256), same pool. Target: >= 10x.
2. MC dropout, T = 20: all passes in one forward vs a loop of passes, tiny BERT on NCI SMILES.
   Target: >= 3x on CPU.
3. Influence scoring as the pool grows (1k, 4k, 16k): time per molecule should stay flat (linear cost).
4. LiSSA against the exact inverse on the head's output layer: Spearman correlation of the scores.
5. The same through the encoder (subsets ``peft`` with LoRA, ``last_layers``), rxnfp-bert on NCI
   SMILES. Target: >= 10x.
6. LiSSA against the exact inverse through the encoder (``peft``, a small LoRA BERT): Spearman, with
   the Hessian (damping above its most negative eigenvalue) and with the Gauss-Newton matrix.

Run: ``python benchmarks/bench_selection.py [--quick]``
"""

from __future__ import annotations

import argparse
import time
from dataclasses import replace

import numpy as np
import torch
from scipy.stats import spearmanr
from torch.func import grad
from transformers import BertConfig, BertModel

from trainables.methods import apply_method
from trainables.models.backbones import rxnfp_bert_dir
from trainables.models.regression import HeadConfig, RegressionModel
from trainables.models.tokenizer import BERT_SPECIALS, build_vocab, smiles_tokenizer
from trainables.selection.active import mc_dropout, mc_dropout_loop
from trainables.selection.influence import (
    SUBSETS,
    FlatModule,
    InfluenceKnobs,
    LissaSettings,
    PackedRegression,
    exact_hessian,
    influence_scores,
    lissa_ihvp,
    mean_loss,
    per_sample_dots,
    per_sample_grads,
    per_sample_grads_loop,
    pool_influence,
)


def timed(fn, repeat: int = 3) -> float:
    fn()  # warm-up
    best = float("inf")
    for _ in range(repeat):
        tic = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - tic)
    return best


def head_problem(n: int, hidden: int = 256, seed: int = 0):
    torch.manual_seed(seed)
    model = RegressionModel(torch.nn.Identity(), HeadConfig(hidden_size=hidden)).eval()
    x = torch.randn(n, hidden)
    y = torch.tanh(x[:, :4].sum(1)) + 0.1 * torch.randn(n)
    return model, x, y


def bench_grads(n: int) -> None:
    model, x, y = head_problem(n)
    flat = FlatModule(model.head)
    v = torch.randn(flat.theta.numel())
    t_vmap = timed(lambda: per_sample_grads(flat, flat.theta, x, y) @ v)
    t_dots = timed(lambda: per_sample_dots(flat, flat.theta, x, y, v))
    t_loop = timed(lambda: per_sample_grads_loop(flat, flat.theta, x, y) @ v, repeat=1)
    same = torch.allclose(per_sample_grads(flat, flat.theta, x[:8], y[:8]),
                          per_sample_grads_loop(flat, flat.theta, x[:8], y[:8]), atol=1e-5)
    same = same and torch.allclose(per_sample_dots(flat, flat.theta, x[:8], y[:8], v),
                                   per_sample_grads_loop(flat, flat.theta, x[:8], y[:8]) @ v, rtol=1e-4, atol=1e-4)
    print(f"[1] per-sample gradient . s_test, head P={flat.theta.numel()}, pool {n}: loop {t_loop*1e3:.1f} ms; "
          f"vmap(grad) {t_vmap*1e3:.1f} ms -> {t_loop / t_vmap:.1f}x; jvp (what scoring runs) {t_dots*1e3:.1f} ms "
          f"-> {t_loop / t_dots:.1f}x (target >= 10x; equal: {same})")


def bench_mc(n: int, passes: int = 20) -> None:
    from rdkit import RDConfig

    smiles = [line.split()[0] for line in open(f"{RDConfig.RDDataDir}/NCI/first_5K.smi")][:n]
    tok = smiles_tokenizer(build_vocab(smiles, list(BERT_SPECIALS.values())), BERT_SPECIALS, 128)
    ids = tok(smiles, truncation=True, max_length=128)["input_ids"]
    torch.manual_seed(0)
    cfg = BertConfig(vocab_size=len(tok), hidden_size=64, num_hidden_layers=2, num_attention_heads=4,
                     intermediate_size=128, max_position_embeddings=130)
    model = RegressionModel(BertModel(cfg, add_pooling_layer=False), HeadConfig(hidden_size=64, head_dropout=0.1))
    pad = tok.pad_token_id
    t_batch = timed(lambda: mc_dropout(model, ids, pad, passes, batch_size=32))
    t_loop = timed(lambda: mc_dropout_loop(model, ids, pad, passes, batch_size=32))
    print(f"[2] MC dropout T={passes}, {n} molecules, tiny BERT: batched {t_batch:.2f} s, looped {t_loop:.2f} s "
          f"-> {t_loop / t_batch:.1f}x (target >= 3x on CPU)")


def bench_scaling(sizes: list[int], n_train: int = 1000) -> None:
    model, x, y = head_problem(n_train + 200 + max(sizes))
    flat = FlatModule(model.head)
    train, valid = (x[:n_train], y[:n_train]), (x[n_train : n_train + 200], y[n_train : n_train + 200])
    lissa = LissaSettings(depth=50, damping=0.01, scale=50.0, batch_size=64)
    g_valid = grad(mean_loss, argnums=1)(flat, flat.theta, *valid)
    tic = time.perf_counter()
    s_test = lissa_ihvp(flat, flat.theta, *train, g_valid, lissa)
    print(f"[3] LiSSA (depth 50, once per phase-1 model, independent of the pool): {time.perf_counter() - tic:.2f} s")
    base = None
    for n in sizes:
        pool = (x[-n:], y[-n:])
        t = timed(lambda: pool_influence(flat, flat.theta, pool, s_test), repeat=2)
        base = base or t / n
        print(f"[3] influence scoring, pool {n:>6}: {t:.2f} s, {t * 1e3 / n:.3f} ms/molecule "
              f"({t / n / base:.2f}x the first size's rate; linear growth = 1.00x)")


def bench_spearman() -> None:
    model, x, y = head_problem(1300)
    hidden = model.head[:-1](x).detach()
    flat = FlatModule(model.head[-1])
    args = (flat, flat.theta, (hidden[:1000], y[:1000]), (hidden[1000:1100], y[1000:1100]), (hidden[1100:], y[1100:]))
    exact = influence_scores(*args, solver="exact", lissa=LissaSettings(damping=0.01))
    for depth in (50, 200, 800):
        approx = influence_scores(*args, lissa=LissaSettings(depth=depth, damping=0.01, batch_size=64, repeats=2))
        rel = np.linalg.norm(approx - exact) / np.linalg.norm(exact)
        print(f"[4] LiSSA depth {depth:>4} vs exact (head_out, P={flat.theta.numel()}): Spearman "
              f"{spearmanr(approx, exact).statistic:.4f}, relative error {rel:.3f}")


def nci_smiles(n: int) -> list[str]:
    from rdkit import RDConfig

    return [line.split()[0] for line in open(f"{RDConfig.RDDataDir}/NCI/first_5K.smi")][:n]


def encoder_scorer(model: RegressionModel, subset: str, **knobs) -> FlatModule:
    model.backbone.set_attn_implementation("eager")  # as the selector does: SDPA has no forward-mode AD
    names = SUBSETS.get(subset).names(model, InfluenceKnobs(influence_params=subset, **knobs))
    return FlatModule(PackedRegression(model).eval(), [f"model.{n}" for n in names])


def bench_encoder_grads(n: int) -> None:
    folder = rxnfp_bert_dir()
    tok = smiles_tokenizer(folder / "vocab.txt", BERT_SPECIALS, 128)
    ids = tok(nci_smiles(n), truncation=True, max_length=128)["input_ids"]
    ids = sorted(ids, key=len)  # as the selector orders the pool: chunks of similar length
    y = torch.randn(n, generator=torch.Generator().manual_seed(0))
    for method, subset, knobs in (("lora", "peft", {}), ("full", "last_layers", {"influence_layers": 1})):
        torch.manual_seed(0)
        backbone = apply_method(method, BertModel.from_pretrained(folder, add_pooling_layer=False),
                                {"lora_r": 8, "lora_alpha": 16, "lora_dropout": 0.0})
        flat = encoder_scorer(RegressionModel(backbone, HeadConfig(hidden_size=256)).eval(), subset, **knobs)
        chunks = [PackedRegression.trim(PackedRegression.pack(ids[i : i + 32], tok.pad_token_id))
                  for i in range(0, n, 32)]
        ys = [y[i : i + 32] for i in range(0, n, 32)]
        v = torch.randn(flat.theta.numel())
        t_vmap = timed(lambda: [per_sample_grads(flat, flat.theta, x, t) @ v for x, t in zip(chunks, ys)], repeat=2)
        t_dots = timed(lambda: [per_sample_dots(flat, flat.theta, x, t, v) for x, t in zip(chunks, ys)], repeat=2)
        # the loop gets each molecule unpadded (its fairest form)
        singles = [PackedRegression.pack([s], tok.pad_token_id) for s in ids]
        t_loop = timed(lambda: [per_sample_grads_loop(flat, flat.theta, x, y[i : i + 1]) @ v
                                for i, x in enumerate(singles)], repeat=1)
        print(f"[5] per-sample gradient . s_test through rxnfp-bert, {subset} ({method}, P={flat.theta.numel()}), "
              f"{n} molecules: loop {t_loop:.2f} s; vmap(grad) {t_vmap:.2f} s -> {t_loop / t_vmap:.1f}x; "
              f"jvp {t_dots:.2f} s -> {t_loop / t_dots:.1f}x (target >= 10x)")


def bench_encoder_spearman() -> None:
    torch.manual_seed(0)
    cfg = BertConfig(vocab_size=30, hidden_size=16, num_hidden_layers=2, num_attention_heads=2, intermediate_size=32)
    backbone = apply_method("lora", BertModel(cfg, add_pooling_layer=False),
                            {"lora_r": 1, "lora_alpha": 2, "lora_dropout": 0.0})
    model = RegressionModel(backbone, HeadConfig(hidden_size=16, head_hidden=4, head_dropout=0.0))
    gen = torch.Generator().manual_seed(0)

    def data(n: int):
        seqs = [torch.randint(5, 30, (int(k),), generator=gen).tolist() for k in torch.randint(3, 16, (n,), generator=gen)]
        return PackedRegression.pack(seqs, 0), torch.tensor([np.mean(q) / 10 - 1.5 + len(q) / 100 for q in seqs])

    train, valid, pool = data(200), data(50), data(200)
    optimizer = torch.optim.Adam([p for p in model.parameters() if p.requires_grad], lr=1e-2)
    for _ in range(200):  # phase 1
        optimizer.zero_grad()
        ((PackedRegression(model)(train[0]) - train[1]) ** 2).mean().backward()
        optimizer.step()
    flat = encoder_scorer(model.eval(), "peft")
    args = (flat, flat.theta, train, valid, pool)
    trim = PackedRegression.trim
    # a fine-tuned encoder is not convex: the damping must lift the most negative eigenvalue, or the
    # LiSSA recursion diverges (slowly) and the exact "inverse" is of an indefinite matrix
    hess = exact_hessian(flat, flat.theta, *train, prepare=trim)
    low = float(torch.linalg.eigvalsh(hess)[0])
    damping = max(0.05, 2 * -low)
    print(f"[6] Hessian (peft subset, P={flat.theta.numel()}): smallest eigenvalue {low:.3f} -> damping {damping:.2f}")
    tic = time.perf_counter()
    exact = influence_scores(*args, solver="exact", lissa=LissaSettings(damping=damping, curvature="hessian"),
                             prepare=trim)
    t_exact = time.perf_counter() - tic
    for depth in (50, 200, 800):
        tic = time.perf_counter()
        approx = influence_scores(*args, lissa=LissaSettings(depth=depth, damping=damping, batch_size=32,
                                                             curvature="hessian"), prepare=trim)
        rel = np.linalg.norm(approx - exact) / np.linalg.norm(exact)
        print(f"[6] LiSSA depth {depth:>4} vs exact through the encoder (peft, P={flat.theta.numel()}): Spearman "
              f"{spearmanr(approx, exact).statistic:.4f}, relative error {rel:.3f} "
              f"({time.perf_counter() - tic:.1f} s; exact {t_exact:.1f} s)")
    # the Gauss-Newton matrix is positive semi-definite: a small damping suffices
    ggn = LissaSettings(damping=0.01, curvature="gauss_newton")
    exact = influence_scores(*args, solver="exact", lissa=ggn, prepare=trim)
    for depth in (50, 200, 800):
        approx = influence_scores(*args, lissa=replace(ggn, depth=depth, batch_size=32), prepare=trim)
        rel = np.linalg.norm(approx - exact) / np.linalg.norm(exact)
        print(f"[6] Gauss-Newton, damping 0.01: LiSSA depth {depth:>4} vs exact: Spearman "
              f"{spearmanr(approx, exact).statistic:.4f}, relative error {rel:.3f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="smaller sizes (smoke run)")
    args = parser.parse_args()
    print(f"torch {torch.__version__}, threads {torch.get_num_threads()}")
    bench_grads(128 if args.quick else 512)
    bench_mc(64 if args.quick else 256)
    bench_scaling([250, 1000] if args.quick else [1000, 4000, 16000])
    bench_spearman()
    bench_encoder_grads(32 if args.quick else 128)
    bench_encoder_spearman()


if __name__ == "__main__":
    main()
