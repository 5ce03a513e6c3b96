"""The Kubernetes deployment files agree with the code and with each other: deploy/helm/values.yaml
(values for the official Dagster Helm chart), deploy/Dockerfile, .dockerignore,
deploy/helm/segpipe-data-pvc.yaml and the Kubernetes section of docs/deploy.md.

No cluster, registry or network: the chart cannot be downloaded here, so the keys of values.yaml are
checked against CHART_KEYS, a record of the chart's own values.yaml (helm/dagster in dagster-io/dagster,
with its dagster-user-deployments subchart) for the blocks segpipe configures; the rest is checked
against the repository itself (workspace.yaml, pyproject.toml, segpipe.yaml, assets/build.py, schedules)."""

from __future__ import annotations

import ast
import copy
import fnmatch
import json
import re
import shlex
import tomllib
from pathlib import Path, PurePosixPath

import pytest
import yaml

REPO = Path(__file__).resolve().parents[1]
VALUES = REPO / "deploy" / "helm" / "values.yaml"
PVC = REPO / "deploy" / "helm" / "segpipe-data-pvc.yaml"
DOCKERFILE = REPO / "deploy" / "Dockerfile"
DOCKERIGNORE = REPO / ".dockerignore"
DEPLOY_DOC = REPO / "docs" / "deploy.md"
K8S_HEADING = "## Kubernetes with the official Dagster Helm chart"

