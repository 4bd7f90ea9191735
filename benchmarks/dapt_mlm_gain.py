"""What continued pretraining on molecules changed in rxnfp-bert's masked-language modelling: the pretrain
study's held-out molecules (valid and test, never trained on) scored by the shipped encoder and by the cached
checkpoint of ``studies/pretrain_rxnfp_bert_molecules.yaml``, on the same masks (the study's seeds), side by side.

    python benchmarks/dapt_mlm_gain.py [--study studies/pretrain_rxnfp_bert_molecules.yaml]

Needs the checkpoint cached (``chemtune launch`` of the study, or of a study naming it as ``model.pretrain``).
"""

from __future__ import annotations

import argparse
import json
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--study", type=Path, default=ROOT / "studies" / "pretrain_rxnfp_bert_molecules.yaml")
    args = parser.parse_args()

    from studies.pretraining import STAGE_JSON, checkpoint_dir, stage_key
    from studies.spec import load_study
    from trainables.pretrain.task import MLMTrainer, prepare_pretrain

    spec = load_study(args.study)
    prepared = prepare_pretrain(spec)
    folder = checkpoint_dir(spec, stage_key(spec, prepared.tags["chemtune.corpus_hash"]))
    if not (folder / STAGE_JSON).is_file():
        raise SystemExit(f"{args.study}: no cached checkpoint yet ({folder}); run `chemtune launch {args.study}`")
    data = prepared.payload
    config = dict(spec.fixed)
    rows = {}
    for label, model in (("shipped rxnfp-bert", spec.model),
                         ("continued on molecules", spec.model.model_copy(update={"path": str(folder)}))):
        trainer = MLMTrainer(config, data, spec.trial_spec().model_copy(update={"model": model}))
        with tempfile.TemporaryDirectory() as tmp:
            rows[label] = {**{f"valid_{k}": v for k, v in trainer.evaluate_valid(Path(tmp)).items()},
                           **{f"test_{k}": v for k, v in trainer.evaluate_test(Path(tmp)).items()}}
    print(f"{args.study.name}: held-out molecules {len(data.valid)} valid, {len(data.test)} test "
          f"(masked-token accuracy, molecules with every masked token right, loss)\n")
    print("| encoder | valid token acc | valid exact | valid loss | test token acc | test exact | test loss |")
    print("|---|---|---|---|---|---|---|")
    for label, m in rows.items():
        print(f"| {label} | {m['valid_token_acc']:.3f} | {m['valid_exact']:.3f} | {m['valid_loss']:.3f} | "
              f"{m['test_token_acc']:.3f} | {m['test_exact']:.3f} | {m['test_loss']:.3f} |")
    print(json.dumps(rows))


if __name__ == "__main__":
    main()
