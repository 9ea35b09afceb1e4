"""deploy/istio's manifests against Istio 1.30.3's published CRD schemas.

No Istio (and no Kubernetes API server) runs here. The schemas below were written
from the OpenAPI v3 schemas in istio/api 1.30.3 `kubernetes/customresourcedefinitions.gen.yaml`
(WasmPlugin extensions.istio.io/v1alpha1, RequestAuthentication security.istio.io/v1,
EnvoyFilter networking.istio.io/v1alpha3): every field of the spec each kind has
(names, types, enums, required members, patterns, lengths, bounds) is here, each
nested object only as deep as these manifests use it (deeper objects are accepted
as objects). What the API server's CEL rules check is written as plain functions
for the rules that touch fields we use. A field the schema does not have is an
error, as `kubectl apply` (strict field validation) reports it. Not checked:
`status`, and the CEL rules on fields we do not use.
"""

from __future__ import annotations

import copy
import json
import re
import subprocess
from pathlib import Path
from typing import Any, Callable

import pytest
import yaml

import harness

DEPLOY = harness.REPO / "deploy" / "istio"
CLI = harness.REPO / "target" / "release" / "mcp-firewall"

S = {"type": "string"}
B = {"type": "boolean"}
ANY_OBJECT = {"type": "object", "x-kubernetes-preserve-unknown-fields": True}


def obj(props: dict[str, Any], required: tuple[str, ...] = ()) -> dict[str, Any]:
    return {"type": "object", "properties": props, "required": list(required)}


def arr(items: dict[str, Any], **kw: Any) -> dict[str, Any]:
    return {"type": "array", "items": items, **kw}


def enum(*values: str) -> dict[str, Any]:
    return {"type": "string", "enum": list(values)}


LABELS = {"type": "object", "additionalProperties": {"type": "string", "maxLength": 63}, "maxProperties": 4096}
SELECTOR = obj({"matchLabels": LABELS})
TARGET_REF = obj({
    "group": {"type": "string", "maxLength": 253,
              "pattern": r"^$|^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$"},
    "kind": {"type": "string", "minLength": 1, "maxLength": 63, "pattern": r"^[a-zA-Z]([-a-zA-Z0-9]*[a-zA-Z0-9])?$"},
    "name": {"type": "string", "minLength": 1, "maxLength": 253},
    "namespace": S,
}, required=("kind", "name"))

WASM_PLUGIN_SPEC = obj({
    "failStrategy": enum("FAIL_CLOSE", "FAIL_OPEN", "FAIL_RELOAD"),
    "imagePullPolicy": enum("UNSPECIFIED_POLICY", "IfNotPresent", "Always"),
    "imagePullSecret": {"type": "string", "minLength": 1, "maxLength": 253},
    "match": arr(obj({
        "mode": enum("UNDEFINED", "CLIENT", "SERVER", "CLIENT_AND_SERVER"),
        "ports": arr(obj({"number": {"type": "integer", "minimum": 1, "maximum": 65535}}, required=("number",))),
    })),
    "phase": enum("UNSPECIFIED_PHASE", "AUTHN", "AUTHZ", "STATS"),
    "pluginConfig": ANY_OBJECT,
    "pluginName": {"type": "string", "minLength": 1, "maxLength": 256},
    "priority": {"type": "integer", "format": "int32", "nullable": True},
    "selector": SELECTOR,
    "sha256": {"type": "string", "pattern": r"(^$|^[a-f0-9]{64}$)"},
    "targetRef": TARGET_REF,
    "targetRefs": arr(TARGET_REF, maxItems=16),
    "type": enum("UNSPECIFIED_PLUGIN_TYPE", "HTTP", "NETWORK"),
    "url": {"type": "string", "minLength": 1},
    "verificationKey": S,
    "vmConfig": obj({"env": arr(obj({
        "name": {"type": "string", "minLength": 1, "maxLength": 256},
        "value": {"type": "string", "maxLength": 2048},
        "valueFrom": enum("INLINE", "HOST"),
    }, required=("name",)), maxItems=256)}),
}, required=("url",))