# Keys of the chart's values.yaml (helm/dagster/values.yaml and
# helm/dagster/charts/dagster-user-deployments/values.yaml in dagster-io/dagster) in the blocks
# segpipe sets. "[]" stands for the items of a list.
CHART_KEYS = {
    "global", "global.postgresqlSecretName", "global.dagsterHome", "global.serviceAccountName",
    "global.celeryConfigSecretName",
    "telemetry", "telemetry.enabled",
    "imagePullSecrets", "generatePostgresqlPasswordSecret", "extraManifests", "additionalInstanceConfig",
    "dagsterWebserver", "dagsterWebserver.service", "dagsterWebserver.service.type",
    "dagsterWebserver.service.port", "dagsterWebserver.service.annotations", "dagsterWebserver.enableReadOnly",
    "dagsterWebserver.resources", "dagsterWebserver.env", "dagsterWebserver.envSecrets",
    "ingress", "ingress.enabled",
    "dagster-user-deployments", "dagster-user-deployments.enabled", "dagster-user-deployments.enableSubchart",
    "dagster-user-deployments.imagePullSecrets", "dagster-user-deployments.deployments",
    *(f"dagster-user-deployments.deployments[].{key}" for key in (
        "name", "image", "image.repository", "image.tag", "image.pullPolicy", "image.digest",
        "dagsterApiGrpcArgs", "codeServerArgs", "port", "includeConfigInLaunchedRuns",
        "includeConfigInLaunchedRuns.enabled", "env", "envConfigMaps", "envSecrets", "labels", "volumes",
        "volumeMounts", "initContainers", "sidecarContainers", "annotations", "nodeSelector", "affinity",
        "tolerations", "podSecurityContext", "securityContext", "resources", "readinessProbe",
        "livenessProbe", "startupProbe", "deploymentStrategy", "service", "service.annotations",
        "schedulerName")),
    "postgresql", "postgresql.enabled", "postgresql.image", "postgresql.postgresqlHost",
    "postgresql.postgresqlUsername", "postgresql.postgresqlPassword", "postgresql.postgresqlDatabase",
    "postgresql.postgresqlParams", "postgresql.postgresqlScheme", "postgresql.service", "postgresql.service.port",
    "runLauncher", "runLauncher.type", "runLauncher.config", "runLauncher.config.k8sRunLauncher",
    *(f"runLauncher.config.k8sRunLauncher.{key}" for key in (
        "imagePullPolicy", "image", "jobNamespace", "loadInclusterConfig", "kubeconfigFile", "envConfigMaps",
        "envSecrets", "envVars", "volumes", "volumeMounts", "labels", "resources", "schedulerName",
        "failPodOnRunFailure", "securityContext", "runK8sConfig", "runK8sConfig.containerConfig",
        "runK8sConfig.podSpecConfig", "runK8sConfig.podTemplateSpecMetadata", "runK8sConfig.jobSpecConfig",
        "runK8sConfig.jobMetadata")),
    "dagsterDaemon", "dagsterDaemon.enabled", "dagsterDaemon.heartbeatTolerance", "dagsterDaemon.resources",
    "dagsterDaemon.runCoordinator", "dagsterDaemon.runCoordinator.enabled", "dagsterDaemon.runCoordinator.type",
    "dagsterDaemon.runCoordinator.config", "dagsterDaemon.runCoordinator.config.queuedRunCoordinator",
    *(f"dagsterDaemon.runCoordinator.config.queuedRunCoordinator.{key}" for key in (
        "maxConcurrentRuns", "tagConcurrencyLimits", "tagConcurrencyLimits[].key", "tagConcurrencyLimits[].value",
        "tagConcurrencyLimits[].value.applyLimitPerUniqueValue", "tagConcurrencyLimits[].limit",
        "dequeueIntervalSeconds", "dequeueUseThreads", "dequeueNumWorkers")),
    "dagsterDaemon.runMonitoring",
    *(f"dagsterDaemon.runMonitoring.{key}" for key in (
        "enabled", "startTimeoutSeconds", "cancelTimeoutSeconds", "pollIntervalSeconds", "maxResumeRunAttempts",
        "freeSlotsAfterRunEndSeconds")),
    "dagsterDaemon.runRetries", "dagsterDaemon.runRetries.enabled", "dagsterDaemon.runRetries.maxRetries",
    "migrate", "migrate.enabled",
}
# Keys whose contents are Kubernetes objects or free-form maps, not chart keys.
FREE_FORM = {
    *(f"dagster-user-deployments.deployments[].{key}" for key in (
        "codeServerArgs", "dagsterApiGrpcArgs", "env", "envConfigMaps", "envSecrets", "volumes", "volumeMounts",
        "podSecurityContext", "securityContext", "resources", "labels", "annotations", "nodeSelector",
        "affinity", "tolerations")),
    *(f"runLauncher.config.k8sRunLauncher.{key}" for key in (
        "resources", "envConfigMaps", "envSecrets", "envVars", "volumes", "volumeMounts", "labels",
        "securityContext", "runK8sConfig.containerConfig", "runK8sConfig.podSpecConfig",
        "runK8sConfig.podTemplateSpecMetadata", "runK8sConfig.jobSpecConfig", "runK8sConfig.jobMetadata")),
    "dagsterWebserver.resources", "dagsterDaemon.resources", "additionalInstanceConfig", "extraManifests",
}


def unknown_keys(node, path: str = "") -> list[str]:
    """Every key path in ``node`` that is not a key of the chart (CHART_KEYS)."""
    if path in FREE_FORM:
        return []
    found = []
    if isinstance(node, dict):
        for key, value in node.items():
            sub = f"{path}.{key}" if path else str(key)
            if sub not in CHART_KEYS:
                found.append(sub)
            else:
                found += unknown_keys(value, sub)
    elif isinstance(node, list):
        for item in node:
            found += unknown_keys(item, f"{path}[]")
    return found


@pytest.fixture(scope="module")
def values() -> dict:
    data = yaml.safe_load(VALUES.read_text(encoding="utf-8"))
    assert isinstance(data, dict) and data, "deploy/helm/values.yaml must be a non-empty mapping"
    return data


@pytest.fixture(scope="module")
def deployment(values) -> dict:
    deployments = values["dagster-user-deployments"]["deployments"]
    assert len(deployments) == 1, "one user deployment: the segpipe code location"
    return deployments[0]


