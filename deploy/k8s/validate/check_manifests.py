#!/usr/bin/env python3
"""Offline checks of the Kubernetes manifests under deploy/k8s.

Run by tools/check_deploy.sh, which provides a pinned kubectl and the
Kubernetes 1.32 JSON schemas. For the base and every overlay it:

1. renders the kustomization with `kubectl kustomize`;
2. validates every object against its schema: built-in kinds against the
   Kubernetes 1.32 "strict" JSON schemas (unknown fields rejected), the
   custom resources (LeaderWorkerSet, ServiceMonitor, ScaledObject) against
   deploy/k8s/schemas; a kind with no schema is an error, never skipped;
3. checks what schemas cannot see: every container flag (command-line
   arguments and the absl flag files in the ConfigMap) is defined by the
   binary (ABSL_FLAG in the C++ sources), every $(VAR) is defined, ports in
   flags and probes are container ports, --coordinator/--kvstore name a
   Service port that exists, Services, ServiceMonitors, PDBs and
   NetworkPolicies select something, references (ConfigMaps, PVCs, scale
   targets, governing Services) resolve, tensor-parallel sizes agree.

Before all that it runs the same checks on known-bad objects and fails if
any of them is accepted (a validator that accepts everything is no check).
Standalone manifests under deploy/k8s/extras are validated the same way,
together with the base render they refer to.
"""

import argparse
import copy
import glob
import json
import os
import re
import shlex
import subprocess
import sys
import time
import warnings

import jsonschema
import yaml

K8S_DEFS_URI = "https://kubernetes.io/api/_definitions.json"

# Binary -> C++ sources whose ABSL_FLAGs it links (main() plus flag
# libraries), and flags being added that the sources may not define yet.
BINARIES = {
    "latentkv-coordinator": {
        "sources": ["coordinator/main.cc", "common/auth/cluster_flags.cc"],
        "pending": ["http_port", "metrics_port"],
    },
    "latentkv-worker": {
        "sources": ["worker/server/main.cc", "worker/residency/flags.cc",
                    "common/auth/cluster_flags.cc"],
        "pending": ["metrics_port"],
    },
    "latentkv-kvstore": {
        "sources": ["kvstore/main.cc", "common/auth/cluster_flags.cc"],
        "pending": ["metrics_port"],
    },
    # The CLI: a subcommand first; takes dashes or underscores.
    "latentkv": {
        "sources": ["tools/cli/*.cc", "worker/residency/flags.cc"],
        "pending": [],
        "subcommands": ["serve", "generate", "eval", "convert", "inspect",
                        "bench", "health", "cluster-credentials"],
    },
}
# Flags absl defines in every binary.
ABSL_BUILTIN_FLAGS = {"flagfile", "fromenv", "tryfromenv", "undefok"}
# Flags whose value is a port this container must expose.
PORT_FLAGS = ("port", "internal_port", "http_port", "metrics_port")
# Flags whose value is host:port of another component.
ADDRESS_FLAGS = ("coordinator", "kvstore")
# gRPC health service names the processes serve ("" equals readiness).
HEALTH_SERVICES = {"liveness", "readiness", ""}

WORKLOAD_KINDS = {"Deployment", "StatefulSet", "DaemonSet", "ReplicaSet",
                  "Job"}
CLUSTER_SCOPED = {"Namespace", "ClusterRole", "ClusterRoleBinding",
                  "CustomResourceDefinition", "PersistentVolume",
                  "StorageClass", "PriorityClass"}
NAMESPACE = "latentkv"


# ---------------------------------------------------------------- schemas


def close_structural(node):
    """Turns a CRD's structural OpenAPI schema into a strict JSON Schema.

    The API server rejects unknown fields of custom resources (kubectl's
    default field validation is Strict): objects with `properties` and no
    `additionalProperties` get additionalProperties: false unless marked
    x-kubernetes-preserve-unknown-fields. x-kubernetes-int-or-string becomes
    anyOf integer/string.
    """
    if isinstance(node, list):
        for n in node:
            close_structural(n)
        return
    if not isinstance(node, dict):
        return
    if node.pop("x-kubernetes-int-or-string", False):
        node.pop("type", None)
        node["anyOf"] = [{"type": "integer"}, {"type": "string"}]
    preserve = node.pop("x-kubernetes-preserve-unknown-fields", False)
    if "properties" in node and "additionalProperties" not in node and \
            not preserve:
        node["additionalProperties"] = False
    for key in ("properties", "$defs", "patternProperties"):
        for sub in node.get(key, {}).values():
            close_structural(sub)
    for key in ("items", "additionalProperties", "not"):
        if isinstance(node.get(key), dict):
            close_structural(node[key])
    for key in ("anyOf", "allOf", "oneOf"):
        close_structural(node.get(key, []))


