"""The cluster configs in clusters/: every launch YAML passes the checks `ray up` makes before it
asks a cloud for anything; every key of every YAML has a comment above it; the dashboard stays
on the head's loopback; every node installs this project and uses token authentication; the
KubeRay manifest has what a RayCluster needs (and matches KubeRay's CRD when one is given)."""

from __future__ import annotations

import copy
import os
import re
import tomllib
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
CLUSTERS = ROOT / "clusters"
ALL_YAML = sorted(CLUSTERS.glob("*.yaml"))


def _load(path: Path):
    return yaml.safe_load(path.read_text())


# a Kubernetes manifest names its apiVersion; a cluster launcher config never does
MANIFESTS = [p for p in ALL_YAML if "apiVersion" in _load(p)]
LAUNCH = [p for p in ALL_YAML if p not in MANIFESTS]
KUBERAY = CLUSTERS / "kuberay.yaml"


def _ids(paths):
    return [p.name for p in paths]


def _ray_pin() -> str:
    """'2.60' from the project's `ray[tune]>=2.60,<2.61`."""
    deps = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"]
    (ray,) = [d for d in deps if d.startswith("ray[")]
    return re.search(r">=\s*([\d.]+)", ray).group(1)


def test_the_expected_configs_are_there():
    assert {p.name for p in LAUNCH} >= {"aws.yaml", "gcp.yaml", "local.yaml"}
    assert MANIFESTS == [KUBERAY]


# ---------------------------------------------------------------------------------------------
# launch configs: what `ray up` checks (commands.create_or_update_cluster -> _bootstrap_config)


def _prepared(path: Path) -> dict:
    """The config as `ray up` has it just before validation: provider known, then
    prepare_config (defaults.yaml merged in, setup commands merged, local/docker prepared,
    per-type worker bounds). The provider's own resource look-up and bootstrap (cloud API
    calls with credentials) are not run: every cloud node type states its resources."""
    from ray.autoscaler._private.providers import _NODE_PROVIDERS
    from ray.autoscaler._private.util import prepare_config

    config = _load(path)
    assert config["provider"]["type"] in _NODE_PROVIDERS, config["provider"]["type"]
    return prepare_config(copy.deepcopy(config))


@pytest.mark.parametrize("path", LAUNCH, ids=_ids(LAUNCH))
def test_launch_config_passes_ray_ups_validation(path):
    from ray.autoscaler._private.util import validate_config

    validate_config(_prepared(path))


@pytest.mark.parametrize("path", LAUNCH, ids=_ids(LAUNCH))
def test_validation_rejects_a_misspelled_key(path):
    # the check above is a real one: Ray's schema refuses keys it does not know
    import jsonschema

    from ray.autoscaler._private.util import validate_config

    config = _prepared(path)
    config["max_worker"] = config.pop("max_workers")
    with pytest.raises(jsonschema.ValidationError, match="max_worker"):
        validate_config(config)


@pytest.mark.parametrize("path", [p for p in LAUNCH if "available_node_types" in _load(p)],
                         ids=_ids([p for p in LAUNCH if "available_node_types" in _load(p)]))
def test_every_cloud_node_type_states_its_resources(path):
    # Ray's schema requires them; AWS can look them up with credentials, GCP cannot at all
    for name, node_type in _load(path)["available_node_types"].items():
        assert set(node_type["resources"]) >= {"CPU", "GPU"}, name
    workers = [t for n, t in _load(path)["available_node_types"].items() if n != _load(path)["head_node_type"]]
    assert any(t["resources"]["GPU"] >= 1 for t in workers), "no GPU worker type"


@pytest.mark.parametrize("path", LAUNCH, ids=_ids(LAUNCH))
def test_head_binds_the_dashboard_to_loopback_and_runs_the_autoscaler(path):
    config = _prepared(path)
    head = " ".join(config["head_start_ray_commands"])
    assert "ray start --head" in head
    assert re.search(r"--dashboard-host[= ](127\.0\.0\.1|localhost)\b", head), head
    assert "0.0.0.0" not in head
    # job submission goes through the dashboard: it must run (on loopback), not be switched off
    assert "--include-dashboard=false" not in head
    # the autoscaler is what starts workers (cloud nodes, and `worker_ips` of the local provider)
    assert "--autoscaling-config=~/ray_bootstrap_config.yaml" in head