@pytest.fixture(scope="module")
def env(deployment) -> dict[str, str]:
    """The user deployment's plain environment variables (passed on to runs and steps)."""
    items = deployment["env"]
    assert isinstance(items, list), "env as a list, so includeConfigInLaunchedRuns passes it on as is"
    return {item["name"]: item["value"] for item in items if "value" in item}


@pytest.fixture(scope="module")
def dockerfile() -> dict[str, list[str]]:
    """Instruction -> arguments of each occurrence, continuation lines joined."""
    text = re.sub(r"\\\n", " ", DOCKERFILE.read_text(encoding="utf-8"))
    out: dict[str, list[str]] = {}
    for line in text.splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            instruction, _, args = line.partition(" ")
            out.setdefault(instruction.upper(), []).append(args.strip())
    return out


@pytest.fixture(scope="module")
def workspace_location() -> dict:
    (entry,) = yaml.safe_load((REPO / "workspace.yaml").read_text(encoding="utf-8"))["load_from"]
    return entry["python_module"]


def build_env_names() -> dict[str, str]:
    """The ``*_ENV`` constants of assets/build.py: the variables the code location reads."""
    tree = ast.parse((REPO / "assets" / "build.py").read_text(encoding="utf-8"))
    names = {}
    for node in tree.body:
        if isinstance(node, ast.Assign) and isinstance(node.value, ast.Constant) and isinstance(node.value.value, str):
            for target in node.targets:
                if isinstance(target, ast.Name) and target.id.endswith("_ENV"):
                    names[target.id] = node.value.value
    return names


def flag_args(args: list[str], flag: str) -> str:
    assert args.count(flag) == 1, f"{flag} once in {args}"
    return args[args.index(flag) + 1]


# -- values.yaml against the chart ----------------------------------------------------------------------
def test_values_use_only_keys_of_the_chart(values):
    assert unknown_keys(values) == []


def test_the_key_check_catches_a_misspelt_key():
    broken = yaml.safe_load(VALUES.read_text(encoding="utf-8"))
    broken["dagsterDaemon"]["runCoordinator"]["config"]["queuedRunCoordinator"]["maxConcurentRuns"] = 3
    broken["dagsterDaemon"]["runMonitoring"]["startTimeout"] = 60
    broken["dagster-user-deployments"]["deployments"][0]["codeServerArg"] = []
    assert sorted(unknown_keys(broken)) == [
        "dagster-user-deployments.deployments[].codeServerArg",
        "dagsterDaemon.runCoordinator.config.queuedRunCoordinator.maxConcurentRuns",
        "dagsterDaemon.runMonitoring.startTimeout",
    ]


# -- the code location --------------------------------------------------------------------------------
def test_user_deployment_serves_the_code_location_of_workspace_yaml(deployment, workspace_location):
    args = deployment["codeServerArgs"]
    assert "dagsterApiGrpcArgs" not in deployment, "one of codeServerArgs / dagsterApiGrpcArgs"
    assert flag_args(args, "-m") == workspace_location["module_name"]
    assert flag_args(args, "-a") == workspace_location["attribute"]
    assert deployment["includeConfigInLaunchedRuns"]["enabled"] is True
    assert "resources" not in deployment, "passed on to runs, they would override the run launcher's"


def test_the_executor_and_settings_in_the_values_load_the_definitions(env, monkeypatch):
    """The environment of the values, as the code server, run pods and step pods get it."""
    from assets.build import _EXECUTORS, build_definitions
    from schedules import REFIT_JOB, REFIT_TAG

    for var in build_env_names().values():
        monkeypatch.delenv(var, raising=False)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    assert env["SEGPIPE_EXECUTOR"] in _EXECUTORS
    # the image bakes this repository's segpipe.yaml in at the path the values name (Dockerfile: COPY . .)
    monkeypatch.setenv("SEGPIPE_CONFIG", str(REPO / "segpipe.yaml"))
    defs = build_definitions()
    refit = defs.resolve_job_def(REFIT_JOB)
    assert refit.executor_def.name == env["SEGPIPE_EXECUTOR"] == "k8s"
    config = refit.executor_def.config_schema.resolve_config({}).value["config"]
    assert config["max_concurrent"] == int(env["SEGPIPE_K8S_MAX_CONCURRENT"])
    assert refit.tags.get(REFIT_TAG) == "true", "the refit job carries the tag the run queue limits"


