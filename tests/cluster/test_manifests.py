"""The cluster manifests parse and say what the operator guide promises."""

from __future__ import annotations

import configparser
from pathlib import Path
from typing import Any

import pytest
import yaml

CLUSTER = Path(__file__).resolve().parents[2] / "cluster"


def _load(relative: str) -> Any:
    docs = list(yaml.safe_load_all((CLUSTER / relative).read_text()))
    return docs[0] if len(docs) == 1 else docs


@pytest.mark.parametrize("path", sorted(p.relative_to(CLUSTER).as_posix() for p in CLUSTER.rglob("*.yaml")))
def test_every_manifest_parses(path: str) -> None:
    assert all(doc for doc in yaml.safe_load_all((CLUSTER / path).read_text()))


def test_cluster_launcher_has_a_gpu_group_scaling_from_zero() -> None:
    config = _load("ray/aws-gpu.yaml")
    head = config["available_node_types"][config["head_node_type"]]
    assert head["resources"] == {"CPU": 0}  # trials go to the GPU workers
    gpu = config["available_node_types"]["gpu_worker"]
    assert gpu["min_workers"] == 0 and gpu["max_workers"] >= 1
    assert gpu["node_config"]["InstanceType"].startswith(("g", "p"))
    assert config["docker"]["image"] == "${CHEMTUNE_IMAGE}"  # the image the guide builds; torch and chemtune in it
    assert "--gpus all" in config["docker"]["worker_run_options"]


def _images(doc: Any) -> list[str]:
    if isinstance(doc, dict):
        return [v for k, v in doc.items() if k == "image" and isinstance(v, str)] + [
            i for v in doc.values() for i in _images(v)]
    return [i for v in doc for i in _images(v)] if isinstance(doc, list) else []


def test_manifests_run_the_image_the_guide_builds() -> None:
    """Every Ray node runs ``${CHEMTUNE_IMAGE}``, the placeholder the guide replaces (nothing else builds one)."""
    for path in ("kuberay/raycluster.yaml", "kuberay/rayjob.yaml", "ray/aws-gpu.yaml"):
        images = _images(_load(path))
        assert images and set(images) == {"${CHEMTUNE_IMAGE}"}, path
        assert "envsubst '$CHEMTUNE_IMAGE' < cluster/" + path in (CLUSTER / path).read_text()
    guide = (CLUSTER / "README.md").read_text()
    assert "docker build -t \"$CHEMTUNE_IMAGE\" ." in guide and "docker push \"$CHEMTUNE_IMAGE\"" in guide


def test_kuberay_cluster_and_job() -> None:
    cluster = _load("kuberay/raycluster.yaml")
    assert cluster["kind"] == "RayCluster" and cluster["spec"]["enableInTreeAutoscaling"]
    (gpu,) = cluster["spec"]["workerGroupSpecs"]
    assert gpu["minReplicas"] == 0
    assert gpu["template"]["spec"]["containers"][0]["resources"]["limits"]["nvidia.com/gpu"] == "1"
    for container in (gpu["template"]["spec"]["containers"][0],
                      cluster["spec"]["headGroupSpec"]["template"]["spec"]["containers"][0]):
        # The secrets the guide creates reach every node as environment variables, and nothing else does.
        assert {e["secretRef"]["name"] for e in container["envFrom"]} == {"chemtune-mlflow", "chemtune-optuna"}
    job = _load("kuberay/rayjob.yaml")
    assert job["kind"] == "RayJob"
    assert job["spec"]["entrypoint"].startswith("chemtune launch ") and "--address auto" in job["spec"]["entrypoint"]
    assert job["spec"]["shutdownAfterJobFinishes"] is True
    # Settings once: in the containers' env (driver and trials inherit it), not again in the job's runtime env.
    assert "runtimeEnvYAML" not in job["spec"]
    head = job["spec"]["rayClusterSpec"]["headGroupSpec"]["template"]["spec"]["containers"][0]
    assert {e["name"] for e in head["env"]} >= {"MLFLOW_TRACKING_URI", "CHEMTUNE_HOME"}


def test_mlflow_server_on_postgres_with_auth_and_no_secrets_in_files() -> None:
    docs = _load("mlflow/mlflow.yaml")
    (deployment,) = [d for d in docs if d["kind"] == "Deployment"]
    container = deployment["spec"]["template"]["spec"]["containers"][0]
    command = " ".join(container["args"])
    for flag in ("--backend-store-uri postgresql", "--serve-artifacts", "--artifacts-destination s3://",
                 "--app-name basic-auth"):
        assert flag in command
    secret_refs = {e["secretRef"]["name"] for e in container["envFrom"]}
    assert {"mlflow-admin", "mlflow-s3"} <= secret_refs
    ini = configparser.ConfigParser()
    ini.read(CLUSTER / "mlflow" / "basic_auth.ini")
    assert ini["mlflow"]["database_uri"].startswith("postgresql")
    assert "admin_password" not in ini["mlflow"]
    everything = "\n".join(p.read_text() for p in CLUSTER.rglob("*") if p.suffix in {".yaml", ".ini"})
    assert "password:" not in everything.lower().replace("secretkeyref", "")


@pytest.mark.parametrize(("name", "kind", "processes"), [("single_gpu_bf16", "NO", 1), ("multi_gpu", "MULTI_GPU", 4)])
def test_accelerate_configs(name: str, kind: str, processes: int) -> None:
    config = _load(f"accelerate/{name}.yaml")
    assert config["distributed_type"] == kind and config["num_processes"] == processes
    assert config["mixed_precision"] == "bf16"
