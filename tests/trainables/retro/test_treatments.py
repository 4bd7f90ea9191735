"""Treatments: each of the paper's 15 rows builds and trains exactly the intended parameters."""

import pytest
import torch

from trainables.errors import StudyError
from trainables.retro.adapters import Seq2SeqModel, apply_treatment
from trainables.retro.chemformer import ChemformerConfig, ChemformerForConditionalGeneration
from trainables.retro.treatments import PAPER_TREATMENTS, TREATMENT_CHOICES, needs_pretrained, validate_treatment

# Trainable parts per paper row. E: encoder layer stack, D: decoder layer stack, LE/LD: LoRA in the
# encoder/decoder, MM/ME: MLP mid/end. The token embedding and the output projection always train.
ROWS = {
    "full": {"E", "D"},
    "fix_encoder": {"D"},
    "fix_decoder": {"E"},
    "fix_decoder+mlp_mid": {"E", "MM"},
    "fix_decoder+mlp_end": {"E", "ME"},
    "fix_decoder+mlp_all": {"E", "MM", "ME"},
    "lora_all": {"LE", "LD"},
    "lora_all+mlp_all": {"LE", "LD", "MM", "ME"},
    "lora_all+mlp_end": {"LE", "LD", "ME"},
    "lora_all+mlp_mid": {"LE", "LD", "MM"},
    "fix_decoder+lora_encoder": {"LE"},
    "fix_encoder+lora_decoder": {"LD"},
    "fix_encoder+lora_decoder+mlp_all": {"LD", "MM", "ME"},
    "fix_encoder+lora_decoder+mlp_end": {"LD", "ME"},
    "fix_encoder+lora_decoder+mlp_mid": {"LD", "MM"},
}
ALWAYS = {"emb", "head"}


def _chemformer(seed=0):
    torch.manual_seed(seed)
    config = ChemformerConfig(vocab_size=20, d_model=16, encoder_layers=2, decoder_layers=2, encoder_attention_heads=2,
                              decoder_attention_heads=2, encoder_ffn_dim=32, decoder_ffn_dim=32, max_position_embeddings=32,
                              scale_embedding=True, tie_word_embeddings=True, pad_token_id=0, bos_token_id=2,
                              eos_token_id=3, decoder_start_token_id=2, dropout=0.0, attention_dropout=0.0)
    return ChemformerForConditionalGeneration(config)


def _batch():
    ids = torch.tensor([[2, 5, 6, 7, 3], [2, 8, 9, 3, 0]])
    return {"input_ids": ids, "attention_mask": (ids != 0).long(), "decoder_input_ids": torch.tensor([[2, 9, 8], [2, 5, 5]])}


def _group(name):
    if "lora_" in name:
        return "LE" if ".encoder." in name else "LD"
    if name.startswith("adapters."):
        return {"mid": "MM", "end": "ME"}[name.split(".")[2]]
    if "embed_tokens" in name or "shared" in name:
        return "emb"
    if "lm_head" in name or "final_logits_bias" in name:
        return "head"
    if ".encoder.layers." in name or ".encoder.layer_norm" in name:
        return "E"
    if ".decoder.layers." in name or ".decoder.layer_norm" in name:
        return "D"
    raise AssertionError(f"unexpected parameter {name}")


def test_the_paper_rows_are_the_offered_choices():
    assert set(ROWS) == set(PAPER_TREATMENTS) == set(TREATMENT_CHOICES) and len(ROWS) == 15
    assert all(validate_treatment(row) == row for row in ROWS)  # spelled canonically


@pytest.mark.parametrize("row", list(ROWS))
def test_each_paper_row_trains_exactly_its_parts(row):
    wrapped = apply_treatment(_chemformer(), row, {"lora_rank": 2})
    groups: dict[str, set[bool]] = {}
    for n, p in wrapped.named_parameters():
        groups.setdefault(_group(n), set()).add(p.requires_grad)
    trainable = {g for g, flags in groups.items() if flags == {True}}
    frozen = {g for g, flags in groups.items() if flags == {False}}
    assert trainable | frozen == set(groups)  # no part half-frozen
    assert trainable == ROWS[row] | ALWAYS
    assert frozen == ({"E", "D"} - ROWS[row])
    # One real step: exactly the trainable parameters get gradients and move.
    before = {n: p.detach().clone() for n, p in wrapped.named_parameters()}
    opt = torch.optim.SGD([p for p in wrapped.parameters() if p.requires_grad], lr=1.0)
    wrapped.train()
    wrapped(**_batch()).logits.pow(2).mean().backward()
    for n, p in wrapped.named_parameters():
        assert (p.grad is not None and p.grad.abs().sum() > 0) == p.requires_grad or "lora_B" in n or "lora_A" in n, n
    opt.step()
    moved = {_group(n) for n, p in wrapped.named_parameters() if not torch.equal(p, before[n])}
    assert moved == (ROWS[row] | ALWAYS) - {"LE", "LD"} | ({"LE", "LD"} & ROWS[row])
    assert needs_pretrained(row) == (row != "full" and not row.startswith("mlp"))