# -- run queue, run launcher, monitoring ----------------------------------------------------------------
def test_tag_concurrency_limits_name_the_tags_segpipe_runs_carry(values):
    from dagster._core.storage.tags import BACKFILL_ID_TAG
    from schedules import REFIT_TAG

    coordinator = values["dagsterDaemon"]["runCoordinator"]
    assert coordinator["enabled"] is True and coordinator["type"] == "QueuedRunCoordinator"
    queued = coordinator["config"]["queuedRunCoordinator"]
    limits = {item["key"]: item for item in queued["tagConcurrencyLimits"]}
    assert {BACKFILL_ID_TAG, REFIT_TAG} <= set(limits)
    assert limits[REFIT_TAG]["limit"] == 1
    assert 1 <= limits[BACKFILL_ID_TAG]["limit"] < queued["maxConcurrentRuns"], "room for scheduled runs"


def test_run_launcher_and_run_monitoring(values):
    launcher = values["runLauncher"]
    assert launcher["type"] == "K8sRunLauncher"
    k8s = launcher["config"]["k8sRunLauncher"]
    requests, limits = k8s["resources"]["requests"], k8s["resources"]["limits"]
    assert requests["cpu"] and requests["memory"] and limits["memory"]
    monitoring = values["dagsterDaemon"]["runMonitoring"]
    assert monitoring["enabled"] is True
    for key in ("startTimeoutSeconds", "pollIntervalSeconds", "maxResumeRunAttempts", "freeSlotsAfterRunEndSeconds"):
        assert isinstance(monitoring[key], int) and monitoring[key] > 0, key


def test_pods_run_as_the_image_user(values, deployment, dockerfile):
    (user,) = dockerfile["USER"]
    uid, _, gid = user.partition(":")
    assert uid.isdigit() and int(uid) != 0, "a numeric non-root user, so runAsNonRoot can check it"
    run_pods = values["runLauncher"]["config"]["k8sRunLauncher"]["runK8sConfig"]["podSpecConfig"]["securityContext"]
    for context in (deployment["podSecurityContext"], run_pods):
        assert context["runAsNonRoot"] is True
        assert (context["runAsUser"], context["runAsGroup"], context["fsGroup"]) == (int(uid), int(gid), int(gid))


# -- what the chart writes into the instance's dagster.yaml, checked by Dagster itself ---------------
def _snake(key: str) -> str:
    return re.sub(r"(?<!^)(?=[A-Z])", "_", key).lower()


def chart_instance_sections(values: dict) -> dict:
    """The sections of dagster.yaml the chart renders from ``values`` for the blocks segpipe sets, key
    for key as its templates write them (helm/dagster/templates/configmap-instance.yaml and
    helpers/instance/_run-coordinator.tpl, _run-launcher.tpl, _postgresql.tpl in dagster-io/dagster):
    run monitoring, the queued run coordinator's config, the K8sRunLauncher's resources and
    run_k8s_config, and the PostgreSQL storage's connection (password from the Secret, hence an env
    var). The launcher settings the chart fills in itself (config map, service account, namespace)
    are given placeholder values."""
    monitoring = values["dagsterDaemon"]["runMonitoring"]
    queued = values["dagsterDaemon"]["runCoordinator"]["config"]["queuedRunCoordinator"]
    k8s = values["runLauncher"]["config"]["k8sRunLauncher"]
    pg = values["postgresql"]
    return {
        "run_monitoring": {_snake(k): v for k, v in monitoring.items()},
        "run_coordinator": {_snake(k): v for k, v in queued.items()},
        "run_launcher": {
            "instance_config_map": "segpipe-dagster-instance", "service_account_name": "segpipe-dagster",
            "job_namespace": "segpipe", "load_incluster_config": True, "postgres_password_secret":
            values["global"]["postgresqlSecretName"], "dagster_home": "/opt/dagster/dagster_home",
            "resources": k8s["resources"],
            "run_k8s_config": {_snake(k): v for k, v in k8s["runK8sConfig"].items()},
        },
        "postgres_db": {"username": pg["postgresqlUsername"], "password": {"env": "DAGSTER_PG_PASSWORD"},
                        "hostname": pg["postgresqlHost"], "db_name": pg["postgresqlDatabase"],
                        "port": pg["service"]["port"], "scheme": pg["postgresqlScheme"]},
    }