class Schemas:
    """Finds and applies the schema of an object by apiVersion and kind."""

    def __init__(self, k8s_dir, crd_dir):
        self.k8s_dir = k8s_dir
        with open(os.path.join(k8s_dir, "_definitions.json")) as f:
            self.defs = json.load(f)
        self.crds = {}
        for name in sorted(os.listdir(crd_dir)):
            if not name.endswith(".yaml"):
                continue
            with open(os.path.join(crd_dir, name)) as f:
                doc = yaml.safe_load(f)
            schema = copy.deepcopy(doc["openAPIV3Schema"])
            schema["$defs"] = copy.deepcopy(doc.get("$defs", {}))
            close_structural(schema)
            props = schema["properties"]
            api_version = "%s/%s" % (doc["group"], doc["version"])
            # What the API server checks for every object.
            props["apiVersion"] = {"const": api_version}
            props["kind"] = {"const": doc["kind"]}
            props["metadata"] = {
                "$ref": K8S_DEFS_URI +
                "#/$defs/io.k8s.apimachinery.pkg.apis.meta.v1.ObjectMeta"}
            schema["required"] = sorted(
                set(schema.get("required", [])) |
                {"apiVersion", "kind", "metadata"})
            schema["$schema"] = "https://json-schema.org/draft/2020-12/schema"
            schema["$id"] = "https://latentkv.invalid/schemas/%s/%s/%s" % (
                doc["group"], doc["version"], doc["kind"])
            self.crds[(api_version, doc["kind"])] = (schema, name)
        self.cache = {}

    def builtin_path(self, api_version, kind):
        # kubernetes-validate's naming: <kind>-<group's first label>-<version>
        group, _, version = api_version.rpartition("/")
        group = group.split(".")[0]
        suffix = "%s-%s" % (group, version) if group else version
        return os.path.join(self.k8s_dir,
                            "%s-%s.json" % (kind.lower(), suffix))

    def validator(self, api_version, kind):
        key = (api_version, kind)
        if key in self.cache:
            return self.cache[key]
        where = None
        if key in self.crds:
            schema, where = self.crds[key]
            where = "deploy/k8s/schemas/" + where
        else:
            path = self.builtin_path(api_version, kind)
            if os.path.exists(path):
                with open(path) as f:
                    schema = json.load(f)
                where = "Kubernetes 1.32 " + os.path.basename(path)
        if where is None:
            self.cache[key] = None
            return None
        self.cache[key] = (make_validator(schema, self.defs), where)
        return self.cache[key]

    def errors(self, obj):
        """Schema errors of obj, as strings ([] when valid)."""
        api_version, kind = obj.get("apiVersion"), obj.get("kind")
        if not isinstance(api_version, str) or not isinstance(kind, str):
            return ["no apiVersion/kind"]
        found = self.validator(api_version, kind)
        if found is None:
            return ["no schema for %s %s (add one to deploy/k8s/schemas)" %
                    (api_version, kind)]
        validator, where = found
        out = []
        for e in sorted(validator.iter_errors(obj), key=lambda e: list(
                map(str, e.absolute_path))):
            path = ".".join(str(p) for p in e.absolute_path) or "(root)"
            out.append("%s: %s [%s]" % (path, e.message[:300], where))
        return out


def make_validator(schema, defs):
    """A Draft 2020-12 validator resolving refs into the k8s definitions.

    Works with Debian 12's jsonschema 4.10 (RefResolver) and with newer
    releases (the `referencing` registry).
    """
    cls = jsonschema.Draft202012Validator
    try:
        from referencing import Registry, Resource
        from referencing.jsonschema import DRAFT202012
        registry = Registry().with_resource(
            K8S_DEFS_URI,
            Resource.from_contents(defs, default_specification=DRAFT202012))
        return cls(schema, registry=registry)
    except ImportError:
        resolver = jsonschema.RefResolver(
            base_uri=schema.get("$id", ""), referrer=schema,
            store={K8S_DEFS_URI: defs})
        return cls(schema, resolver=resolver)


# ------------------------------------------------------------------ flags


def defined_flags(root):
    """Binary -> set of flag names (ABSL_FLAG in its sources + pending)."""
    pattern = re.compile(r"ABSL_FLAG\(\s*[\w:<>, ]+?,\s*(\w+)\s*,", re.S)
    out = {}
    for binary, spec in BINARIES.items():
        names = set(ABSL_BUILTIN_FLAGS) | set(spec["pending"])
        for src in spec["sources"]:
            found = []
            for path in sorted(glob.glob(os.path.join(root, src))):
                with open(path) as f:
                    found += pattern.findall(f.read())
            if not found:
                raise SystemExit("no ABSL_FLAG found in %s" % src)
            names |= set(found)
        out[binary] = names
    return out


def parse_flag(arg, binary):
    """'--name=value' -> (name, value); '--name' -> (name, None)."""
    body = arg[2:]
    name, eq, value = body.partition("=")
    if binary == "latentkv":
        name = name.replace("-", "_")
    return name, (value if eq else None)


# -------------------------------------------------------------- the render


def pod_templates(obj):
    """[(label, template)] of the pod templates in a workload object."""
    kind, spec = obj.get("kind"), obj.get("spec") or {}
    if kind in WORKLOAD_KINDS:
        return [("template", spec.get("template") or {})]
    if kind == "LeaderWorkerSet":
        lwt = spec.get("leaderWorkerTemplate") or {}
        out = [("workerTemplate", lwt.get("workerTemplate") or {})]
        if lwt.get("leaderTemplate"):
            out.append(("leaderTemplate", lwt["leaderTemplate"]))
        return out
    return []


