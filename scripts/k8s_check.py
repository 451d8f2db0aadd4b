#!/usr/bin/env python3
"""Checks rendered Kubernetes manifests of deploy/kubernetes (run by scripts/k8s-validate.sh).

For each target (a `kubectl kustomize` output):
  1. every object against the Kubernetes JSON schemas bundled by kubernetes-validate, strict
     (unknown fields are errors), for each version in --k8s-version;
  2. the invariants the deployment relies on (probes, resources, OMP_NUM_THREADS from the CPU
     limit, headless node Service, >= 2 coordinators, PDB/HPA/Service selectors that match,
     grace periods that cover a drain, no secret in a literal, env names the binaries read...);
  3. with --bin-dir: each workload's environment, resolved as the kubelet would (downward API,
     $(VAR) references; secrets replaced by stand-ins), given to the real `rerank-node
     --print-config` and `rerank-coordinator --print-config`, which must accept it and report
     the settings the manifest meant.

Exit status 1 with one line per problem when anything fails; 0 with a summary otherwise.
Usage: k8s_check.py [--k8s-version V]... [--bin-dir DIR] NAME=RENDERED.yaml...
"""

from __future__ import annotations

import argparse
import json
import math
import os
import re
import subprocess
import sys
import tempfile
from pathlib import Path

import yaml
import kubernetes_validate
from kubernetes_validate import utils as kv_utils

ROOT = Path(__file__).resolve().parent.parent
CONFIG_RS = ROOT / "shared" / "src" / "config.rs"

# Helper variables a manifest may set beside the binaries' own keys: downward-API values and
# the password that $(REDIS_PASSWORD) splices into REDIS_URL, the OpenMP pool size and the log
# filter (read by libraries, not by our config).
HELPER_ENV = {"POD_NAME", "POD_IP", "REDIS_PASSWORD", "OMP_NUM_THREADS", "RUST_LOG"}
# Being added to the coordinator concurrently (discovery through the headless Service); a
# coordinator without it ignores the variable.
PENDING_COORDINATOR_ENV = {"COORDINATOR_NODES_DNS"}
# Secret keys each target expects to be created outside git (a target that renders the Secret
# itself is checked against what it renders).
EXPECTED_SECRET_KEYS = {
    "base": {"admin-token", "cluster-secret", "redis-password"},
    "production": {"admin-token", "cluster-secret", "redis-url"},
}
SECRET_NAME = "rerank-secrets"
PART_OF = ("app.kubernetes.io/part-of", "rerank-cluster")
# The Dockerfile's ENV, which the container sees below the manifest's env.
IMAGE_ENV = {"HOST": "0.0.0.0", "PORT": "8000", "MODEL_PATH": "/app/models/all-MiniLM-L6-v2"}
# Stand-ins for what the kubelet would fill in.
STAND_IN_POD_IP = "10.1.2.3"
STAND_IN_POD_NAME = "rerank-pod-0"
STAND_IN_SECRETS = {
    "admin-token": "0f" * 24,
    "cluster-secret": "1e" * 32,
    "redis-password": "2d" * 24,
    "redis-url": "rediss://:" + "3c" * 24 + "@redis.example.internal:6380/0",
}


class Problems:
    """Collects failures; each names its target and object."""

    def __init__(self) -> None:
        self.items: list[str] = []

    def add(self, target: str, where: str, message: str) -> None:
        self.items.append(f"{target}: {where}: {message}")


def env_keys(const: str) -> set[str]:
    """The names in `pub const {const}: &[&str] = &[...]` of shared/src/config.rs."""
    text = CONFIG_RS.read_text()
    match = re.search(rf"pub const {const}: &\[&str\] = &\[(.*?)\];", text, re.S)
    if not match:
        raise SystemExit(f"k8s_check: {const} not found in {CONFIG_RS}")
    return set(re.findall(r'"([A-Z0-9_]+)"', match.group(1)))


def ident(obj: dict) -> str:
    return f"{obj.get('kind')}/{obj.get('metadata', {}).get('name')}"