JWT_RULE = obj({
    "audiences": arr({"type": "string", "minLength": 1}),
    "forwardOriginalToken": B,
    "fromCookies": arr({"type": "string", "minLength": 1}),
    "fromHeaders": arr(obj({"name": {"type": "string", "minLength": 1}, "prefix": S}, required=("name",))),
    "fromParams": arr({"type": "string", "minLength": 1}),
    "issuer": {"type": "string", "minLength": 1},
    "jwks": S,
    "jwksUri": {"type": "string", "minLength": 1, "maxLength": 2048},
    "jwks_uri": {"type": "string", "minLength": 1, "maxLength": 2048},
    "outputClaimToHeaders": arr(obj({
        "claim": {"type": "string", "minLength": 1},
        "header": {"type": "string", "minLength": 1, "pattern": r"^[-_A-Za-z0-9]+$"},
    }, required=("header", "claim"))),
    "outputPayloadToHeader": S,
    "spaceDelimitedClaims": arr({"type": "string", "minLength": 1}, maxItems=64),
    "timeout": S,
})
REQUEST_AUTHENTICATION_SPEC = obj({
    "jwtRules": arr(JWT_RULE, maxItems=4096),
    "selector": SELECTOR,
    "targetRef": TARGET_REF,
    "targetRefs": arr(TARGET_REF, maxItems=16),
})

ENVOY_FILTER_SPEC = obj({
    "configPatches": arr(obj({
        "applyTo": enum("INVALID", "LISTENER", "FILTER_CHAIN", "NETWORK_FILTER", "HTTP_FILTER",
                        "ROUTE_CONFIGURATION", "VIRTUAL_HOST", "HTTP_ROUTE", "CLUSTER", "EXTENSION_CONFIG",
                        "BOOTSTRAP", "LISTENER_FILTER"),
        "match": obj({
            "cluster": {"type": "object"},
            "context": enum("ANY", "SIDECAR_INBOUND", "SIDECAR_OUTBOUND", "GATEWAY", "WAYPOINT"),
            "listener": obj({
                "filterChain": obj({
                    "applicationProtocols": S, "destinationPort": {"type": "integer"},
                    "filter": obj({"name": S, "subFilter": obj({"name": S})}),
                    "name": S, "sni": S, "transportProtocol": S,
                }),
                "listenerFilter": S, "name": S, "portName": S, "portNumber": {"type": "integer"},
            }),
            "proxy": {"type": "object"},
            "routeConfiguration": {"type": "object"},
            "waypoint": {"type": "object"},
        }),
        "patch": obj({
            "filterClass": enum("UNSPECIFIED", "AUTHN", "AUTHZ", "STATS"),
            "operation": enum("INVALID", "MERGE", "ADD", "REMOVE", "INSERT_BEFORE", "INSERT_AFTER",
                              "INSERT_FIRST", "REPLACE"),
            "value": ANY_OBJECT,
        }),
    })),
    "priority": {"type": "integer", "format": "int32"},
    "targetRefs": arr(TARGET_REF),
    "workloadSelector": obj({"labels": {"type": "object", "additionalProperties": S}}),
})


def url_scheme_ok(url: str) -> bool:
    """WasmPlugin.url's CEL rule: scheme one of "", http, https, oci, file."""
    m = re.match(r"^([a-zA-Z][a-zA-Z0-9+.-]*)://", url)
    return (m.group(1) if m else "") in ("", "http", "https", "oci", "file")


def one_attachment(spec: dict[str, Any]) -> bool:
    """CEL: at most one of selector, targetRef, targetRefs."""
    return sum(k in spec for k in ("selector", "targetRef", "targetRefs")) <= 1


def wasm_plugin_rules(spec: dict[str, Any], path: str) -> list[str]:
    errs = []
    if isinstance(spec.get("url"), str) and not url_scheme_ok(spec["url"]):
        errs.append(f"{path}.url: url must have schema one of [http, https, file, oci]")
    if not one_attachment(spec):
        errs.append(f"{path}: only one of targetRefs or selector can be set")
    return errs


def request_authentication_rules(spec: dict[str, Any], path: str) -> list[str]:
    errs = [] if one_attachment(spec) else [f"{path}: only one of targetRefs or selector can be set"]
    for i, rule in enumerate(spec.get("jwtRules") or []):
        if sum(k in rule for k in ("jwks", "jwksUri", "jwks_uri")) > 1:
            errs.append(f"{path}.jwtRules[{i}]: only one of jwks or jwksUri can be set")
        for key in ("jwksUri", "jwks_uri"):
            if isinstance(rule.get(key), str) and not re.match(r"^https?://", rule[key]):
                errs.append(f"{path}.jwtRules[{i}].{key}: url must have scheme http:// or https://")
    return errs


KINDS: dict[tuple[str, str], tuple[dict[str, Any], Callable[[dict[str, Any], str], list[str]]]] = {
    ("extensions.istio.io/v1alpha1", "WasmPlugin"): (WASM_PLUGIN_SPEC, wasm_plugin_rules),
    ("security.istio.io/v1", "RequestAuthentication"): (REQUEST_AUTHENTICATION_SPEC, request_authentication_rules),
    ("security.istio.io/v1beta1", "RequestAuthentication"): (REQUEST_AUTHENTICATION_SPEC,
                                                             request_authentication_rules),
    ("networking.istio.io/v1alpha3", "EnvoyFilter"): (ENVOY_FILTER_SPEC, lambda spec, path: []),
}
JSON_TYPES = {"object": dict, "array": list, "string": str, "boolean": bool}