def selector_matches(selector, labels):
    """A LabelSelector (matchLabels + matchExpressions) against labels."""
    if selector is None:
        return False
    for k, v in (selector.get("matchLabels") or {}).items():
        if labels.get(k) != v:
            return False
    for e in selector.get("matchExpressions") or []:
        key, op, values = e.get("key"), e.get("operator"), e.get("values", [])
        if op == "In" and labels.get(key) not in values:
            return False
        if op == "NotIn" and labels.get(key) in values:
            return False
        if op == "Exists" and key not in labels:
            return False
        if op == "DoesNotExist" and key in labels:
            return False
    return True


def name_of(obj):
    return "%s/%s" % (obj.get("kind"), (obj.get("metadata") or {}).get(
        "name"))


class Render:
    """The objects of one rendered kustomization, indexed for lookups."""

    def __init__(self, objs):
        self.objs = objs
        self.by_kind = {}
        for o in objs:
            meta = o.get("metadata") or {}
            self.by_kind.setdefault(o.get("kind"), {})[meta.get("name")] = o
        # (workload, label, template) for every pod template.
        self.templates = []
        for o in objs:
            for label, tmpl in pod_templates(o):
                self.templates.append((o, label, tmpl))

    def get(self, kind, name):
        return self.by_kind.get(kind, {}).get(name)

    def templates_matching(self, selector):
        return [(o, lab, t) for o, lab, t in self.templates
                if selector_matches(selector,
                                    (t.get("metadata") or {}).get("labels")
                                    or {})]