def cpu_cores(quantity: str) -> float:
    """A CPU quantity ("2", "1500m", "0.5") in cores."""
    q = str(quantity)
    return int(q[:-1]) / 1000 if q.endswith("m") else float(q)


def labels_match(selector: dict, labels: dict) -> bool:
    """Whether `matchLabels`-style `selector` (non-empty) selects `labels`."""
    return bool(selector) and all(labels.get(k) == v for k, v in selector.items())


def workloads(objs: list[dict]) -> list[dict]:
    return [o for o in objs if o["kind"] in ("Deployment", "StatefulSet")]


def pod_labels(workload: dict) -> dict:
    return workload["spec"]["template"]["metadata"].get("labels", {})


def component(workload: dict) -> str | None:
    return pod_labels(workload).get("app.kubernetes.io/component")


def find(objs: list[dict], kind: str, name: str) -> dict | None:
    return next((o for o in objs if o["kind"] == kind and o["metadata"]["name"] == name), None)


def env_map(container: dict) -> dict[str, dict]:
    return {e["name"]: e for e in container.get("env", [])}


def resolve_env(container: dict) -> dict[str, str]:
    """The container's environment as the kubelet builds it: image ENV, then the manifest's
    entries in order, $(NAME) expanded from entries above (unknown references stay literal)."""
    env = dict(IMAGE_ENV)
    defined: dict[str, str] = {}
    for entry in container.get("env", []):
        if "value" in entry:
            value = re.sub(
                r"\$\(([A-Za-z_][A-Za-z0-9_]*)\)",
                lambda m: defined.get(m.group(1), m.group(0)),
                str(entry["value"]),
            )
        else:
            source = entry.get("valueFrom", {})
            if "secretKeyRef" in source:
                value = STAND_IN_SECRETS.get(source["secretKeyRef"]["key"], "stand-in")
            elif "fieldRef" in source:
                path = source["fieldRef"]["fieldPath"]
                value = {"status.podIP": STAND_IN_POD_IP, "metadata.name": STAND_IN_POD_NAME}.get(
                    path, "stand-in"
                )
            elif "resourceFieldRef" in source:
                ref = source["resourceFieldRef"]
                section, _, resource = ref["resource"].partition(".")
                quantity = container.get("resources", {}).get(section, {}).get(resource)
                if resource == "cpu" and quantity is not None:
                    # The kubelet rounds up: 1500m → 2.
                    value = str(math.ceil(cpu_cores(quantity) / cpu_cores(ref.get("divisor", "1"))))
                else:
                    value = "stand-in"

            else:
                value = "stand-in"
        defined[entry["name"]] = value
        env[entry["name"]] = value
    return env


def check_schemas(target: str, objs: list[dict], versions: list[str], problems: Problems) -> int:
    """Validates every object against each version's strict schema; returns the count that passed."""
    passed = 0
    for obj in objs:
        ok = True
        for version in versions:
            try:
                kubernetes_validate.validate(obj, version, strict=True)
            except kv_utils.ValidationError as e:
                path = ".".join(str(p) for p in e.path)
                problems.add(target, ident(obj), f"schema {version}: {path}: {e.message}")
                ok = False
            except (kv_utils.SchemaNotFoundError, kv_utils.InvalidSchemaError) as e:
                problems.add(target, ident(obj), f"no schema for {version}: {e.message}")
                ok = False
        passed += ok
    return passed


