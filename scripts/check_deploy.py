#!/usr/bin/env python3
"""CI checks of the deployment artefacts (issue: deployment).

* The Helm chart is linted and rendered with the real Helm engine (Helm's Go
  SDK through helm-python-sdk, no helm binary) for the default and a
  production-like values file; every rendered manifest validates against the
  Kubernetes schemas (kubernetes-validate, strict).
* A bad values file is rejected by values.schema.json, and a termination
  grace period shorter than the shutdown grace refuses to render.
* The chart README documents every value; the chart's saga definitions are
  the repository's.
* compose.yaml parses and names the images and ports the README states.
"""
import json
import pathlib
import sys

import helm_python as helm
import kubernetes_validate
import yaml

ROOT = pathlib.Path(__file__).resolve().parent.parent
CHART = ROOT / "helm" / "order-saga"
K8S_VERSION = "1.33.0"
CRD_KINDS = {("monitoring.coreos.com/v1", "ServiceMonitor"), ("monitoring.coreos.com/v1", "PrometheusRule")}
failures = []


def fail(msg):
    failures.append(msg)
    print(f"FAIL {msg}")


def ok(msg):
    print(f"ok   {msg}")


def load(path):
    return yaml.safe_load((CHART / path).read_text())


def docs_of(manifests):
    for template, text in sorted(manifests.items()):
        for doc in yaml.safe_load_all(text):
            if doc:
                yield template, doc


def check_crd(template, doc):
    kind = doc["kind"]
    spec = doc.get("spec") or {}
    if kind == "ServiceMonitor":
        if not spec.get("endpoints") or not spec.get("selector"):
            fail(f"{template}: ServiceMonitor needs selector and endpoints")
    if kind == "PrometheusRule":
        groups = spec.get("groups") or []
        rules = [r for g in groups for r in g.get("rules", [])]
        if not rules or not all("alert" in r and "expr" in r for r in rules):
            fail(f"{template}: PrometheusRule has no well-formed alert rules")


def render_and_validate(values_file):
    values = load(values_file)
    chart = helm.Chart.load(str(CHART))
    try:
        chart.validate_schema(values)
    except helm.HelmError as e:
        fail(f"{values_file}: schema rejected valid values: {e}")
        return None
    report = helm.lint(str(CHART), values, strict=True, kube_version=f"v{K8S_VERSION}")
    problems = [m for m in report.get("messages", []) if m.get("severity", 0) >= 2] + report.get("errors", [])
    if problems:
        fail(f"{values_file}: helm lint: {problems}")
    else:
        ok(f"{values_file}: helm lint --strict clean")
    manifests = chart.render(values, name="order-saga", namespace="shop", is_install=True)
    kinds = []
    for template, doc in docs_of(manifests):
        kinds.append(doc["kind"])
        if (doc.get("apiVersion"), doc.get("kind")) in CRD_KINDS:
            check_crd(template, doc)
            continue
        try:
            kubernetes_validate.validate(doc, K8S_VERSION, strict=True)
        except kubernetes_validate.ValidationError as e:
            fail(f"{values_file}: {template}: {e.message} at {list(e.path)}")
        except kubernetes_validate.SchemaNotFoundError as e:
            fail(f"{values_file}: {template}: no schema for {doc.get('apiVersion')}/{doc.get('kind')}: {e}")
    ok(f"{values_file}: rendered {len(kinds)} manifests: {', '.join(sorted(kinds))}")
    return {(d["kind"]): d for _, d in docs_of(manifests)}


def env_of(container):
    return {e["name"]: e.get("value", e.get("valueFrom")) for e in container.get("env", [])}