class Checker:
    """Semantic checks of one render; errors collect in self.errors."""

    def __init__(self, render, flags, schemas):
        self.r = render
        self.flags = flags
        self.schemas = schemas
        self.errors = []

    def err(self, obj, msg):
        self.errors.append("%s: %s" % (name_of(obj), msg))

    def run(self):
        for o in self.r.objs:
            for e in self.schemas.errors(o):
                self.err(o, "schema: " + e)
            try:
                self.check_object(o)
            except (AttributeError, KeyError, TypeError, ValueError) as e:
                # Malformed beyond what the checks expect (the schema errors
                # above say why).
                self.err(o, "unchecked (%s: %s)" % (type(e).__name__, e))
        return self.errors

    def check_object(self, o):
        kind = o.get("kind")
        meta = o.get("metadata") or {}
        if kind not in CLUSTER_SCOPED and \
                meta.get("namespace") != NAMESPACE:
            self.err(o, "namespace is %r, not %r" %
                     (meta.get("namespace"), NAMESPACE))
        for label, tmpl in pod_templates(o):
            self.check_workload(o, label, tmpl)
        if kind == "Service":
            self.check_service(o)
        elif kind == "ServiceMonitor":
            self.check_servicemonitor(o)
        elif kind in ("PodDisruptionBudget",):
            self.check_selects_pods(o, (o.get("spec") or {}).get(
                "selector"), "selector")
        elif kind == "NetworkPolicy":
            self.check_networkpolicy(o)
        elif kind == "HorizontalPodAutoscaler":
            self.check_scale_target(o, (o.get("spec") or {}).get(
                "scaleTargetRef") or {})
        elif kind == "ScaledObject":
            self.check_scale_target(o, (o.get("spec") or {}).get(
                "scaleTargetRef") or {}, default_kind="Deployment")
        elif kind == "Ingress":
            self.check_ingress(o)

    # -- workloads

    def check_workload(self, o, label, tmpl):
        spec = o.get("spec") or {}
        labels = (tmpl.get("metadata") or {}).get("labels") or {}
        if o.get("kind") in ("Deployment", "StatefulSet", "DaemonSet",
                             "ReplicaSet"):
            if not selector_matches(spec.get("selector"), labels):
                self.err(o, "spec.selector does not match the template's "
                         "labels")
        if o.get("kind") == "StatefulSet":
            svc = self.r.get("Service", spec.get("serviceName"))
            if svc is None:
                self.err(o, "serviceName %r is not a Service here" %
                         spec.get("serviceName"))
            elif (svc.get("spec") or {}).get("clusterIP") != "None":
                self.err(o, "governing Service %r is not headless" %
                         spec.get("serviceName"))
        pod = tmpl.get("spec") or {}
        volumes = {v.get("name"): v for v in pod.get("volumes") or []}
        claims = {(c.get("metadata") or {}).get("name")
                  for c in spec.get("volumeClaimTemplates") or []}
        for v in volumes.values():
            cm = (v.get("configMap") or {}).get("name")
            if cm is not None and self.r.get("ConfigMap", cm) is None:
                self.err(o, "volume %r: ConfigMap %r is not here" %
                         (v.get("name"), cm))
            pvc = (v.get("persistentVolumeClaim") or {}).get("claimName")
            if pvc is not None and \
                    self.r.get("PersistentVolumeClaim", pvc) is None:
                self.err(o, "volume %r: PersistentVolumeClaim %r is not "
                         "here" % (v.get("name"), pvc))
        self.check_affinity(o, pod)
        containers = [("container", c) for c in pod.get("containers") or []]
        containers += [("initContainer", c)
                       for c in pod.get("initContainers") or []]
        for what, c in containers:
            where = "%s %s %r" % (label, what, c.get("name"))
            for m in c.get("volumeMounts") or []:
                if m.get("name") not in volumes and m.get("name") not in claims:
                    self.err(o, "%s: volumeMount %r has no volume" %
                             (where, m.get("name")))
            self.check_container(o, where, c, volumes,
                                 is_init=(what == "initContainer"))

    def check_affinity(self, o, pod):
        # matchLabelKeys must not repeat a labelSelector key (API server
        # validation, invisible to the schema).
        terms = list(pod.get("topologySpreadConstraints") or [])
        aff = pod.get("affinity") or {}
        for kind in ("podAffinity", "podAntiAffinity"):
            a = aff.get(kind) or {}
            terms += a.get("requiredDuringSchedulingIgnoredDuringExecution") \
                or []
            terms += [w.get("podAffinityTerm") or {} for w in a.get(
                "preferredDuringSchedulingIgnoredDuringExecution") or []]
        for t in terms:
            sel = t.get("labelSelector") or {}
            keys = set((sel.get("matchLabels") or {}).keys()) | {
                e.get("key") for e in sel.get("matchExpressions") or []}
            both = keys & set(t.get("matchLabelKeys") or [])
            if both:
                self.err(o, "matchLabelKeys %s also in labelSelector" %
                         sorted(both))

    def check_container(self, o, where, c, volumes, is_init):
        ports = {p.get("containerPort") for p in c.get("ports") or []}
        port_names = {p.get("name") for p in c.get("ports") or []}
        env = [e.get("name") for e in c.get("env") or []]
        # Probes: ports must be this container's, gRPC services the ones
        # the processes serve.
        for probe_name in ("startupProbe", "livenessProbe", "readinessProbe"):
            probe = c.get(probe_name)
            if not probe:
                continue
            if "grpc" in probe:
                if probe["grpc"].get("port") not in ports:
                    self.err(o, "%s: %s gRPC port %s is not a container "
                             "port" % (where, probe_name,
                                       probe["grpc"].get("port")))
                if probe["grpc"].get("service", "") not in HEALTH_SERVICES:
                    self.err(o, "%s: %s asks for health service %r (served: "
                             "liveness, readiness)" %
                             (where, probe_name, probe["grpc"].get("service")))
            if "exec" in probe:
                self.check_exec_probe(o, where, probe_name, c, probe["exec"],
                                      ports, volumes, env)
            for k in ("httpGet", "tcpSocket"):
                if k in probe:
                    p = probe[k].get("port")
                    if p not in ports and p not in port_names:
                        self.err(o, "%s: %s port %r is not a container port"
                                 % (where, probe_name, p))
        # $(VAR) must be defined in env, or Kubernetes passes it literally.
        words = (c.get("command") or []) + (c.get("args") or [])
        for w in words:
            for var in re.findall(r"(?<!\$)\$\(([A-Za-z_][A-Za-z0-9_]*)\)",
                                  str(w)):
                if var not in env:
                    self.err(o, "%s: $(%s) is not in the container's env" %
                             (where, var))
        command = c.get("command") or []
        if not command:
            self.err(o, "%s: no command (the image has no entrypoint)" %
                     where)
            return
        binary = os.path.basename(command[0])
        if binary not in self.flags:
            self.err(o, "%s: unknown binary %r" % (where, binary))
            return
        self.check_flags(o, where, c, binary, words[1:], volumes, ports,
                         is_init)

    def check_exec_probe(self, o, where, probe_name, c, ex, ports, volumes,
                         env):
        """An exec probe runs `latentkv health` (directly, or as `sh -c
        "exec latentkv health ..."` to expand the pod's env) against one of
        this container's ports, with member credentials on a Secret."""
        argv = [str(a) for a in ex.get("command") or []]
        if argv[:2] == ["sh", "-c"] and len(argv) == 3:
            for var in re.findall(r"\$\{?([A-Za-z_][A-Za-z0-9_]*)", argv[2]):
                if var not in env:
                    self.err(o, "%s: %s uses $%s, not in the container's env"
                             % (where, probe_name, var))
            argv = shlex.split(argv[2])
            if argv[:1] == ["exec"]:
                argv = argv[1:]
        if argv[:2] != ["latentkv", "health"]:
            self.err(o, "%s: %s runs %r, not `latentkv health`" %
                     (where, probe_name, " ".join(argv[:2])))
            return
        flags = {}
        for a in argv[2:]:
            name, value = parse_flag(a, "latentkv")
            if not a.startswith("--") or name not in self.flags["latentkv"]:
                self.err(o, "%s: %s: latentkv has no flag %r" %
                         (where, probe_name, a))
            flags[name] = value or ""
        port = flags.get("server", "").rpartition(":")[2]
        if not port.isdigit() or int(port) not in ports:
            self.err(o, "%s: %s checks --server=%s, not a container port" %
                     (where, probe_name, flags.get("server")))
        if flags.get("service", "") not in HEALTH_SERVICES:
            self.err(o, "%s: %s asks for health service %r (served: "
                     "liveness, readiness)" %
                     (where, probe_name, flags.get("service")))
        for f in ("cluster_ca_file", "cluster_cert_file", "cluster_key_file"):
            path = flags.get(f)
            if not path:
                self.err(o, "%s: %s has no --%s (the port is mutual TLS)" %
                         (where, probe_name, f.replace("_", "-")))
            elif not self.on_secret(c, path, volumes):
                self.err(o, "%s: %s --%s=%s is not on a mounted Secret" %
                         (where, probe_name, f.replace("_", "-"), path))

    def on_secret(self, c, path, volumes):
        for m in c.get("volumeMounts") or []:
            mp = m.get("mountPath", "").rstrip("/")
            if path.startswith(mp + "/"):
                vol = volumes.get(m.get("name")) or {}
                if "secret" not in vol:
                    continue
                items = vol["secret"].get("items")
                key = path[len(mp) + 1:]
                if items is None or any(i.get("path") == key for i in items):
                    return True
        return False

    def check_flags(self, o, where, c, binary, args, volumes, ports,
                    is_init):
        known = self.flags[binary]
        effective = {}
        args = list(args)
        subcommands = BINARIES[binary].get("subcommands")
        if subcommands is not None:
            if not args or args[0] not in subcommands:
                self.err(o, "%s: %s needs a subcommand first (%s)" %
                         (where, binary, ", ".join(subcommands)))
                return
            args = args[1:]
        for a in args:
            a = str(a)
            if not a.startswith("--"):
                self.err(o, "%s: argument %r is not --flag=value" %
                         (where, a))
                continue
            name, value = parse_flag(a, binary)
            if name not in known:
                self.err(o, "%s: %s has no flag --%s" % (where, binary, name))
                continue
            if name == "flagfile":
                for path in (value or "").split(","):
                    for fname, fvalue in self.flagfile(o, where, c, path,
                                                       volumes, binary):
                        effective[fname] = fvalue
            else:
                effective[name] = value
        if is_init:
            return
        # Servers: their ports must be container ports; addresses must
        # name a Service port that exists.
        for f in PORT_FLAGS:
            v = effective.get(f)
            if v is None:
                continue
            if not v.isdigit() or int(v) == 0:
                self.err(o, "%s: --%s=%s is not a fixed port" % (where, f, v))
            elif int(v) not in ports:
                self.err(o, "%s: --%s=%s is not a container port" %
                         (where, f, v))
        if binary in ("latentkv-coordinator", "latentkv-worker",
                      "latentkv-kvstore") and effective.get("port") is None:
            self.err(o, "%s: no --port (0, the default, picks a random one)"
                     % where)
        adv = effective.get("advertise")
        if adv is not None and adv.rpartition(":")[2] != effective.get(
                "port"):
            self.err(o, "%s: --advertise=%s does not end in --port" %
                     (where, adv))
        for f in ADDRESS_FLAGS:
            v = effective.get(f)
            if v:
                self.check_address(o, where, f, v)
        if binary == "latentkv-worker":
            self.check_worker(o, where, effective)
        if binary in ("latentkv-coordinator", "latentkv-worker",
                      "latentkv-kvstore"):
            self.check_cluster_secret(o, where, c, effective, volumes)

    def check_cluster_secret(self, o, where, c, effective, volumes):
        """Servers carry the cluster credentials, from a mounted Secret: the
        secret and the member certificate of the mutual TLS on the internal
        ports, which the kubelet's gRPC probes then cannot reach."""
        for f, why in (("cluster_secret_file", "internal services would be "
                        "open"),
                       ("cluster_ca_file", "internal traffic would be "
                        "plaintext"),
                       ("cluster_cert_file", "internal traffic would be "
                        "plaintext"),
                       ("cluster_key_file", "internal traffic would be "
                        "plaintext")):
            path = effective.get(f)
            if not path:
                self.err(o, "%s: no --%s (%s)" % (where, f, why))
            elif not self.on_secret(c, path, volumes):
                self.err(o, "%s: --%s=%s is not on a mounted Secret volume"
                         % (where, f, path))
        internal = effective.get("internal_port" if effective.get(
            "internal_port") is not None else "port")
        if not effective.get("cluster_cert_file") or internal is None:
            return
        for probe_name in ("startupProbe", "livenessProbe", "readinessProbe"):
            g = (c.get(probe_name) or {}).get("grpc")
            if g and str(g.get("port")) == internal:
                self.err(o, "%s: %s is a gRPC probe on port %s, which is "
                         "mutual TLS (use an exec probe running `latentkv "
                         "health` with the member credentials)" %
                         (where, probe_name, internal))

    def flagfile(self, o, where, c, path, volumes, binary):
        """The (name, value) pairs of an absl flag file from a ConfigMap."""
        mount = None
        for m in c.get("volumeMounts") or []:
            mp = m.get("mountPath", "").rstrip("/")
            if path.startswith(mp + "/") and (
                    mount is None or len(mp) > len(mount.get("mountPath"))):
                mount = m
        if mount is None:
            self.err(o, "%s: --flagfile=%s is on no mounted volume" %
                     (where, path))
            return []
        vol = volumes.get(mount.get("name")) or {}
        cm_name = (vol.get("configMap") or {}).get("name")
        cm = self.r.get("ConfigMap", cm_name)
        if cm is None:
            self.err(o, "%s: --flagfile=%s is not in a ConfigMap here" %
                     (where, path))
            return []
        key = path[len(mount.get("mountPath").rstrip("/")) + 1:]
        text = (cm.get("data") or {}).get(key)
        if text is None:
            self.err(o, "%s: ConfigMap %s has no key %r (--flagfile=%s)" %
                     (where, cm_name, key, path))
            return []
        out = []
        for n, line in enumerate(text.splitlines(), 1):
            at = "%s:%d" % (key, n)
            stripped = line.strip()
            if not stripped or stripped.startswith("#"):
                continue
            # absl keeps everything after the '=' (trailing blanks and any
            # "# comment" included) and rejects lines not starting with '-'.
            if line != line.rstrip() or not re.match(
                    r"^--[A-Za-z0-9_-]+(=\S.*)?$", stripped) or " #" in line:
                self.err(o, "%s: %s: %r is not a clean --flag=value line" %
                         (where, at, line))
                continue
            name, value = parse_flag(stripped, binary)
            if name not in self.flags[binary]:
                self.err(o, "%s: %s: %s has no flag --%s" %
                         (where, at, binary, name))
                continue
            out.append((name, value))
        return out

    def check_address(self, o, where, flag, value):
        host, _, port = value.rpartition(":")
        labels = host.split(".")
        svc = self.r.get("Service", labels[0])
        if svc is None and len(labels) > 1:
            # <statefulset>-<ordinal>.<headless service>
            svc = self.r.get("Service", labels[1])
            sts_name, _, ordinal = labels[0].rpartition("-")
            sts = self.r.get("StatefulSet", sts_name) or {}
            replicas = (sts.get("spec") or {}).get("replicas", 1)
            if svc is not None and (
                    not ordinal.isdigit() or not isinstance(replicas, int) or
                    (sts.get("spec") or {}).get("serviceName") != labels[1] or
                    int(ordinal) >= replicas):
                self.err(o, "%s: --%s=%s: no such StatefulSet pod" %
                         (where, flag, value))
                return
        if svc is None:
            self.err(o, "%s: --%s=%s names no Service here" %
                     (where, flag, value))
            return
        svc_ports = {p.get("port") for p in (svc.get("spec") or {}).get(
            "ports") or []}
        if not port.isdigit() or int(port) not in svc_ports:
            self.err(o, "%s: --%s=%s: Service %s has no port %s" %
                     (where, flag, value, name_of(svc), port))

    def check_worker(self, o, where, flags):
        tp = int(flags.get("tp_size") or 1)
        if o.get("kind") == "LeaderWorkerSet":
            size = ((o.get("spec") or {}).get("leaderWorkerTemplate")
                    or {}).get("size", 1)
            if size != tp:
                self.err(o, "%s: --tp_size=%d but leaderWorkerTemplate.size "
                         "is %s" % (where, tp, size))
            for f in ("tp_rank", "tp_rendezvous", "tp_group"):
                if tp > 1 and not flags.get(f):
                    self.err(o, "%s: tensor-parallel worker without --%s" %
                             (where, f))
            if flags.get("host") in ("0.0.0.0", "::", "[::]"):
                self.err(o, "%s: --host is what Gloo advertises to the other "
                         "ranks: use the pod IP, not %s" %
                         (where, flags["host"]))
        elif tp != 1:
            self.err(o, "%s: --tp_size=%d outside a LeaderWorkerSet" %
                     (where, tp))

    # -- services and selectors

    def check_selects_pods(self, o, selector, what):
        if not selector or not (selector.get("matchLabels") or
                                selector.get("matchExpressions")):
            self.err(o, "%s is empty" % what)
            return []
        found = self.r.templates_matching(selector)
        if not found:
            self.err(o, "%s %s matches no pod template" %
                     (what, json.dumps(selector, sort_keys=True)))
        return found

    def check_service(self, o):
        spec = o.get("spec") or {}
        sel = spec.get("selector")
        if not sel:
            self.err(o, "Service without a selector")
            return
        found = self.check_selects_pods(o, {"matchLabels": sel}, "selector")
        if not found:
            return
        names, numbers = set(), set()
        for _, _, t in found:
            for c in (t.get("spec") or {}).get("containers") or []:
                for p in c.get("ports") or []:
                    names.add(p.get("name"))
                    numbers.add(p.get("containerPort"))
        for p in spec.get("ports") or []:
            target = p.get("targetPort", p.get("port"))
            if target not in names and target not in numbers:
                self.err(o, "port %r: targetPort %r is no container port of "
                         "the selected pods" % (p.get("name"), target))

    def check_servicemonitor(self, o):
        spec = o.get("spec") or {}
        sel = spec.get("selector") or {}
        services = [s for s in self.r.by_kind.get("Service", {}).values()
                    if selector_matches(sel, (s.get("metadata") or {}).get(
                        "labels") or {})]
        if not services:
            self.err(o, "selector matches no Service")
            return
        port_names = {p.get("name") for s in services
                      for p in (s.get("spec") or {}).get("ports") or []}
        for ep in spec.get("endpoints") or []:
            if ep.get("port") and ep["port"] not in port_names:
                self.err(o, "endpoint port %r is not a port of the selected "
                         "Services" % ep["port"])

    def check_networkpolicy(self, o):
        spec = o.get("spec") or {}
        sel = spec.get("podSelector") or {}
        if sel.get("matchLabels") or sel.get("matchExpressions"):
            self.check_selects_pods(o, sel, "podSelector")
        for rule in spec.get("ingress") or []:
            for peer in rule.get("from") or []:
                ps = peer.get("podSelector")
                # A peer selecting our own pods (no namespaceSelector) must
                # select some; client labels select pods outside this render.
                if ps and "namespaceSelector" not in peer and \
                        "app.kubernetes.io/component" in (
                            ps.get("matchLabels") or {}):
                    self.check_selects_pods(o, ps, "ingress podSelector")

    def check_scale_target(self, o, ref, default_kind=None):
        kind = ref.get("kind") or default_kind
        if self.r.get(kind, ref.get("name")) is None:
            self.err(o, "scale target %s/%s is not here" %
                     (kind, ref.get("name")))

    def check_ingress(self, o):
        for rule in (o.get("spec") or {}).get("rules") or []:
            for p in (rule.get("http") or {}).get("paths") or []:
                svc = (p.get("backend") or {}).get("service") or {}
                s = self.r.get("Service", svc.get("name"))
                if s is None:
                    self.err(o, "backend Service %r is not here" %
                             svc.get("name"))
                    continue
                port = svc.get("port") or {}
                ok = any(port.get("name") == sp.get("name") if "name" in port
                         else port.get("number") == sp.get("port")
                         for sp in (s.get("spec") or {}).get("ports") or [])
                if not ok:
                    self.err(o, "backend port %s is not a port of %s" %
                             (json.dumps(port), name_of(s)))