def check_containers(target: str, objs: list[dict], problems: Problems) -> None:
    """Probes, resources, securityContext and env hygiene of every workload's containers."""
    node_keys = env_keys("NODE_ENV_KEYS")
    coordinator_keys = env_keys("COORDINATOR_ENV_KEYS")
    for w in workloads(objs):
        spec = w["spec"]["template"]["spec"]
        for c in spec["containers"]:
            where = f"{ident(w)} container {c['name']}"
            for probe in ("readinessProbe", "livenessProbe"):
                if probe not in c:
                    problems.add(target, where, f"has no {probe}")
            res = c.get("resources", {})
            for section in ("requests", "limits"):
                for resource in ("cpu", "memory"):
                    if resource not in res.get(section, {}):
                        problems.add(target, where, f"has no resources.{section}.{resource}")
            if c.get("securityContext", {}).get("allowPrivilegeEscalation") is not False:
                problems.add(target, where, "allowPrivilegeEscalation is not false")
            names = [e["name"] for e in c.get("env", [])]
            defined: set[str] = set()
            for e in c.get("env", []):
                for ref in re.findall(r"\$\(([A-Za-z_][A-Za-z0-9_]*)\)", str(e.get("value", ""))):
                    if ref not in defined:
                        problems.add(
                            target, where,
                            f"{e['name']} refers to $({ref}) before it is defined (left literal)",
                        )
                defined.add(e["name"])
                secretish = re.search(r"TOKEN|SECRET|PASSWORD|AUTH", e["name"])
                if secretish and "value" in e:
                    problems.add(target, where, f"{e['name']} is a literal; take it from a Secret")
                if e["name"] == "REDIS_URL" and "value" in e and "$(REDIS_PASSWORD)" not in e["value"]:
                    problems.add(target, where, "REDIS_URL has no $(REDIS_PASSWORD) and no Secret")
            if len(names) != len(set(names)):
                problems.add(target, where, "an env name appears twice")
            known = {"node": node_keys, "coordinator": coordinator_keys | PENDING_COORDINATOR_ENV}
            role = component(w)
            if role in known:
                for name in names:
                    if name not in known[role] and name not in HELPER_ENV:
                        problems.add(target, where, f"env {name} is read by no rerank-{role}")
                if c.get("securityContext", {}).get("capabilities", {}).get("drop") != ["ALL"]:
                    problems.add(target, where, "does not drop all capabilities")
                if not spec.get("securityContext", {}).get("runAsNonRoot"):
                    problems.add(target, where, "pod does not set runAsNonRoot")


def prestop_seconds(container: dict) -> int:
    command = container.get("lifecycle", {}).get("preStop", {}).get("exec", {}).get("command", [])
    if len(command) == 2 and command[0] == "sleep" and command[1].isdigit():
        return int(command[1])
    return -1


def check_node(target: str, objs: list[dict], problems: Problems) -> None:
    """The node Deployment: readiness on /health, a start-up allowance, OMP_NUM_THREADS from the
    CPU limit, self-registration, and a grace period that covers a drain."""
    node = find(objs, "Deployment", "rerank-node")
    if node is None:
        problems.add(target, "Deployment/rerank-node", "missing")
        return
    where = "Deployment/rerank-node"
    spec = node["spec"]["template"]["spec"]
    c = next((c for c in spec["containers"] if c["name"] == "node"), None)
    if c is None:
        problems.add(target, where, "has no container `node`")
        return
    if "replicas" in node["spec"]:
        problems.add(target, where, "sets replicas, which the HPA owns (apply would reset it)")
    if c.get("readinessProbe", {}).get("httpGet", {}).get("path") != "/health":
        problems.add(target, where, "readinessProbe is not httpGet /health (model loaded, not draining)")
    startup = c.get("startupProbe", {})
    liveness = c.get("livenessProbe", {})
    allowance = max(
        startup.get("periodSeconds", 10) * startup.get("failureThreshold", 3) if startup else 0,
        liveness.get("initialDelaySeconds", 0)
        + liveness.get("periodSeconds", 10) * liveness.get("failureThreshold", 3),
    )
    if allowance < 120:
        problems.add(target, where, f"allows {allowance}s to load the model before a restart (< 120)")
    if liveness.get("periodSeconds", 10) * liveness.get("failureThreshold", 3) < 60:
        problems.add(target, where, "liveness restarts a node silent for under a minute")
    env = env_map(c)
    omp = env.get("OMP_NUM_THREADS", {}).get("valueFrom", {}).get("resourceFieldRef", {})
    if omp.get("resource") != "limits.cpu" or omp.get("containerName", "node") != "node":
        problems.add(target, where, "OMP_NUM_THREADS does not come from this container's limits.cpu")
    limits, requests = c["resources"].get("limits", {}), c["resources"].get("requests", {})
    if "cpu" in limits:
        cores = cpu_cores(limits["cpu"])
        if cores != int(cores) or cores < 1:
            problems.add(target, where, f"CPU limit {limits['cpu']} is not whole cores (OMP rounds up)")
        if cpu_cores(requests.get("cpu", "0")) != cores:
            problems.add(target, where, "CPU request differs from the limit (threads get throttled)")
    if env.get("POD_IP", {}).get("valueFrom", {}).get("fieldRef", {}).get("fieldPath") != "status.podIP":
        problems.add(target, where, "POD_IP is not the downward API's status.podIP")
    if env.get("NODE_URL", {}).get("value") != "http://$(POD_IP):8000":
        problems.add(target, where, "NODE_URL is not http://$(POD_IP):8000")
    if env.get("REDIS_ENABLED", {}).get("value") != "true":
        problems.add(target, where, "REDIS_ENABLED is not true (no registration)")
    for key in ("CLUSTER_SECRET", "ADMIN_TOKEN", "REDIS_URL"):
        if key not in env:
            problems.add(target, where, f"has no {key}")
    ports = [p["containerPort"] for p in c.get("ports", [])]
    if ports != [8000]:
        problems.add(target, where, f"container ports {ports}, not [8000]")
    request_s = int(env.get("REQUEST_TIMEOUT_MS", {}).get("value", "60000")) / 1000
    grace = spec.get("terminationGracePeriodSeconds", 30)
    pre = prestop_seconds(c)
    if pre < 1:
        problems.add(target, where, "has no preStop sleep (endpoints must drop before the drain)")
    if grace < pre + request_s:
        problems.add(
            target, where,
            f"terminationGracePeriodSeconds {grace} < preStop {pre}s + REQUEST_TIMEOUT_MS {request_s:g}s",
        )
    drain_s = int(env.get("SHUTDOWN_GRACE_MS", {}).get("value", "25000")) / 1000
    if grace < pre + drain_s:
        problems.add(
            target, where,
            f"terminationGracePeriodSeconds {grace} < preStop {pre}s + SHUTDOWN_GRACE_MS {drain_s:g}s "
            "(the kubelet would kill it mid-drain)",
        )