def instance_config_errors(sections: dict) -> list[str]:
    """Dagster's own validation of ``sections``: the instance schema for run monitoring, and the
    config schemas of QueuedRunCoordinator, K8sRunLauncher and the PostgreSQL run storage (what the
    instance checks when it loads dagster.yaml)."""
    from dagster._config import process_config
    from dagster._config.field_utils import Shape
    from dagster._core.instance.config import dagster_instance_config_schema
    from dagster._core.run_coordinator import QueuedRunCoordinator
    from dagster_k8s import K8sRunLauncher
    from dagster_postgres import PostgresRunStorage

    checks = [
        (Shape(dagster_instance_config_schema()), {"run_monitoring": sections["run_monitoring"]}),
        (QueuedRunCoordinator.config_type(), sections["run_coordinator"]),
        (K8sRunLauncher.config_type(), sections["run_launcher"]),
        (PostgresRunStorage.config_type(), {"postgres_db": sections["postgres_db"]}),
    ]
    return [e.message for schema, config in checks for e in (process_config(schema, config).errors or [])]


def test_the_instance_sections_the_chart_writes_pass_dagsters_own_config_schemas(values, monkeypatch):
    pytest.importorskip("dagster_k8s")
    pytest.importorskip("dagster_postgres")
    monkeypatch.setenv("DAGSTER_PG_PASSWORD", "not-a-real-password")
    sections = chart_instance_sections(values)
    assert sections["run_monitoring"]["max_resume_run_attempts"] == values["dagsterDaemon"]["runMonitoring"][
        "maxResumeRunAttempts"]
    assert instance_config_errors(sections) == []
    # the pod spec of run and step pods is a valid Kubernetes PodSpec (dagster-k8s converts it the same way)
    import kubernetes.client
    from dagster_k8s.models import k8s_model_from_dict, k8s_snake_case_dict

    pod_spec = {**sections["run_launcher"]["run_k8s_config"]["pod_spec_config"],
                "containers": [{"name": "dagster", "image": "segpipe"}]}  # dagster-k8s adds the run's container
    model = k8s_model_from_dict(kubernetes.client.V1PodSpec, k8s_snake_case_dict(kubernetes.client.V1PodSpec, pod_spec))
    assert model.security_context.run_as_non_root is True


def test_the_instance_schema_check_catches_a_wrong_type_and_an_unknown_key(values, monkeypatch):
    pytest.importorskip("dagster_k8s")
    pytest.importorskip("dagster_postgres")
    monkeypatch.setenv("DAGSTER_PG_PASSWORD", "not-a-real-password")
    broken = copy.deepcopy(values)
    broken["dagsterDaemon"]["runMonitoring"]["startTimeoutSeconds"] = "ten"  # the chart's schema lets it through
    broken["dagsterDaemon"]["runCoordinator"]["config"]["queuedRunCoordinator"]["maxConcurentRuns"] = 6
    errors = instance_config_errors(chart_instance_sections(broken))
    assert any("start_timeout_seconds" in e and "ten" in e for e in errors), errors
    assert any("max_concurent_runs" in e for e in errors), errors