def validate(v: Any, schema: dict[str, Any], path: str) -> list[str]:
    t = schema.get("type")
    if v is None and schema.get("nullable"):
        return []
    if t == "integer":
        if isinstance(v, bool) or not isinstance(v, int):
            return [f"{path}: expected integer, got {type(v).__name__}"]
    elif t is not None and not isinstance(v, JSON_TYPES[t]):
        return [f"{path}: expected {t}, got {type(v).__name__}"]
    errs: list[str] = []
    if "enum" in schema and v not in schema["enum"]:
        errs.append(f"{path}: unsupported value {v!r}: supported values: {schema['enum']}")
    if isinstance(v, str):
        if len(v) < schema.get("minLength", 0) or len(v) > schema.get("maxLength", len(v)):
            errs.append(f"{path}: length {len(v)} out of bounds")
        if "pattern" in schema and not re.search(schema["pattern"], v):
            errs.append(f"{path}: does not match {schema['pattern']!r}")
    if isinstance(v, int) and not isinstance(v, bool):
        if v < schema.get("minimum", v) or v > schema.get("maximum", v):
            errs.append(f"{path}: {v} out of bounds")
        if schema.get("format") == "int32" and not -2**31 <= v < 2**31:
            errs.append(f"{path}: not an int32")
    if isinstance(v, list):
        if len(v) > schema.get("maxItems", len(v)):
            errs.append(f"{path}: more than {schema['maxItems']} items")
        for i, x in enumerate(v):
            errs += validate(x, schema["items"], f"{path}[{i}]")
    if isinstance(v, dict):
        if schema.get("x-kubernetes-preserve-unknown-fields"):
            return errs
        for req in schema.get("required", []):
            if req not in v:
                errs.append(f"{path}.{req}: Required value")
        if len(v) > schema.get("maxProperties", len(v)):
            errs.append(f"{path}: too many properties")
        props, extra = schema.get("properties"), schema.get("additionalProperties")
        for k, x in v.items():
            if props is not None and k in props:
                errs += validate(x, props[k], f"{path}.{k}")
            elif extra is not None:
                errs += validate(x, extra, f"{path}.{k}")
            elif props is not None:
                errs.append(f"{path}.{k}: unknown field")
    return errs


def validate_manifest(doc: dict[str, Any]) -> list[str]:
    key = (doc.get("apiVersion"), doc.get("kind"))
    if key not in KINDS:
        return [f"no served CRD version for {key}"]
    spec_schema, rules = KINDS[key]
    errs = validate(doc, obj({"apiVersion": S, "kind": S, "metadata": ANY_OBJECT, "spec": spec_schema},
                             required=("apiVersion", "kind", "metadata", "spec")), "")
    meta = doc.get("metadata") or {}
    if not re.fullmatch(r"[a-z0-9]([-a-z0-9.]*[a-z0-9])?", str(meta.get("name", ""))):
        errs.append(".metadata.name: not a DNS-1123 subdomain")
    if isinstance(doc.get("spec"), dict):
        errs += rules(doc["spec"], ".spec")
    return errs


def manifests() -> dict[str, dict[str, Any]]:
    return {p.name: yaml.safe_load(p.read_text()) for p in sorted(DEPLOY.glob("*.yaml"))}


def test_every_manifest_validates_against_its_crd_schema() -> None:
    docs = manifests()
    assert set(docs) == {"wasmplugin.yaml", "requestauthentication.yaml", "envoyfilter-strip-jwt-payload.yaml"}
    for name, doc in docs.items():
        assert validate_manifest(doc) == [], name


def with_change(name: str, change: Callable[[dict[str, Any]], None]) -> dict[str, Any]:
    doc = copy.deepcopy(manifests()[name])
    change(doc)
    return doc


def setter(path: list[Any], value: Any) -> Callable[[dict[str, Any]], None]:
    def apply(doc: dict[str, Any]) -> None:
        node = doc
        for k in path[:-1]:
            node = node[k]
        node[path[-1]] = value
    return apply


def rename(path: list[Any], new: str) -> Callable[[dict[str, Any]], None]:
    def apply(doc: dict[str, Any]) -> None:
        node = doc
        for k in path[:-1]:
            node = node[k]
        node[new] = node.pop(path[-1])
    return apply