# ---------------------------------------------------------- the self-test

NEGATIVE_CASES = [
    # (what must be caught, render to break, kind, name, how)
    ("an unknown field in a built-in object",
     "base", "Deployment", "latentkv-coordinator",
     lambda o: o["spec"]["template"]["spec"].__setitem__(
         "restartPolicyy", "Always")),
    ("a wrong type in a built-in object",
     "base", "StatefulSet", "latentkv-kvstore",
     lambda o: o["spec"].__setitem__("replicas", "one")),
    ("an unknown field in a ServiceMonitor (CRD)",
     "base", "ServiceMonitor", "latentkv-worker",
     lambda o: o["spec"]["endpoints"][0].__setitem__("portt", "metrics")),
    ("a bad duration in a ServiceMonitor (CRD)",
     "base", "ServiceMonitor", "latentkv-coordinator",
     lambda o: o["spec"]["endpoints"][0].__setitem__(
         "interval", "5 seconds")),
    ("an unknown field inside a LeaderWorkerSet pod template (CRD)",
     "overlays/tensor-parallel", "LeaderWorkerSet", "latentkv-worker-tp",
     lambda o: o["spec"]["leaderWorkerTemplate"]["workerTemplate"]["spec"][
         "containers"][0].__setitem__("imagee", "x")),
    ("a bad enum in a LeaderWorkerSet (CRD)",
     "overlays/tensor-parallel", "LeaderWorkerSet", "latentkv-worker-tp",
     lambda o: o["spec"].__setitem__("startupPolicy", "LeaderMaybe")),
    ("a ScaledObject without triggers (CRD)",
     "overlays/keda", "ScaledObject", "latentkv-worker",
     lambda o: o["spec"].pop("triggers")),
    ("an unknown flag in container args",
     "base", "Deployment", "latentkv-coordinator",
     lambda o: o["spec"]["template"]["spec"]["containers"][0][
         "args"].append("--no_such_flag=1")),
    ("a server without the cluster credential",
     "base", "ConfigMap", None,
     lambda o: o["data"].__setitem__(
         "kvstore.flags", o["data"]["kvstore.flags"].replace(
             "--cluster_secret_file", "--nocluster_secret_file_x"))),
    ("a server without the cluster's mutual TLS",
     "base", "ConfigMap", None,
     lambda o: o["data"].__setitem__(
         "kvstore.flags", o["data"]["kvstore.flags"].replace(
             "--cluster_cert_file", "--nocluster_cert_file_x"))),
    ("a gRPC probe on a mutual-TLS port",
     "base", "StatefulSet", "latentkv-kvstore",
     lambda o: o["spec"]["template"]["spec"]["containers"][0].__setitem__(
         "readinessProbe", {"grpc": {"port": 50071, "service": "readiness"}})),
    ("an exec probe without the member certificate",
     "base", "StatefulSet", "latentkv-worker-mixed",
     lambda o: o["spec"]["template"]["spec"]["containers"][0][
         "livenessProbe"]["exec"].__setitem__(
             "command", [a for a in o["spec"]["template"]["spec"][
                 "containers"][0]["livenessProbe"]["exec"]["command"]
                 if "cert-file" not in a])),
    ("an exec probe on a port the container does not expose",
     "overlays/tensor-parallel", "LeaderWorkerSet", "latentkv-worker-tp",
     lambda o: o["spec"]["leaderWorkerTemplate"]["workerTemplate"]["spec"][
         "containers"][0]["readinessProbe"]["exec"]["command"].__setitem__(
             2, o["spec"]["leaderWorkerTemplate"]["workerTemplate"]["spec"][
                 "containers"][0]["readinessProbe"]["exec"]["command"][
                     2].replace(":50061", ":50062"))),
    ("the cluster credential on no Secret volume",
     "base", "Deployment", "latentkv-coordinator",
     lambda o: o["spec"]["template"]["spec"]["volumes"].__setitem__(
         -1, {"name": "cluster-credential", "emptyDir": {}})),
    ("an unknown flag in a flag file",
     "base", "ConfigMap", None,
     lambda o: o["data"].__setitem__(
         "worker.flags", o["data"]["worker.flags"] + "--no_such_flag=1\n")),
    ("a gRPC probe on a port the container does not expose",
     "base", "Deployment", "latentkv-coordinator",
     lambda o: o["spec"]["template"]["spec"]["containers"][0][
         "readinessProbe"]["grpc"].__setitem__("port", 50059)),
    ("a Service selecting no pods",
     "base", "Service", "latentkv-coordinator",
     lambda o: o["spec"]["selector"].__setitem__(
         "app.kubernetes.io/component", "nothing")),
    ("an undefined $(VAR) in args",
     "base", "StatefulSet", "latentkv-worker-mixed",
     lambda o: o["spec"]["template"]["spec"]["containers"][0][
         "args"].append("--worker_id=$(NO_SUCH_VAR)")),
    ("a tensor-parallel size that differs from the group size",
     "overlays/tensor-parallel", "LeaderWorkerSet", "latentkv-worker-tp",
     lambda o: o["spec"]["leaderWorkerTemplate"].__setitem__("size", 3)),
]