# -- PostgreSQL, webserver ---------------------------------------------------------------------------
def test_postgres_is_external_with_the_psycopg2_scheme_and_no_password_in_values(values):
    from segpipe.instance import PG_SCHEME

    pg = values["postgresql"]
    assert pg["enabled"] is False and pg["postgresqlHost"] and pg["postgresqlUsername"] and pg["postgresqlDatabase"]
    assert pg["postgresqlScheme"] == PG_SCHEME
    assert "postgresqlPassword" not in pg
    assert values["generatePostgresqlPasswordSecret"] is False
    assert values["global"]["postgresqlSecretName"]


def test_webserver_is_not_exposed(values):
    assert values["dagsterWebserver"]["service"]["type"] == "ClusterIP"
    assert values["ingress"]["enabled"] is False


# -- the lake volume --------------------------------------------------------------------------------------
def test_every_path_of_the_config_lies_on_the_shared_volume(deployment, env):
    """segpipe.yaml's relative paths resolve beside SEGPIPE_CONFIG inside the image, under the PVC."""
    config = yaml.safe_load((REPO / "segpipe.yaml").read_text(encoding="utf-8"))
    base = PurePosixPath(env["SEGPIPE_CONFIG"]).parent
    volumes = {v["name"]: v for v in deployment["volumes"]}
    mounts = [PurePosixPath(m["mountPath"]) for m in deployment["volumeMounts"]
              if "persistentVolumeClaim" in volumes[m["name"]]]
    assert mounts, "the lake is a PersistentVolumeClaim"
    paths = [config.get("lake_dir", "data/lake"), *(s["path"] for s in config["sources"].values())]
    labels = config.get("segments", {}).get("clustering", {}).get("validation_labels")
    paths += [labels["path"]] if labels else []
    for path in paths:
        in_image = base / path
        assert any(in_image.is_relative_to(m) for m in mounts), f"{path} -> {in_image} is not on the volume"


def test_the_pvc_manifest_is_the_claim_the_values_mount(deployment):
    pvc = yaml.safe_load(PVC.read_text(encoding="utf-8"))
    assert pvc["kind"] == "PersistentVolumeClaim"
    assert "ReadWriteMany" in pvc["spec"]["accessModes"]
    claims = {v["persistentVolumeClaim"]["claimName"] for v in deployment["volumes"] if "persistentVolumeClaim" in v}
    assert claims == {pvc["metadata"]["name"]}


# -- the image ---------------------------------------------------------------------------------------------
def test_dockerfile_command_serves_the_code_location(dockerfile, deployment, workspace_location):
    assert dockerfile["FROM"] == ["python:3.11-slim"]
    assert "ENTRYPOINT" not in dockerfile, "the chart's args replace CMD; an ENTRYPOINT would prefix them"
    (cmd,) = dockerfile["CMD"]
    args = json.loads(cmd)
    assert args[:3] == ["dagster", "code-server", "start"]
    assert flag_args(args, "-h") == "0.0.0.0"
    assert flag_args(args, "-m") == workspace_location["module_name"]
    assert flag_args(args, "-a") == workspace_location["attribute"]
    assert int(flag_args(args, "-p")) == deployment["port"] and dockerfile["EXPOSE"] == [str(deployment["port"])]