def check_coordinator(target: str, objs: list[dict], problems: Problems) -> None:
    """The coordinator Deployment: >= 2 replicas, Redis membership, DNS discovery through the
    headless Service, and a grace period that covers a client request."""
    co = find(objs, "Deployment", "rerank-coordinator")
    where = "Deployment/rerank-coordinator"
    if co is None:
        problems.add(target, where, "missing")
        return
    if co["spec"].get("replicas", 1) < 2:
        problems.add(target, where, f"replicas {co['spec'].get('replicas', 1)} < 2")
    spec = co["spec"]["template"]["spec"]
    c = spec["containers"][0]
    env = env_map(c)
    for key in ("REDIS_ENABLED", "REDIS_URL", "CLUSTER_SECRET", "ADMIN_TOKEN"):
        if key not in env:
            problems.add(target, where, f"has no {key}")
    if env.get("PORT", {}).get("value") != "8080":
        problems.add(target, where, "PORT is not 8080")
    dns = env.get("COORDINATOR_NODES_DNS", {}).get("value", "")
    host, _, port = dns.partition(":")
    svc = find(objs, "Service", host)
    if svc is None or svc["spec"].get("clusterIP") != "None":
        problems.add(target, where, f"COORDINATOR_NODES_DNS {dns!r} is not a headless Service")
    elif port not in {str(p["port"]) for p in svc["spec"]["ports"]}:
        problems.add(target, where, f"COORDINATOR_NODES_DNS port {port} is not a port of {host}")
    total_s = int(env.get("TOTAL_TIMEOUT_MS", {}).get("value", "60000")) / 1000
    grace = spec.get("terminationGracePeriodSeconds", 30)
    pre = prestop_seconds(c)
    if pre < 1 or grace < pre + total_s:
        problems.add(
            target, where,
            f"terminationGracePeriodSeconds {grace} < preStop {pre}s + TOTAL_TIMEOUT_MS {total_s:g}s",
        )
    drain_s = int(env.get("SHUTDOWN_GRACE_MS", {}).get("value", "25000")) / 1000
    if grace < pre + drain_s:
        problems.add(
            target, where,
            f"terminationGracePeriodSeconds {grace} < preStop {pre}s + SHUTDOWN_GRACE_MS {drain_s:g}s "
            "(the kubelet would kill it mid-drain)",
        )