@pytest.mark.parametrize("path", LAUNCH, ids=_ids(LAUNCH))
def test_no_firewall_rule_opens_the_dashboard(path):
    rules = _load(path)["provider"].get("security_group", {}).get("IpPermissions", [])
    for rule in rules:
        assert not (rule.get("FromPort", 0) <= 8265 <= rule.get("ToPort", 65535)), rule


@pytest.mark.parametrize("path", LAUNCH, ids=_ids(LAUNCH))
def test_every_node_installs_this_project(path):
    config = _prepared(path)
    mounts = config["file_mounts"]
    for role in ("head_setup_commands", "worker_setup_commands"):  # setup_commands merged in
        commands = " ; ".join(config[role])
        targets = re.findall(r"pip install -e (\S+)", commands)
        assert targets, (role, commands)
        # what is installed is the repository itself, synced from where `ray up` runs (its root)
        assert any(mounts.get(t) == "." for t in targets), (targets, mounts)
    assert (ROOT / "pyproject.toml").is_file()


@pytest.mark.parametrize("path", LAUNCH, ids=_ids(LAUNCH))
def test_every_node_uses_token_authentication(path):
    config = _prepared(path)
    assert config["file_mounts"].get("~/.ray/auth_token") == "~/.ray/auth_token"
    for role in ("head_start_ray_commands", "worker_start_ray_commands"):
        starts = [c for c in config[role] if "ray start" in c]
        assert starts, role
        for command in starts:
            assert command.index("RAY_AUTH_MODE=token") < command.index("ray start"), command


@pytest.mark.parametrize("path", ALL_YAML, ids=_ids(ALL_YAML))
def test_ray_versions_match_the_projects_pin(path):
    pin = _ray_pin()
    text = path.read_text()
    versions = re.findall(r"rayproject/ray:([\d.]+)", text) + re.findall(r"ray\[default\]==([\d.]+)", text)
    versions += re.findall(r'rayVersion: "([\d.]+)"', text)
    assert versions or path.name == "local.yaml", path.name
    for v in versions:
        assert v == pin or v.startswith(pin + "."), (v, pin)


# ---------------------------------------------------------------------------------------------
# a comment above every key


def uncommented_keys(text: str) -> list[str]:
    """Problems with the rule "every key has its own comment line directly above it": the
    previous non-blank line of each line holding a key (any depth, in a list item too) must be
    a comment; a line may hold one key only (so no keys in {flow: mappings}). Keys are found by
    YAML's own scanner, so block scalars and quoted text are never mistaken for keys."""
    lines = text.splitlines()
    key_lines: dict[int, int] = {}
    scanner = yaml.scan(text, Loader=yaml.SafeLoader)
    for token, following in _pairs(scanner):
        if isinstance(token, yaml.KeyToken):
            line = following.start_mark.line  # the key's scalar (KeyToken marks can be zero-width)
            key_lines[line] = key_lines.get(line, 0) + 1
    problems = []
    for line, count in sorted(key_lines.items()):
        shown = f"line {line + 1}: {lines[line].strip()}"
        if count > 1:
            problems.append(f"{shown} (several keys on one line)")
        prev = line - 1
        while prev >= 0 and not lines[prev].strip():
            prev -= 1
        if prev < 0 or not lines[prev].lstrip().startswith("#"):
            problems.append(shown)
    return problems


def _pairs(tokens):
    tokens = list(tokens)
    return zip(tokens, tokens[1:])


@pytest.mark.parametrize("path", ALL_YAML, ids=_ids(ALL_YAML))
def test_every_key_has_a_comment_above_it(path):
    assert uncommented_keys(path.read_text()) == []


def test_comment_checker_catches_what_it_should():
    good = "# a\na:\n  # b\n  b: 1\n  # c\n  c:\n    # item\n    - d: x\n      # e\n      e: |\n        f: not a key\n"
    assert uncommented_keys(good) == []
    assert uncommented_keys("# a\na:\n  b: 1\n") == ["line 3: b: 1"]
    assert uncommented_keys("# a\na:\n  # b\n  - b: 1\n    c: 2\n") == ["line 5: c: 2"]
    assert uncommented_keys("a: 1\n") == ["line 1: a: 1"]
    # blank lines between a comment and its key are fine; a key in a flow mapping is not
    assert uncommented_keys("# a\n\na: 1\n") == []
    assert uncommented_keys("# a\na: {b: 1}\n") == ["line 2: a: {b: 1} (several keys on one line)"]