WP, RA, EF = "wasmplugin.yaml", "requestauthentication.yaml", "envoyfilter-strip-jwt-payload.yaml"
NEGATIVE = [
    ("misspelled_fail_strategy", WP, rename(["spec", "failStrategy"], "failstrategy"), ".spec.failstrategy"),
    ("fail_closed_is_envoys_word_not_istios", WP, setter(["spec", "failStrategy"], "FAIL_CLOSED"),
     ".spec.failStrategy"),
    ("unknown_phase", WP, setter(["spec", "phase"], "AUTHORIZATION"), ".spec.phase"),
    ("sha256_with_prefix", WP, setter(["spec", "sha256"], "sha256:" + "a" * 64), ".spec.sha256"),
    ("port_zero", WP, setter(["spec", "match", 0, "ports", 0, "number"], 0), ".spec.match[0].ports[0].number"),
    ("port_as_string", WP, setter(["spec", "match", 0, "ports", 0, "number"], "3001"),
     ".spec.match[0].ports[0].number"),
    ("mode_lower_case", WP, setter(["spec", "match", 0, "mode"], "server"), ".spec.match[0].mode"),
    ("url_missing", WP, lambda d: d["spec"].pop("url"), ".spec.url"),
    ("url_scheme", WP, setter(["spec", "url"], "ftp://example.com/x.wasm"), ".spec.url"),
    ("selector_and_target_ref", WP, setter(["spec", "targetRef"], {"kind": "Gateway", "name": "gw"}), ".spec"),
    ("old_api_version", WP, setter(["apiVersion"], "extensions.istio.io/v1beta1"), "no served CRD version"),
    ("payload_header_as_list", RA, setter(["spec", "jwtRules", 0, "outputPayloadToHeader"], ["x"]),
     ".spec.jwtRules[0].outputPayloadToHeader"),
    ("misspelled_output_payload", RA, rename(["spec", "jwtRules", 0, "outputPayloadToHeader"],
                                             "outputPayloadHeader"), ".spec.jwtRules[0].outputPayloadHeader"),
    ("jwks_and_jwks_uri", RA, setter(["spec", "jwtRules", 0, "jwks"], "{}"), ".spec.jwtRules[0]"),
    ("forward_token_as_string", RA, setter(["spec", "jwtRules", 0, "forwardOriginalToken"], "false"),
     ".spec.jwtRules[0].forwardOriginalToken"),
    ("unknown_operation", EF, setter(["spec", "configPatches", 0, "patch", "operation"], "INSERT_START"),
     ".spec.configPatches[0].patch.operation"),
    ("unknown_context", EF, setter(["spec", "configPatches", 0, "match", "context"], "INBOUND"),
     ".spec.configPatches[0].match.context"),
    ("misspelled_workload_selector", EF, rename(["spec", "workloadSelector"], "workloadselector"),
     ".spec.workloadselector"),
]


@pytest.mark.parametrize("name,file,change,where", NEGATIVE, ids=[c[0] for c in NEGATIVE])
def test_the_check_catches(name: str, file: str, change: Callable[[dict[str, Any]], None], where: str) -> None:
    errs = validate_manifest(with_change(file, change))
    assert any(e.startswith(where) for e in errs), errs


def test_the_manifests_agree_with_each_other_and_the_policy_compiles(tmp_path: Path) -> None:
    docs = manifests()
    wp, ra, ef = docs[WP]["spec"], docs[RA]["spec"], docs[EF]["spec"]
    policy = wp["pluginConfig"]
    header = policy["identity"]["jwt_payload_header"]
    assert [r["outputPayloadToHeader"] for r in ra["jwtRules"]] == [header]
    patch = ef["configPatches"][0]
    assert patch["applyTo"] == "HTTP_FILTER" and patch["patch"]["operation"] == "INSERT_FIRST"
    removed = patch["patch"]["value"]["typed_config"]["mutations"]["request_mutations"]
    assert {"remove": header} in removed
    assert wp["selector"]["matchLabels"] == ra["selector"]["matchLabels"] == ef["workloadSelector"]["labels"]
    assert [p["number"] for m in wp["match"] for p in m["ports"]] == [patch["match"]["listener"]["portNumber"]]
    assert wp["failStrategy"] == "FAIL_CLOSE" and wp["phase"] == "AUTHZ"
    # Istio cannot set allow_on_headers_stop_iteration: the policy must say so.
    assert policy["envoy"] == {"allow_on_headers_stop_iteration": False}
    if not CLI.exists():
        pytest.fail(f"{CLI} is missing: scripts/test.sh builds it")
    src = tmp_path / "pluginConfig.json"
    src.write_text(json.dumps(policy))
    out = subprocess.run([str(CLI), "check", str(src)], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stdout + out.stderr
