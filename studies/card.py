"""The model card of a registered version: what it was trained on, how it was chosen, what it scores and costs.

Written on every version chemtune registers (``register``, ``register --rule``, ``promote``), as the
version's description (the MLflow UI renders it as Markdown) and as an artifact of the version's run
(``model_card/NAME-vN.md``), so the card travels with the weights and a reviewer needs no other page.
"""

from __future__ import annotations

import importlib.metadata
from collections.abc import Mapping, Sequence
from typing import Any

from trainables.metrics import COSTS

__all__ = ["model_card", "attach_card", "PACKAGES", "DESCRIPTION_LIMIT"]

PACKAGES = ("chemtune", "torch", "transformers", "peft", "rdkit", "mlflow", "optuna", "ray")
DESCRIPTION_LIMIT = 5000  # MLflow's model-version description column (SQL stores)

_INPUT = {
    "property": "one SMILES string per row; returns its canonical form and the predicted property",
    "retro": "one product SMILES per row; returns the top-k predicted reactant sets (beam search)",
}


def _versions() -> dict[str, str]:
    out = {}
    for name in PACKAGES:
        try:
            out[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            out[name] = "not installed"
    return out


def _fmt(value: Any) -> str:
    from studies.columns import format_value

    return format_value(value) if isinstance(value, (int, float)) else str(value)


def _lines(pairs: Mapping[str, Any]) -> list[str]:
    return [f"| {k} | {_fmt(v)} |" for k, v in pairs.items()] or ["| (none) | |"]


def model_card(*, model_name: str, version: str, study: str, task: str, source: str, selection: str,
               study_params: Mapping[str, str], study_tags: Mapping[str, str], config: Mapping[str, Any],
               metrics: Mapping[str, float], seeds: Sequence[int], signature: Any = None,
               extra: Mapping[str, Any] | None = None) -> str:
    """The card as Markdown.

    Args:
        source: Where the weights come from (the trial's run, or the refit runs).
        selection: How it was chosen (the rule and its reason).
        study_params: The study run's parameters (``dataset.*``, ``model.*``, ...).
        study_tags: The study run's tags (``split_hash.*``).
        config: The trial's configuration.
        metrics: valid/test scores and costs of the registered model.
        seeds: The training seed(s) (several: an ensemble of refits).
        signature: The MLflow model signature (inputs, outputs, params).
        extra: Further facts (refit epochs, rows trained on).
    """
    data = {k: v for k, v in study_params.items() if k.startswith("dataset.")}
    data.update({k: v for k, v in study_params.items() if k in ("model.name", "model.path")})
    hashes = {k.split(".", 1)[1]: v for k, v in sorted(study_tags.items()) if k.startswith("split_hash.")}
    scores = {k: v for k, v in sorted(metrics.items()) if k.startswith(("valid_", "test_"))}
    costs = {k: metrics[k] for k in COSTS if k in metrics}
    columns = signature.inputs.input_names() if signature is not None and signature.inputs is not None else []
    parts = [
        f"# {model_name} version {version}", "",
        f"chemtune {task} model from study `{study}`. Weights: {source}.", "",
        "## Intended input",
        f"A table with column {', '.join(f'`{c}`' for c in columns) or '`smiles`'}: "
        f"{_INPUT.get(task, 'one SMILES string per row')}. An invalid or blank SMILES gets `null` outputs and "
        "an `error` text on its row; the other rows are unaffected.", "",
        "## Selection", selection, "",
        "## Data", "| key | value |", "|---|---|", *_lines(data), "",
        "Split hashes (rows are comparable only on identical hashes):", "", "| split | hash |", "|---|---|",
        *_lines(hashes), "",
        "## Metrics", "| metric | value |", "|---|---|", *_lines(scores), "",
        "## Costs", "| cost | value |", "|---|---|", *_lines(costs), "",
        "## Configuration", "| knob | value |", "|---|---|", *_lines(dict(sorted(config.items()))), "",
        "## Seeds", ", ".join(str(s) for s in seeds) or "(unknown)", "",
    ]
    if extra:
        parts += ["## Training", "| key | value |", "|---|---|", *_lines(extra), ""]
    parts += ["## Versions", "| package | version |", "|---|---|", *_lines(_versions()), ""]
    if signature is not None:
        parts += ["## Signature", "```", str(signature).strip(), "```", ""]
    return "\n".join(parts)


def attach_card(client: Any, model_name: str, version: str, run_id: str, card: str) -> str:
    """Set ``card`` as the version's description and log it on ``run_id``; returns the artifact path."""
    path = f"model_card/{model_name}-v{version}.md"
    client.log_text(run_id, card, path)
    text = card if len(card) <= DESCRIPTION_LIMIT else (
        card[:DESCRIPTION_LIMIT - 200].rsplit("\n", 1)[0] + f"\n\n(cut to fit; the whole card: run {run_id}, {path})")
    client.update_model_version(model_name, version, description=text)
    client.set_model_version_tag(model_name, version, "chemtune.card", f"runs:/{run_id}/{path}")
    return path
