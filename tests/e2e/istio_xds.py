"""What istiod (Istio 1.30.3) sends Envoy for a WasmPlugin, rebuilt in Python.

Read from Istio 1.30.3's source (no Istio runs here):

* pilot/pkg/config/kube/extensions/translate.go: a WasmPlugin `<ns>/<name>` becomes
  a synthetic TrafficExtension named `<name>~istio-translated-wasmplugin`.
* pilot/pkg/model/extensions.go (buildWasmConfig, buildVMConfig, buildDataSource)
  and pilot/pkg/networking/core/extension/extensionfilter.go
  (InsertedTrafficExtensionConfigurations): the ECDS resource is a
  TypedExtensionConfig named `extensions.istio.io/trafficextension/<ns>.<name>~...`,
  typed_config `envoy.extensions.filters.http.wasm.v3.Wasm` whose PluginConfig has
  name `<ns>.<name>~...`, root_id = `pluginName`, no vm_id, runtime
  `envoy.wasm.runtime.v8`, code = a remote data source (`oci://`, `http(s)://`) with
  `sha256`, or a local file for `file://`; configuration = `StringValue` holding
  `protomarshal.ToJSON(pluginConfig)`; FAIL_CLOSE -> `failure_policy: FAIL_CLOSED`
  (FAIL_OPEN -> FAIL_OPEN, FAIL_RELOAD -> FAIL_RELOAD). Nothing sets
  `allow_on_headers_stop_iteration`.
* pkg/wasm/convert.go (istio-agent, in the pod): before Envoy sees the resource the
  agent fetches the module and rewrites `code` to a local file, and strips the
  ISTIO_META_* environment variables (leaving none here).
* protomarshal.ToJSON is github.com/golang/protobuf v1.5.4 `jsonpb.Marshaler{}` (no
  indent): a Struct is a map, written with its keys sorted; each Value is written by
  Go's encoding/json: a double in 'f' form with the fewest digits that read back
  (100 -> `100`, 1000000 -> `1000000`), switching to exponent form below 1e-6 and
  from 1e21 (`1e+21`, `1e-7`); strings with `<`, `>`, `&`, U+2028 and U+2029 as
  `\\u` escapes.
* Before that, the YAML a user applied is JSON in the API server and a
  `google.protobuf.Struct` in istiod: every number is a double.
"""

from __future__ import annotations

import json
import math
import random
from decimal import Decimal
from typing import Any

ISTIO_VERSION = "1.30.3"
WASM_TYPE = "type.googleapis.com/envoy.extensions.filters.http.wasm.v3.Wasm"
RBAC_TYPE = "type.googleapis.com/envoy.extensions.filters.http.rbac.v3.RBAC"
SYNTHETIC_MARKER = "~istio-translated-wasmplugin"
FAILURE_POLICY = {"FAIL_CLOSE": "FAIL_CLOSED", "FAIL_OPEN": "FAIL_OPEN", "FAIL_RELOAD": "FAIL_RELOAD"}


def resource_name(namespace: str, name: str) -> str:
    return f"extensions.istio.io/trafficextension/{namespace}.{name}{SYNTHETIC_MARKER}"


def to_struct(v: Any) -> Any:
    """YAML/JSON value -> google.protobuf.Struct/Value: every number a double."""
    if isinstance(v, bool) or v is None or isinstance(v, str):
        return v
    if isinstance(v, (int, float)):
        return float(v)
    if isinstance(v, list):
        return [to_struct(x) for x in v]
    if isinstance(v, dict):
        return {k: to_struct(x) for k, x in v.items()}
    raise TypeError(f"not a JSON value: {v!r}")


def go_float(f: float) -> str:
    """Go encoding/json's float64 text (encode.go floatEncoder)."""
    if math.isnan(f) or math.isinf(f):
        raise ValueError("jsonpb writes NaN/Infinity as strings; a policy has none")
    a = abs(f)
    if a != 0 and (a < 1e-6 or a >= 1e21):
        s = repr(f)  # shortest round-trip digits, exponent form here
        mant, _, exp = s.partition("e")
        sign, digits = exp[0], exp[1:].lstrip("0") or "0"
        return f"{mant}e{sign}{digits}"
    return format(Decimal(repr(f)).normalize(), "f")