def check_services(target: str, objs: list[dict], problems: Problems) -> None:
    """Every Service selects some workload's pods and a port its container names; the node
    Service is headless, the coordinator's listens on 8080."""
    for svc in (o for o in objs if o["kind"] == "Service"):
        where = ident(svc)
        selected = [w for w in workloads(objs) if labels_match(svc["spec"].get("selector", {}), pod_labels(w))]
        if not selected:
            problems.add(target, where, "selects no workload's pods")
            continue
        for port in svc["spec"]["ports"]:
            tp = port.get("targetPort", port["port"])
            for w in selected:
                container_ports = [p for c in w["spec"]["template"]["spec"]["containers"] for p in c.get("ports", [])]
                if not any(p.get("name") == tp or p["containerPort"] == tp for p in container_ports):
                    problems.add(target, where, f"targetPort {tp} is no port of {ident(w)}")
    node_svc = find(objs, "Service", "rerank-node")
    if node_svc is None or node_svc["spec"].get("clusterIP") != "None":
        problems.add(target, "Service/rerank-node", "missing or not headless (clusterIP: None)")
    elif node_svc["spec"].get("publishNotReadyAddresses"):
        problems.add(target, "Service/rerank-node", "publishes not-ready (loading, draining) nodes")
    co_svc = find(objs, "Service", "rerank-coordinator")
    if co_svc is None or [p["port"] for p in co_svc["spec"]["ports"]] != [8080]:
        problems.add(target, "Service/rerank-coordinator", "missing or not on port 8080")


def check_pdbs_and_hpa(target: str, objs: list[dict], problems: Problems) -> None:
    """PDBs select exactly one workload and can be satisfied; the HPA scales the node Deployment."""
    pdbs = {o["metadata"]["name"]: o for o in objs if o["kind"] == "PodDisruptionBudget"}
    for name in ("rerank-node", "rerank-coordinator"):
        if name not in pdbs:
            problems.add(target, f"PodDisruptionBudget/{name}", "missing")
    for pdb in pdbs.values():
        where = ident(pdb)
        selector = pdb["spec"]["selector"].get("matchLabels", {})
        selected = [w for w in workloads(objs) if labels_match(selector, pod_labels(w))]
        if len(selected) != 1:
            problems.add(target, where, f"selects {len(selected)} workloads, not 1")
            continue
        w = selected[0]
        if "minAvailable" in pdb["spec"] and "replicas" in w["spec"]:
            if int(pdb["spec"]["minAvailable"]) >= w["spec"]["replicas"]:
                problems.add(target, where, "minAvailable >= replicas: no pod could ever be evicted")
        if pdb["spec"].get("maxUnavailable") == 0:
            problems.add(target, where, "maxUnavailable 0: no pod could ever be evicted")
    hpa = find(objs, "HorizontalPodAutoscaler", "rerank-node")
    where = "HorizontalPodAutoscaler/rerank-node"
    if hpa is None:
        problems.add(target, where, "missing")
        return
    if hpa["apiVersion"] != "autoscaling/v2":
        problems.add(target, where, f"apiVersion {hpa['apiVersion']}, not autoscaling/v2")
    ref = hpa["spec"]["scaleTargetRef"]
    if find(objs, ref["kind"], ref["name"]) is None or ref["name"] != "rerank-node":
        problems.add(target, where, f"scales {ref['kind']}/{ref['name']}, not the node Deployment")
    lo, hi = hpa["spec"].get("minReplicas", 1), hpa["spec"]["maxReplicas"]
    if lo < 2 or hi < lo:
        problems.add(target, where, f"bounds {lo}..{hi}: want min >= 2 and max >= min")
    cpu = [m for m in hpa["spec"].get("metrics", []) if m.get("resource", {}).get("name") == "cpu"]
    if not cpu:
        problems.add(target, where, "has no CPU metric")