# ---------------------------------------------------------------------------------------------
# the KubeRay manifest


def test_kuberay_manifest_has_what_a_raycluster_needs():
    doc = _load(KUBERAY)
    assert doc["apiVersion"] == "ray.io/v1"
    assert doc["kind"] == "RayCluster"
    assert doc["metadata"]["name"]
    spec = doc["spec"]
    head = spec["headGroupSpec"]
    assert isinstance(head["rayStartParams"], dict)
    assert head["template"]["spec"]["containers"][0]["image"]
    assert spec["workerGroupSpecs"]
    gpus = 0
    for group in spec["workerGroupSpecs"]:
        for key in ("groupName", "replicas", "minReplicas", "maxReplicas", "rayStartParams", "template"):
            assert key in group, key
        assert 0 <= group["minReplicas"] <= group["replicas"] <= group["maxReplicas"], group["groupName"]
        container = group["template"]["spec"]["containers"][0]
        assert container["image"]
        gpus += int(container["resources"]["limits"].get("nvidia.com/gpu", 0))
    assert gpus >= 1, "no worker group asks for nvidia.com/gpu"
    # the CRD wants rayStartParams values as strings
    for params in [head["rayStartParams"]] + [g["rayStartParams"] for g in spec["workerGroupSpecs"]]:
        assert all(isinstance(v, str) for v in params.values()), params


def test_kuberay_dashboard_on_loopback_token_auth_and_project_installed():
    doc = _load(KUBERAY)
    spec = doc["spec"]
    head = spec["headGroupSpec"]
    # KubeRay binds 0.0.0.0 unless told otherwise
    assert head["rayStartParams"]["dashboard-host"] in ("127.0.0.1", "localhost")
    ports = head["template"]["spec"]["containers"][0].get("ports", [])
    assert all(p["containerPort"] != 8265 for p in ports), "the dashboard port is named on the head Service"
    assert spec["authOptions"]["mode"] == "token"
    templates = [head["template"]] + [g["template"] for g in spec["workerGroupSpecs"]]
    for template in templates:
        container = template["spec"]["containers"][0]
        command = " ".join(container.get("command", []) + container.get("args", []))
        assert "pip install -e" in command, container["name"]
        # KubeRay runs these before its own `ray start` only if they do not start Ray themselves
        assert "ray start" not in command
        mounts = {m["mountPath"] for m in container.get("volumeMounts", [])}
        assert "/shared" in mounts, container["name"]


def test_kuberay_manifest_matches_the_raycluster_crd():
    """Against KubeRay's own CRD schema, when one is given: no package ships it (it lives in
    ray-project/kuberay at ray-operator/config/crd/bases/ray.io_rayclusters.yaml)."""
    crd_path = os.environ.get("KUBERAY_CRD")
    if not crd_path:
        pytest.skip("no KubeRay CRD installed: set KUBERAY_CRD=.../ray.io_rayclusters.yaml to check against it")
    import jsonschema

    crd = yaml.safe_load(Path(crd_path).read_text())
    (version,) = [v for v in crd["spec"]["versions"] if v["name"] == "v1"]
    schema = version["schema"]["openAPIV3Schema"]
    doc = _load(KUBERAY)
    errors = [f"{list(e.absolute_path)}: {e.message}" for e in jsonschema.Draft7Validator(schema).iter_errors(doc)]
    assert errors == []
    # the API server silently drops fields the schema does not know: there must be none
    assert _unknown_fields(doc, schema, []) == []


def _unknown_fields(node, schema, path):
    out = []
    if isinstance(node, dict) and schema.get("type") == "object":
        props = schema.get("properties")
        extra = schema.get("additionalProperties")
        for key, value in node.items():
            if props is not None and key in props:
                out += _unknown_fields(value, props[key], path + [key])
            elif isinstance(extra, dict):
                out += _unknown_fields(value, extra, path + [key])
            elif props is not None and not schema.get("x-kubernetes-preserve-unknown-fields"):
                out.append(".".join(map(str, path + [key])))
    elif isinstance(node, list) and "items" in schema:
        for i, item in enumerate(node):
            out += _unknown_fields(item, schema["items"], path + [i])
    return out