_GO_ESCAPES = {'"': '\\"', "\\": "\\\\", "\n": "\\n", "\r": "\\r", "\t": "\\t", "\b": "\\b", "\f": "\\f",
               "<": "\\u003c", ">": "\\u003e", "&": "\\u0026", "\u2028": "\\u2028", "\u2029": "\\u2029"}


def go_string(s: str) -> str:
    """Go encoding/json string text (HTML-escaping on, as json.Marshal has it)."""
    out = ['"']
    for ch in s:
        if ch in _GO_ESCAPES:
            out.append(_GO_ESCAPES[ch])
        elif ord(ch) < 0x20:
            out.append(f"\\u{ord(ch):04x}")
        else:
            out.append(ch)
    out.append('"')
    return "".join(out)


def jsonpb(v: Any) -> str:
    """jsonpb.Marshaler{}.MarshalToString of a Struct (v from to_struct)."""
    if v is None:
        return "null"
    if v is True:
        return "true"
    if v is False:
        return "false"
    if isinstance(v, float):
        return go_float(v)
    if isinstance(v, str):
        return go_string(v)
    if isinstance(v, list):
        return "[" + ",".join(jsonpb(x) for x in v) + "]"
    if isinstance(v, dict):
        return "{" + ",".join(go_string(k) + ":" + jsonpb(v[k]) for k in sorted(v)) + "}"
    raise TypeError(f"not a Struct value: {v!r}")


def istiod_plugin_config_json(policy: Any) -> str:
    """The exact StringValue istiod puts in the ECDS resource for `pluginConfig: <policy>`."""
    return jsonpb(to_struct(policy))


def other_encoder_json(policy: Any, seed: int) -> str:
    """A harsher control plane: keys in a shuffled order and every number printed as
    a double the way Python (and many encoders) print them: 100.0, 1e+16."""
    rng = random.Random(seed)

    def enc(v: Any) -> str:
        if isinstance(v, dict):
            keys = list(v)
            rng.shuffle(keys)
            return "{" + ", ".join(json.dumps(k) + ": " + enc(v[k]) for k in keys) + "}"
        if isinstance(v, list):
            return "[" + ", ".join(enc(x) for x in v) + "]"
        if isinstance(v, float):
            return repr(v)
        return json.dumps(v)

    return enc(to_struct(policy))


def ecds_resource(*, namespace: str, name: str, plugin_name: str, configuration: str, wasm_file: str,
                  fail_strategy: str = "FAIL_CLOSE") -> dict[str, Any]:
    """The TypedExtensionConfig as Envoy receives it from istio-agent (code made local)."""
    plugin = f"{namespace}.{name}{SYNTHETIC_MARKER}"
    return {
        "@type": "type.googleapis.com/envoy.config.core.v3.TypedExtensionConfig",
        "name": resource_name(namespace, name),
        "typed_config": {
            "@type": WASM_TYPE,
            "config": {
                "name": plugin,
                "root_id": plugin_name,
                "configuration": {"@type": "type.googleapis.com/google.protobuf.StringValue",
                                  "value": configuration},
                "vm_config": {"runtime": "envoy.wasm.runtime.v8",
                              "code": {"local": {"filename": wasm_file}}},
                "failure_policy": FAILURE_POLICY[fail_strategy],
            },
        },
    }


def http_filter(namespace: str, name: str) -> dict[str, Any]:
    """The HCM entry istiod writes for the plugin (extensionfilter.go toEnvoyHTTPTrafficExtension);
    here the ECDS source is a watched file instead of ADS."""
    return {"name": resource_name(namespace, name),
            "config_discovery": {"config_source": {"ads": {}, "resource_api_version": "V3",
                                                   "initial_fetch_timeout": "0s"},
                                 "type_urls": [WASM_TYPE, RBAC_TYPE]}}