def check_production(rendered):
    dep = rendered["Deployment"]
    spec = dep["spec"]["template"]["spec"]
    c = spec["containers"][0]
    env = env_of(c)
    grace = int(env["ORDER_SAGA_SHUTDOWN_GRACE"].rstrip("s"))
    if not spec["terminationGracePeriodSeconds"] > grace:
        fail("terminationGracePeriodSeconds must exceed the daemon's shutdown grace")
    if c["livenessProbe"]["httpGet"]["path"] != "/healthz" or c["readinessProbe"]["httpGet"]["path"] != "/readyz":
        fail("probes must be /healthz (liveness) and /readyz (readiness)")
    if dep["spec"]["replicas"] != 3 or env["ORDER_SAGA_KAFKA_GROUP_ID"] != "order-service-events":
        fail("replicas and the shared consumer group")
    if dep["spec"]["strategy"]["rollingUpdate"]["maxUnavailable"] != 0:
        fail("rollouts must not take a replica away before a new one is ready")
    if env["ORDER_SAGA_MIGRATE_ON_START"] != "false":
        fail("with the migration job the daemon must not migrate on start")
    for secret_env in ["ORDER_SAGA_DATABASE_URL", "ORDER_SAGA_KAFKA_SASL_PASSWORD", "ORDER_SAGA_OPS_TOKEN"]:
        if not isinstance(env.get(secret_env), dict) or "secretKeyRef" not in env[secret_env]:
            fail(f"{secret_env} must come from a Secret")
    job = rendered["Job"]
    if "pre-install" not in job["metadata"]["annotations"].get("helm.sh/hook", ""):
        fail("the migration job must be a pre-install/pre-upgrade hook")
    if job["spec"]["template"]["spec"]["containers"][0]["args"] != ["migrate"]:
        fail("the migration job runs `order-saga migrate`")
    sagas = rendered["ConfigMap"] if rendered["ConfigMap"]["metadata"]["name"].endswith("-sagas") else None
    for kind in ["PodDisruptionBudget", "ServiceMonitor", "PrometheusRule", "Service"]:
        if kind not in rendered:
            fail(f"production values must render a {kind}")
    ok("production values: grace, probes, replicas, rollout, hooks, secrets")
    del sagas


def check_rejections():
    chart = helm.Chart.load(str(CHART))
    try:
        chart.validate_schema(load("ci/bad-values.yaml"))
        fail("ci/bad-values.yaml was accepted by values.schema.json")
    except helm.HelmError as e:
        ok(f"ci/bad-values.yaml rejected: {' '.join(str(e).split())[:300]}")
    values = load("ci/default-values.yaml")
    values["terminationGracePeriodSeconds"] = 10
    try:
        chart.render(values, name="order-saga", namespace="shop", is_install=True)
        fail("a termination grace shorter than the shutdown grace rendered")
    except helm.HelmError as e:
        ok("termination grace <= shutdown grace refuses to render")
        del e
    values = load("ci/default-values.yaml")
    del values["secrets"]
    try:
        chart.render(values, name="order-saga", namespace="shop", is_install=True)
        fail("a release without a database secret rendered")
    except helm.HelmError:
        ok("a release without the database secret refuses to render")


def leaf_keys(d, prefix=""):
    for k, v in d.items():
        path = f"{prefix}.{k}" if prefix else k
        if isinstance(v, dict) and v and k not in ("resources",):
            yield from leaf_keys(v, path)
        else:
            yield path


def check_readme():
    readme = (CHART / "README.md").read_text()
    missing = [k for k in leaf_keys(load("values.yaml")) if f"`{k}`" not in readme]
    if missing:
        fail(f"helm/order-saga/README.md does not document: {missing}")
    else:
        ok("the chart README documents every value")
    for f in (ROOT / "sagas").glob("*.toml"):
        copy = CHART / "files" / "sagas" / f.name
        if not copy.exists() or copy.read_text() != f.read_text():
            fail(f"helm/order-saga/files/sagas/{f.name} differs from sagas/{f.name} (copy it)")
    ok("the chart ships the repository's saga definitions")


def check_compose():
    compose = yaml.safe_load((ROOT / "compose.yaml").read_text())
    readme = (ROOT / "README.md").read_text()
    services = compose.get("services") or {}
    for name in ["mysql", "kafka", "schema-registry", "order-saga"]:
        if name not in services:
            fail(f"compose.yaml has no service {name}")
    for name, svc in services.items():
        image = svc.get("image")
        if image and image not in readme:
            fail(f"README does not name the image {image} of compose service {name}")
        for port in svc.get("ports", []):
            host = str(port).split(":")[0]
            if host not in readme:
                fail(f"README does not state port {host} of compose service {name}")
    ok(f"compose.yaml parses: {', '.join(sorted(services))}")


def main():
    print(f"helm SDK {helm.helm_sdk_version()}, kubernetes schemas {K8S_VERSION}")
    render_and_validate("ci/default-values.yaml")
    rendered = render_and_validate("ci/production-values.yaml")
    if rendered:
        check_production(rendered)
    check_rejections()
    check_readme()
    check_compose()
    if failures:
        print(f"\n{len(failures)} deployment check(s) failed")
        sys.exit(1)
    print("\nall deployment checks passed")


if __name__ == "__main__":
    main()
