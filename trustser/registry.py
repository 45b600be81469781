"""The end of a study: the picked configuration's model in the MLflow Model Registry, under the scenario's alias.

``register_pick`` finds the deployable model of the recommended candidate (``trustser.deploy``: logged on the
``run_experiment`` parent run, which is the candidate's run itself or nested under its study-trial run; a trial
answered from an earlier trial follows ``reused_mlflow_run_id``), registers it as a new version of ``name``, points
the scenario's alias at it (``models:/NAME@edge``) and records the scenario, its reasons, the statistically
indistinguishable alternatives and the trust profile as version tags and description, so the registry says why this
version was chosen.
"""

from __future__ import annotations

import json
import re
from typing import Any

from trustser.errors import TrustserError


class NoModelError(TrustserError):
    """The chosen configuration has no logged model (e.g. a run from before models were logged)."""


def model_uri_for_run(run_id: str, client: Any = None, _seen: frozenset[str] = frozenset()) -> str:
    """The ``runs:/.../model`` URI of the deployable model behind an MLflow run id (see the module docstring)."""
    import mlflow

    client = client or mlflow.MlflowClient()
    if run_id in _seen:
        raise NoModelError(f"run {run_id}: circular reused_mlflow_run_id references")
    run = client.get_run(run_id)
    tags = run.data.tags
    if "trustser.model_uri" in tags:
        return tags["trustser.model_uri"]
    if tags.get("reused_mlflow_run_id") not in (None, "unknown"):
        return model_uri_for_run(tags["reused_mlflow_run_id"], client, _seen | {run_id})
    children = client.search_runs(
        [run.info.experiment_id], filter_string=f"tags.mlflow.parentRunId = '{run_id}'", max_results=50
    )
    for child in children:
        if "trustser.model_uri" in child.data.tags:
            return child.data.tags["trustser.model_uri"]
    raise NoModelError(
        f"MLflow run {run_id} has no logged trustser model (tag trustser.model_uri on it or on a run "
        "nested under it); re-run the configuration with this version of trustser"
    )


def alias_for(scenario_name: str) -> str:
    """A registry alias from a scenario name (letters, digits, '_' and '-')."""
    alias = re.sub(r"[^A-Za-z0-9_-]+", "_", scenario_name).strip("_")
    if not alias:
        raise TrustserError(f"cannot make a registry alias from scenario name '{scenario_name}'")
    return alias


def register_pick(recommendation: Any, name: str, alias: str | None = None) -> Any:
    """Register the recommendation's choice as a new version of model ``name`` with alias ``alias`` (default: the
    scenario's name). Returns the ``ModelVersion``."""
    import mlflow

    choice = recommendation.choice
    if not choice.mlflow_run_id:
        raise NoModelError(f"candidate '{choice.label}' has no MLflow run id: nothing to register")
    client = mlflow.MlflowClient()
    uri = model_uri_for_run(choice.mlflow_run_id, client)
    alias = alias_for(alias or recommendation.scenario)
    details = recommendation.to_dict()
    tags = {
        "trustser.scenario": recommendation.scenario,
        "trustser.configuration": choice.label,
        "trustser.source_run": choice.mlflow_run_id,
        "trustser.indistinguishable": ", ".join(d["label"] for d in details.get("indistinguishable", [])) or "none",
        "trustser.trust_profile": json.dumps(choice.values, default=str)[:5000],
    }
    version = mlflow.register_model(uri, name, tags=tags)
    description = f"Picked for scenario '{recommendation.scenario}': {choice.label}.\n" + "\n".join(
        f"- {r}" for r in recommendation.reasons
    )
    client.update_model_version(name, version.version, description=description[:5000])
    client.set_registered_model_alias(name, alias, version.version)
    return client.get_model_version(name, version.version)