def check_redis_and_secrets(target: str, objs: list[dict], problems: Problems) -> None:
    """In-cluster Redis is wired to REDIS_URL with requirepass and a volume, or absent with
    REDIS_URL from the Secret; every Secret key referenced exists (or is the documented set)."""
    redis = find(objs, "StatefulSet", "rerank-redis")
    urls = [
        env_map(c).get("REDIS_URL", {})
        for w in workloads(objs) if component(w) in ("node", "coordinator")
        for c in w["spec"]["template"]["spec"]["containers"]
    ]
    if redis is not None:
        c = redis["spec"]["template"]["spec"]["containers"][0]
        args = c.get("args", []) + c.get("command", [])
        if "--requirepass" not in args or args[args.index("--requirepass") + 1] != "$(REDIS_PASSWORD)":
            problems.add(target, "StatefulSet/rerank-redis", "no --requirepass $(REDIS_PASSWORD)")
        claims = [t["metadata"]["name"] for t in redis["spec"].get("volumeClaimTemplates", [])]
        mounts = [m["name"] for m in c.get("volumeMounts", [])]
        if not claims or not set(claims) <= set(mounts):
            problems.add(target, "StatefulSet/rerank-redis", "no PersistentVolumeClaim mounted")
        if find(objs, "Service", "rerank-redis") is None:
            problems.add(target, "Service/rerank-redis", "missing beside the StatefulSet")
        for url in urls:
            if "@rerank-redis:6379/" not in url.get("value", ""):
                problems.add(target, "REDIS_URL", f"does not point at rerank-redis: {url}")
    else:
        for url in urls:
            if url.get("valueFrom", {}).get("secretKeyRef", {}).get("key") != "redis-url":
                problems.add(target, "REDIS_URL", "without in-cluster Redis it must come from the Secret's redis-url")
    referenced: dict[str, set[str]] = {}
    for w in workloads(objs):
        for c in w["spec"]["template"]["spec"]["containers"]:
            for e in c.get("env", []):
                ref = e.get("valueFrom", {}).get("secretKeyRef")
                if ref:
                    referenced.setdefault(ref["name"], set()).add(ref["key"])
    rendered = {o["metadata"]["name"]: o for o in objs if o["kind"] == "Secret"}
    for name, keys in referenced.items():
        if name in rendered:
            have = set(rendered[name].get("data", {})) | set(rendered[name].get("stringData", {}))
            if not keys <= have:
                problems.add(target, f"Secret/{name}", f"lacks keys {sorted(keys - have)}")
        elif not name.startswith(SECRET_NAME):
            problems.add(target, f"Secret/{name}", "referenced, neither rendered nor documented")
        elif keys != EXPECTED_SECRET_KEYS.get(target, keys):
            problems.add(
                target, f"Secret/{name}",
                f"keys {sorted(keys)} differ from the documented {sorted(EXPECTED_SECRET_KEYS[target])}",
            )


def check_labels_and_images(target: str, objs: list[dict], problems: Problems) -> None:
    for o in objs:
        if o["metadata"].get("labels", {}).get(PART_OF[0]) != PART_OF[1] and o["kind"] != "Namespace":
            problems.add(target, ident(o), f"lacks label {PART_OF[0]}={PART_OF[1]}")
    images = {
        c["image"]
        for w in workloads(objs) if component(w) in ("node", "coordinator")
        for c in w["spec"]["template"]["spec"]["containers"]
    }
    if len(images) != 1:
        problems.add(target, "images", f"node and coordinator run different images: {sorted(images)}")
    elif not next(iter(images)).rsplit("/", 1)[-1].startswith("rerank-cluster:"):
        problems.add(target, "images", f"not the rerank-cluster image: {images}")