def test_lora_sits_on_attention_output_projections_only():
    wrapped = apply_treatment(_chemformer(), "lora_all", {"lora_rank": 2})
    targets = {n.rsplit(".lora_A", 1)[0] for n, _ in wrapped.named_parameters() if ".lora_A" in n}
    assert targets and all(t.endswith("out_proj") for t in targets)
    # 2 encoder layers x self-attention + 2 decoder layers x (self + cross) attention
    assert len(targets) == 2 + 2 * 2


def test_paper_mlp_is_three_dxd_gelu_layers_without_residual():
    wrapped = apply_treatment(_chemformer(), "fix_decoder+mlp_end", {}).eval()
    mlp = wrapped.adapters.mlps["end"]
    linears = [m for m in mlp if isinstance(m, torch.nn.Linear)]
    assert [tuple(m.weight.shape) for m in linears] == [(16, 16)] * 3
    assert sum(isinstance(m, torch.nn.GELU) for m in mlp) == 2
    seen = {}
    base = wrapped.base()
    handle = base.lm_head.register_forward_pre_hook(lambda mod, args: seen.update(x=args[0]))
    decoder_out = {}
    base.model.decoder.register_forward_hook(lambda mod, a, out: decoder_out.update(h=out.last_hidden_state))
    with torch.no_grad():
        wrapped(**_batch())
    handle.remove()
    # The output projection sees MLP(h), not h + MLP(h).
    assert torch.allclose(seen["x"], mlp(decoder_out["h"]), atol=1e-6)


def test_bottleneck_adapter_stays_an_option_and_starts_as_the_model():
    model = _chemformer()
    with torch.no_grad():
        base = model.eval()(**_batch()).logits.clone()
        wrapped = apply_treatment(model, "fix_decoder+mlp_all", {"mlp_kind": "bottleneck", "adapter_dim": 4}).eval()
        assert wrapped.adapters.kind == "bottleneck"
        assert torch.allclose(wrapped(**_batch()).logits, base, atol=1e-6)


@pytest.mark.parametrize("row", ["lora_all+mlp_all", "fix_encoder+lora_decoder+mlp_mid"])
def test_export_merges_lora_and_keeps_the_mlps(row):
    wrapped = apply_treatment(_chemformer(), row, {"lora_rank": 2}).eval()
    with torch.no_grad():
        for n, p in wrapped.named_parameters():
            if "lora_B" in n:
                p.copy_(torch.randn_like(p) * 0.5)
        after = wrapped(**_batch()).logits
    base, adapters = wrapped.export()
    served = Seq2SeqModel(base)
    served.adapters = adapters
    adapters.attach(base)
    with torch.no_grad():
        assert torch.allclose(served(**_batch()).logits, after, atol=1e-5)


def test_tied_bart_trains_its_one_embedding_matrix(tiny):
    model, _ = tiny
    wrapped = apply_treatment(model, "fix_encoder+lora_decoder", {"lora_rank": 2})
    trainable = {n for n, p in wrapped.named_parameters() if p.requires_grad}
    assert "model.base_model.model.model.shared.weight" in trainable
    assert not any(".layers." in n and "lora_" not in n for n in trainable)


@pytest.mark.parametrize("name, message", [
    ("full+mlp_end", "'full' trains everything"),
    ("lora_encoder+lora_decoder", "use one of lora_encoder, lora_decoder, lora_all"),
    ("mlp_mid+mlp_end", "use one of mlp_mid, mlp_end, mlp_all"),
    ("fix_encoder+lora_encoder", "the encoder is frozen by both fix_encoder and lora_encoder"),
    ("fix_decoder+lora_all", "the decoder is frozen by both fix_decoder and lora_all"),
    ("fix_decoder+lora_everything", "unknown part 'lora_everything'"),
    ("mlp_end+mlp_end", "a part is repeated"),
])
def test_bad_compositions_say_what_is_wrong(name, message):
    with pytest.raises(StudyError, match=message):
        validate_treatment(name)


def test_any_order_reads_as_the_canonical_name():
    assert validate_treatment("mlp_end + fix_decoder") == "fix_decoder+mlp_end"
    assert validate_treatment("lora_decoder+mlp_all+fix_encoder") == "fix_encoder+lora_decoder+mlp_all"


@pytest.mark.parametrize("row", ["fix_encoder", "fix_decoder+mlp_all", "lora_all", "fix_encoder+lora_decoder"])
def test_train_embeddings_false_freezes_the_shared_embedding_and_nothing_else(row):
    from trainables.retro.treatments import freeze_embeddings

    kept = apply_treatment(_chemformer(), row, {"lora_rank": 2})
    frozen = apply_treatment(_chemformer(), row, {"lora_rank": 2})
    assert freeze_embeddings(frozen.base()) >= 1
    groups = lambda m: {_group(n) for n, p in m.named_parameters() if p.requires_grad}  # noqa: E731
    assert groups(kept) == ROWS[row] | ALWAYS
    assert groups(frozen) == ROWS[row] | ({"head"} - {"head"} if _tied(frozen) else {"head"}) - {"emb"}
    frozen(**_batch()).logits.sum().backward()  # still trains: the treatment's own parts get gradients
    assert all(p.grad is not None for n, p in frozen.named_parameters() if p.requires_grad and _group(n) != "head")


def _tied(m):
    base = m.base()
    return base.get_output_embeddings().weight is base.get_input_embeddings().weight