def self_test(renders, flags, schemas):
    """Each negative case must add errors to the render it breaks."""
    failures = []
    baselines = {}
    for what, target, kind, name, mutate in NEGATIVE_CASES:
        if target not in renders:
            failures.append("self-test: %s did not render (%s)" %
                            (target, what))
            continue
        if target not in baselines:
            baselines[target] = set(
                Checker(Render(renders[target]), flags, schemas).run())
        objs = copy.deepcopy(renders[target])
        victim = next((o for o in objs if o.get("kind") == kind and (
            name is None or o["metadata"]["name"] == name)), None)
        if victim is None:
            failures.append("self-test: no %s/%s in %s to break (%s)" %
                            (kind, name, target, what))
            continue
        mutate(victim)
        errors = set(Checker(Render(objs), flags, schemas).run())
        if not errors - baselines[target]:
            failures.append("self-test: %s was accepted" % what)
    return failures


# ------------------------------------------------------------------- main


def render(kubectl, path):
    out = subprocess.run([kubectl, "kustomize", path], capture_output=True,
                         text=True)
    if out.returncode != 0:
        raise RuntimeError(out.stderr.strip() or "kubectl kustomize failed")
    return [d for d in yaml.safe_load_all(out.stdout) if d]


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--root", required=True)
    ap.add_argument("--kubectl", required=True)
    ap.add_argument("--schemas", required=True,
                    help="Kubernetes JSON schema directory (1.32 strict)")
    ap.add_argument("--dump", help="write each render here (debugging)")
    args = ap.parse_args()
    warnings.simplefilter("ignore", DeprecationWarning)
    start = time.monotonic()
    k8s = os.path.join(args.root, "deploy", "k8s")
    flags = defined_flags(args.root)
    schemas = Schemas(args.schemas, os.path.join(k8s, "schemas"))

    targets = ["base"] + sorted(
        "overlays/" + d for d in os.listdir(os.path.join(k8s, "overlays"))
        if os.path.exists(os.path.join(k8s, "overlays", d,
                                       "kustomization.yaml")))
    failed = 0
    checked = len(targets)
    renders = {}
    for t in targets:
        try:
            objs = render(args.kubectl, os.path.join(k8s, t))
        except RuntimeError as e:
            print("FAIL %s: kustomize: %s" % (t, e))
            failed += 1
            continue
        renders[t] = objs
        if args.dump:
            os.makedirs(args.dump, exist_ok=True)
            with open(os.path.join(args.dump, t.replace("/", "_") + ".yaml"),
                      "w") as f:
                yaml.safe_dump_all(objs, f, sort_keys=False)
        errors = Checker(Render(objs), flags, schemas).run()
        kinds = sorted({o["kind"] for o in objs})
        if errors:
            failed += 1
            print("FAIL %s (%d objects): %d problems" %
                  (t, len(objs), len(errors)))
            for e in errors:
                print("  " + e)
        else:
            print("ok   %s: %d objects (%s)" % (t, len(objs),
                                                 ", ".join(kinds)))

    # Standalone manifests, checked beside the base they refer to.
    extras = os.path.join(k8s, "extras")
    if "base" in renders and os.path.isdir(extras):
        for name in sorted(os.listdir(extras)):
            if not name.endswith(".yaml"):
                continue
            checked += 1
            with open(os.path.join(extras, name)) as f:
                docs = [d for d in yaml.safe_load_all(f) if d]
            checker = Checker(Render(renders["base"] + docs), flags, schemas)
            errors = [e for e in checker.run()
                      if any(e.startswith(name_of(d) + ":") for d in docs)]
            if errors:
                failed += 1
                print("FAIL extras/%s: %d problems" % (name, len(errors)))
                for e in errors:
                    print("  " + e)
            else:
                print("ok   extras/%s: %d objects" % (name, len(docs)))

    # The checks must reject known-bad objects (CRDs included).
    checked += 1
    problems = self_test(renders, flags, schemas)
    if problems:
        failed += 1
        for p in problems:
            print("FAIL " + p)
    else:
        print("ok   self-test: %d known-bad variants rejected" %
              len(NEGATIVE_CASES))

    print("deploy manifests: %d passed, %d failed (%.1f s)" %
          (checked - failed, failed, time.monotonic() - start))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