def check_binaries(target: str, objs: list[dict], bin_dir: Path, problems: Problems) -> int:
    """Runs `--print-config` of the real binaries under each workload's resolved environment;
    returns how many configurations were accepted and matched."""
    accepted = 0
    expectations = {
        "node": ("rerank-node", {"host": "0.0.0.0", "port": 8000, "redis_enabled": True,
                                 "node_url": f"http://{STAND_IN_POD_IP}:8000",
                                 "node_id": STAND_IN_POD_NAME, "micro_batch_enabled": True}),
        "coordinator": ("rerank-coordinator", {"host": "0.0.0.0", "port": 8080, "redis_enabled": True,
                                               "routing": "consistent_hash"}),
    }
    for w in workloads(objs):
        role = component(w)
        if role not in expectations:
            continue
        binary, expected = expectations[role]
        c = w["spec"]["template"]["spec"]["containers"][0]
        env = resolve_env(c)
        env["PATH"] = "/usr/bin:/bin"
        with tempfile.TemporaryDirectory() as cwd:  # no configs/*.toml: defaults < env only
            run = subprocess.run(
                [str(bin_dir / binary), "--print-config"], env=env, cwd=cwd,
                capture_output=True, text=True, timeout=30,
            )
        where = f"{ident(w)} → {binary} --print-config"
        if run.returncode != 0:
            problems.add(target, where, f"refused the environment: {run.stderr.strip()[-400:]}")
            continue
        printed = json.loads(run.stdout)
        wrong = {k: printed.get(k) for k, v in expected.items() if printed.get(k) != v}
        for secret in ("admin_token", "cluster_secret"):
            if not printed.get(secret):
                wrong[secret] = printed.get(secret)
        # The URL the manifest built, with its password masked as --print-config masks it.
        masked_url = re.sub(r"^([a-z]+://[^:@/]*:)[^@]*@", r"\1***@", env.get("REDIS_URL", ""))
        if "***@" not in masked_url or printed.get("redis_url") != masked_url:
            wrong["redis_url"] = (printed.get("redis_url"), masked_url)
        if wrong:
            problems.add(target, where, f"unexpected settings {wrong}")
        else:
            accepted += 1
    return accepted


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--k8s-version", action="append", required=True)
    parser.add_argument("--bin-dir", type=Path)
    parser.add_argument("targets", nargs="+", help="NAME=rendered.yaml")
    args = parser.parse_args()
    for version in args.k8s_version:
        if kv_utils.major_minor(version) not in [kv_utils.major_minor(v) for v in kv_utils.all_versions()]:
            print(f"k8s_check: kubernetes-validate bundles no schemas for Kubernetes {version} "
                  f"(it has {', '.join(kv_utils.all_versions())})", file=sys.stderr)
            return 2
    problems = Problems()
    summary = []
    for spec in args.targets:
        target, _, path = spec.partition("=")
        objs = [o for o in yaml.safe_load_all(Path(path).read_text()) if o]
        if not objs:
            problems.add(target, path, "rendered nothing")
            continue
        valid = check_schemas(target, objs, args.k8s_version, problems)
        checks = [check_containers, check_node, check_coordinator, check_services,
                  check_pdbs_and_hpa, check_redis_and_secrets, check_labels_and_images]
        for check in checks:
            # A malformed object (the schema check has named it) must not hide the other checks.
            try:
                check(target, objs, problems)
            except (KeyError, TypeError, ValueError, AttributeError, IndexError) as e:
                problems.add(target, check.__name__, f"could not run on this input: {type(e).__name__}: {e}")
        line = f"{target}: {valid}/{len(objs)} objects valid (strict, Kubernetes {', '.join(args.k8s_version)})"
        kinds: dict[str, int] = {}
        for o in objs:
            kinds[o["kind"]] = kinds.get(o["kind"], 0) + 1
        line += " [" + ", ".join(f"{k} {n}" for k, n in sorted(kinds.items())) + "]"
        if args.bin_dir:
            try:
                accepted = check_binaries(target, objs, args.bin_dir, problems)
            except (KeyError, TypeError, ValueError, AttributeError, IndexError) as e:
                problems.add(target, "check_binaries", f"could not run on this input: {type(e).__name__}: {e}")
                accepted = 0
            line += f"; {accepted} configs accepted by the binaries"
        summary.append(line)
    for line in summary:
        print(line)
    if problems.items:
        print(f"\n{len(problems.items)} problem(s):", file=sys.stderr)
        for item in problems.items:
            print(f"  {item}", file=sys.stderr)
        return 1
    print("all invariants hold")
    return 0


if __name__ == "__main__":
    sys.exit(main())