def test_dockerfile_installs_the_k8s_extra_and_bakes_the_config_the_values_name(dockerfile, env, deployment):
    extras = tomllib.loads((REPO / "pyproject.toml").read_text(encoding="utf-8"))["project"]["optional-dependencies"]
    installs = [m for run in dockerfile["RUN"] for m in re.findall(r"pip install\s+['\"]?\.\[([\w,-]+)\]", run)]
    assert installs, "pip install '.[k8s]'"
    requested = {extra for group in installs for extra in group.split(",")}
    assert "k8s" in requested and requested <= set(extras)
    env_pairs = dict(token.split("=", 1) for args in dockerfile["ENV"] for token in shlex.split(args))
    assert env_pairs["SEGPIPE_CONFIG"] == env["SEGPIPE_CONFIG"]
    (workdir,) = dockerfile["WORKDIR"]
    assert dockerfile["COPY"] == [". ."] and PurePosixPath(env["SEGPIPE_CONFIG"]) == PurePosixPath(workdir) / "segpipe.yaml"
    # the volume's mount point exists in the image, owned by the image's user
    runs = " ".join(dockerfile["RUN"])
    for mount in deployment["volumeMounts"]:
        assert re.search(rf"mkdir -p [^&]*{re.escape(mount['mountPath'])}\b", runs), mount
        assert re.search(rf"chown [^&]*{re.escape(mount['mountPath'])}\b", runs), mount


def test_dockerignore_keeps_local_state_out_and_the_project_in():
    patterns = [p.strip() for p in DOCKERIGNORE.read_text(encoding="utf-8").splitlines()
                if p.strip() and not p.startswith("#")]

    def ignored(path: str) -> bool:
        parts = path.split("/")
        prefixes = ["/".join(parts[:i]) for i in range(1, len(parts) + 1)]
        return any(fnmatch.fnmatch(prefix, p.rstrip("/")) for p in patterns for prefix in prefixes)

    for path in (".venv/bin/python", "data/lake/orders_ingested/2025-01-01.parquet", "data/sample/orders/x.csv",
                 ".dagster_home/dagster.yaml", "bench/out/run.json", ".git/HEAD", ".segpipe_key",
                 ".segpipe_key-abc", "lake/x.parquet"):
        assert ignored(path), f"{path} would go into the image"
    for path in ("segpipe.yaml", "workspace.yaml", "pyproject.toml", "README.md", "assets/build.py",
                 "schedules/__init__.py", "segpipe/config.py"):
        assert (REPO / path).exists() and not ignored(path), f"{path} must go into the image"


# -- docs/deploy.md ----------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def k8s_doc() -> str:
    text = DEPLOY_DOC.read_text(encoding="utf-8")
    assert text.index("## Instance storage on PostgreSQL") < text.index(K8S_HEADING)
    return text[text.index(K8S_HEADING):]


def test_doc_names_every_variable_the_code_location_reads(k8s_doc):
    from segpipe.config import CONFIG_ENV
    from segpipe.secrets import KEY_ENV

    names = [*build_env_names().values(), CONFIG_ENV, KEY_ENV]
    assert len(names) >= 10
    assert [n for n in names if n not in k8s_doc] == []


def test_doc_installs_the_chart_version_of_the_pinned_dagster(k8s_doc, values, deployment):
    deps = tomllib.loads((REPO / "pyproject.toml").read_text(encoding="utf-8"))["project"]["dependencies"]
    (pin,) = [d.split("==")[1] for d in deps if d.startswith("dagster==")]
    assert "helm repo add dagster https://dagster-io.github.io/helm" in k8s_doc
    install = re.search(r"helm upgrade --install \S+ dagster/dagster(?:[^\n\\]|\\\n)*", k8s_doc)
    assert install, "the helm upgrade --install command"
    assert f"--version {pin}" in install.group(0) and "-f deploy/helm/values.yaml" in install.group(0)
    assert f"--version {pin}" in VALUES.read_text(encoding="utf-8")
    for path in ("deploy/Dockerfile", "deploy/helm/values.yaml", "deploy/helm/segpipe-data-pvc.yaml"):
        assert path in k8s_doc and (REPO / path).exists()
    # the objects the doc has created beforehand are the ones the values use
    pvc = yaml.safe_load(PVC.read_text(encoding="utf-8"))["metadata"]["name"]
    for name in (values["global"]["postgresqlSecretName"], "postgresql-password", pvc,
                 *(s["name"] for s in deployment["envSecrets"])):
        assert name in k8s_doc, name
    assert "--address 127.0.0.1" in k8s_doc, "port-forward bound to loopback"
