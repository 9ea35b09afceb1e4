"""The DLP trigger prefilter under attack, through the compiled filter in a
real Envoy.

What is attacked: `src/dlp/prefilter.rs` decides where a detector runs at
all. It looks at sixteen positions a step (Teddy nibble fingerprints of
each position's next three bytes, case-folded by OR-ing 0x20; `simd128` in
the Wasm build): a 19-byte window per block (the byte before, sixteen
positions, two after), a zero-padded copy at the string's start and end,
lanes past the end masked, word-start literals (`eaa`, `sk`, `pass`…)
counted only where the byte before is not `[A-Za-z0-9_]`, then a bitmap of
first pairs and an exact comparison. A position it drops is a secret that
passes the firewall: no detector ever runs there.

So a secret for every trigger literal of src/dlp/rules.rs (138 distinct
strings, `pass` and `pwd` serving two rules each: `ghp_`, `AKIA`, `xoxb-`,
`-----BEGIN`, `0|`…`9|`, `://`, `pass`…) and for the Discord bot token (no
literal: the prefilter reports the `.` ending a run of 24-26 token bytes) is
sent

- with its trigger at every byte offset 0..40 of the string (across the
  first block, whose window is a padded copy, and the 16- and 32-byte block
  boundaries), and with 0..20 bytes after it (lanes masked at the end,
  the padded copy of the last block), and as the whole string;
- right after bytes whose case fold aliases a word byte or another
  literal byte (DEL vs `_`, `^` vs `~`, `@` vs backquote, `[` vs `{`,
  backslash vs `|`), non-ASCII UTF-8 (é, fullwidth Ａ, NBSP, an emoji),
  control bytes, punctuation, and (where the detector allows it) `_`, a
  letter or a digit, at the offsets around the block boundaries;
- with its trigger upper-cased or in mixed case where the detector itself
  is case-insensitive (`PASSWORD=`, `AUTHORIZATION:`, `MySQL -p`…);
- with its trigger written as JSON `\\u` escapes in the raw request body.

Requests (`dlp.requests: block`, server-everything's `echo`): each secret's
placements go out in one `tools/call` as separate arguments; the call must be
refused (-32013) with a finding of the detector's kind at every argument's
path, and must not reach the server. Results (`dlp.responses: redact`, a
server in this file on the official Python SDK, JSON and SSE answers): the
same placements come back one text item each and must arrive redacted. Tool
descriptions in `tools/list` (redacted the same way): the offsets 0..40 and
the tails.

The secrets are generated from a fixed seed (no real or well-known value);
`SECRETS` is the table. The expectations do not depend on the prefilter:
each placement is one the scanner finds when it reads every position
(checked against the native scanner and the previous, scalar prefilter).

    python tests/e2e/test_prefilter_attack.py PORT json|sse   # the results server
"""

from __future__ import annotations

import json
import random
import re
import string
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any, NamedTuple

import pytest

# --------------------------------------------------------------------------- the secrets

_R = random.Random(0x5EC12E7)
ALNUM = string.ascii_letters + string.digits
UPD = string.ascii_uppercase + string.digits
HEX = "0123456789abcdef"
B64 = ALNUM + "+/"
URLSAFE = ALNUM + "_-"
BASE32 = "ABCDEFGHIJKLMNOPQRSTUVWXYZ234567"
BECH32 = "QPZRY9X8GF2TVDW0S3JN54KHCE6MUA7L"


def _rand(alphabet: str, n: int) -> str:
    """n characters of `alphabet`, with an upper, a lower and a digit where it has them
    (the entropy checks of several detectors want them)."""
    classes = [c for c in (string.ascii_uppercase, string.ascii_lowercase, string.digits)
               if any(x in alphabet for x in c)]
    while True:
        s = "".join(_R.choice(alphabet) for _ in range(n))
        if all(any(x in s for x in c) for c in classes):
            return s


class Secret(NamedTuple):
    trigger: str          # the trigger literal (lower-case) the text holds first
    kind: str             # the finding's kind
    text: str             # the secret as it is usually written
    core: str             # what must not survive redaction
    befores: str = ""     # only these bytes before the trigger ("" = BEFORES + extra)
    extra: str = ""       # bytes allowed before it besides BEFORES (`_`, a letter, a digit)
    avoid: str = ""       # bytes of BEFORES_EDGE its edge forbids
    any_case: bool = False  # the detector reads its trigger in any case


def _tok(trigger: str, kind: str, prefix: str, alphabet: str, n: int, suffix: str = "", **kw: Any) -> Secret:
    core = _rand(alphabet, n)
    return Secret(trigger, kind, prefix + core + suffix, core, **kw)


PW = "Xk9#" + _rand(ALNUM, 12)
PW8 = "Xk9#" + _rand(ALNUM, 4)
MAILCHIMP = _rand(HEX, 32)
MAILCHIMP_1 = _rand(HEX, 32)
GLUED = "_a0"     # anywhere literals whose detector reads on after any byte
UNDERSCORE = "_"  # `ghp_`-like tokens: `x_ghp_…` is found, `xghp_…` is not

SECRETS: list[Secret] = [
    Secret("-----begin", "private_key",
           "-----BEGIN PRIVATE KEY-----\nMIIEvQIBADANBgkqhkiG9w0BAQEFAASCBKcwggSjAgEAAoIBAQC7\n"
           "-----END PRIVATE KEY-----",
           "MIIEvQIBADANBgkqhkiG9w0BAQEFAASCBKcwggSjAgEAAoIBAQC7", extra=GLUED),
    Secret("eyj", "jwt", "eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9.eyJzdWIiOiJ1c2VybmFtZTpib2IifQ."
           "HcfCW67Uda-0gz54ZWTqmtgJnZeNem0Q757eTa9EZuw", "HcfCW67Uda-0gz54ZWTqmtgJnZeNem0Q757eTa9EZuw", avoid="."),
    *[_tok(t, "aws_access_key", t.upper() + ("X" if t == "a3t" else ""), BASE32, 16)
      for t in ("akia", "asia", "abia", "acca", "a3t")],
    _tok("absk", "aws_bedrock_key", "ABSK", ALNUM, 120),
    _tok("aiza", "gcp_api_key", "AIza", URLSAFE, 35),
    _tok("gocspx-", "google_oauth_secret", "GOCSPX-", URLSAFE, 28),
    _tok("accountkey", "azure_storage_key", "AccountKey=", B64, 86, "==", extra=GLUED, any_case=True),
    _tok("q~", "azure_ad_client_secret", "aB38Q~", ALNUM, 34, avoid="~."),
    *[_tok(t, "digitalocean_token", t, HEX, 64) for t in ("dop_v1_", "doo_v1_", "dor_v1_")],
    _tok("v1.0-", "cloudflare_key", "v1.0-" + _rand(HEX, 24) + "-", HEX, 146),
    _tok("fo1_", "flyio_token", "fo1_", URLSAFE, 43),
    _tok("fm1", "flyio_token", "fm1_", B64, 120),
    _tok("fm2", "flyio_token", "fm2_", B64, 120),
    _tok("hrku-", "heroku_key", "HRKU-", URLSAFE, 60),
    _tok("tk-us-", "scalingo_token", "tk-us-", URLSAFE, 48),
    _tok("sha256~", "openshift_token", "sha256~", URLSAFE, 43),
    _tok("dapi", "databricks_token", "dapi", HEX, 32),
    *[_tok(t, "vault_token", t, URLSAFE, 95) for t in ("hvs.", "hvb.", "hvr.")],
    _tok("s.", "vault_token", "s.", ALNUM, 24, avoid="/."),
    _tok(".atlasv1.", "terraform_token", _rand(ALNUM, 14) + ".atlasv1.", ALNUM, 64),
    *[_tok(t, "doppler_token", t, ALNUM, 43)
      for t in ("dp.pt.", "dp.st.", "dp.sa.", "dp.ct.", "dp.scim.", "dp.audit.")],
    _tok("ico-", "infracost_token", "ico-", ALNUM, 32, avoid="/."),
    _tok("glsa_", "grafana_token", "glsa_", ALNUM, 32, "_" + _rand(HEX, 8)),
    _tok("glc_", "grafana_token", "glc_", B64, 60),
    _tok("sntrys_", "sentry_token", "sntrys_eyJ" + _rand(B64, 60) + "_", ALNUM, 43),
    _tok("sntryu_", "sentry_token", "sntryu_", HEX, 64),
    _tok("ops_eyj", "onepassword_token", "ops_eyJ", B64, 120),
    _tok("a3-", "onepassword_token", "A3-" + _rand(UPD, 6) + "-" + _rand(UPD, 11) + "-", UPD, 5,
         "-" + _rand(UPD, 5) + "-" + _rand(UPD, 5)),
    _tok("age-secret-key-1", "age_secret_key", "AGE-SECRET-KEY-1", BECH32, 58),
    _tok("api-", "octopus_key", "API-", UPD, 26),
    _tok("ghp_", "github_pat", "ghp_", ALNUM, 36, extra=UNDERSCORE),
    _tok("gho_", "github_oauth", "gho_", ALNUM, 36, extra=UNDERSCORE),
    _tok("ghu_", "github_app_token", "ghu_", ALNUM, 36, extra=UNDERSCORE),
    _tok("ghs_", "github_app_token", "ghs_", ALNUM, 36, extra=UNDERSCORE),
    _tok("ghr_", "github_refresh_token", "ghr_", ALNUM, 36, extra=UNDERSCORE),
    _tok("github_pat_", "github_fine_grained_pat", "github_pat_" + _rand(ALNUM, 22) + "_", ALNUM, 59,
         extra=UNDERSCORE),
    *[_tok(t, "gitlab_token", t, ALNUM, 50 if t == "glagent-" else 20, extra=UNDERSCORE)
      for t in ("glpat-", "gldt-", "glcbt-", "glrt-", "glsoat-", "glft-", "glimt-", "glagent-", "gloas-",
                "glffct-")],
    _tok("glptt-", "gitlab_token", "glptt-", ALNUM, 40, extra=UNDERSCORE),
    _tok("gr1348941", "gitlab_token", "GR1348941", ALNUM, 20),
    _tok("sgp_", "sourcegraph_token", "sgp_", HEX, 40),
    _tok("npm_", "npm_token", "npm_", ALNUM, 36, extra=UNDERSCORE),
    _tok("pypi-age", "pypi_token", "pypi-AgEIcHlwaS5vcmc", URLSAFE, 60),
    _tok("xoxa-", "slack_token", "xoxa-2-", ALNUM, 40),
    *[_tok(t, "slack_token", t + "4718290365142-8302957164823-", ALNUM, 24)
      for t in ("xoxb-", "xoxs-", "xoxr-", "xoxc-")],
    _tok("xoxp-", "slack_token", "xoxp-4718290365142-8302957164823-8302957164824-", HEX, 32),
    _tok("xoxe-", "slack_token", "xoxe-1-", ALNUM, 60),
    _tok("xoxe.xox", "slack_token", "xoxe.xoxp-1-", ALNUM, 60),
    _tok("xapp-", "slack_token", "xapp-1-A0" + _rand(UPD, 8) + "-4718290365142-", HEX, 64),
    _tok("hooks.slack.com", "slack_webhook", "hooks.slack.com/services/T" + _rand(UPD, 8) + "/B" + _rand(UPD, 8)
         + "/", ALNUM, 24, extra=GLUED),
    _tok("discord.com/api/webhooks/", "discord_webhook", "discord.com/api/webhooks/" + _rand(string.digits, 18)
         + "/", URLSAFE, 68, extra=GLUED),
    _tok("discordapp.com/api/webhooks/", "discord_webhook", "discordapp.com/api/webhooks/"
         + _rand(string.digits, 18) + "/", URLSAFE, 68, extra=GLUED),
    # No literal: the prefilter reports the `.` that ends a run of 24-26 token bytes.
    _tok(".", "discord_bot_token", "MTk4NjIyNDgzNDcxOTI1MjQ4." + _rand(URLSAFE, 6) + ".", URLSAFE, 27),
    _tok(":aa", "telegram_bot_token", _rand(string.digits, 10) + ":AA", URLSAFE, 33, extra=GLUED),
    _tok("sg.", "sendgrid_key", "SG." + _rand(URLSAFE, 22) + ".", URLSAFE, 43),
    _tok("key-", "mailgun_key", "key-", HEX, 32),
    Secret("-us", "mailchimp_key", MAILCHIMP + "-us12", MAILCHIMP),
    # The trigger nearest a secret's end (4 bytes): lanes lost at the string's end show here.
    Secret("-us", "mailchimp_key", MAILCHIMP_1 + "-us1", MAILCHIMP_1),
    _tok("sk", "twilio_api_key", "SK", HEX, 32),
    _tok("lin_api_", "linear_key", "lin_api_", ALNUM, 40),
    _tok("ntn_", "notion_token", "ntn_" + _rand(string.digits, 11), ALNUM, 35),
    _tok("secret_", "notion_token", "secret_", ALNUM, 43),
    *[_tok(t, "stripe_key", t, ALNUM, 24, extra=UNDERSCORE) for t in ("sk_live_", "sk_test_", "rk_live_", "rk_test_")],
    _tok("sq0csp-", "square_token", "sq0csp-", URLSAFE, 43),
    _tok("sq0atp-", "square_token", "sq0atp-", URLSAFE, 22),
    _tok("eaaa", "square_token", "EAAA", URLSAFE, 60),
    *[_tok(t, "shopify_token", t, HEX, 32) for t in ("shpat_", "shpca_", "shppa_", "shpss_")],
    _tok("eaa", "facebook_token", "EAAB", ALNUM, 120),
    *[_tok(f"{d}|", "facebook_token", _rand(string.digits, 14) + f"{d}|", URLSAFE, 27, extra="0", any_case=True)
      for d in range(10)],
    _tok("sk-ant-", "anthropic_key", "sk-ant-api03-", URLSAFE, 93, "AA"),
    _tok("sk-", "openai_key", "sk-proj-" + _rand(ALNUM, 20) + "T3BlbkFJ", ALNUM, 20),
    _tok("pplx-", "perplexity_key", "pplx-", ALNUM, 48),
    _tok("hf_", "huggingface_token", "hf_", string.ascii_letters, 34),
    _tok("api_org_", "huggingface_token", "api_org_", string.ascii_letters, 34),
    _tok("s-s4t2ud-", "intra42_secret", "s-s4t2ud-", HEX, 64),
    _tok("s-s4t2af-", "intra42_secret", "s-s4t2af-", HEX, 64),
    _tok("sumo", "sumologic_key", "SUMO_ACCESS_KEY: ", ALNUM, 64, extra=GLUED, any_case=True),
    _tok("authorization", "auth_header_token", "Authorization: Bearer ", ALNUM, 32, extra=GLUED, any_case=True),
    # Command lines and directives: read after a blank (or a line start) only.
    Secret("-u", "basic_auth_credentials", f"-u deploy:{PW} https://api.example.net", PW, befores=" \t",
           any_case=True),
    Secret("--user", "basic_auth_credentials", f"--user deploy:{PW} https://api.example.net", PW, befores=" \t",
           any_case=True),
    _tok("://", "db_url_with_password", "postgres://app:", ALNUM, 14, "@db.internal:5432/main",
         extra=UNDERSCORE, avoid=".", any_case=True),
    Secret("mysql", "password", f"mysql -u root -p'{PW}' -h 10.0.4.12", PW, extra=GLUED, any_case=True),
    Secret("mariadb", "password", f"mariadb -u root -p'{PW}' -h 10.0.4.12", PW, extra=GLUED, any_case=True),
    Secret("docker", "password", f"docker login -u admin -p {PW} registry.corp.io", PW, any_case=True),
    Secret("podman", "password", f"podman login -u x -p '{PW}' quay.io", PW, any_case=True),
    Secret("sshpass", "password", f"sshpass -p '{PW}' ssh deploy@10.0.0.5", PW, any_case=True),
    Secret("redis-cli", "password", f"redis-cli -h cache -p 6379 -a {PW} ping", PW, any_case=True),
    # `oc login` and `az login` are read at `login` (src/dlp/rules.rs, COMMAND_WORDS).
    Secret("login", "password", f"oc login -u bob -p {PW} https://api.ocp:6443", PW, befores=" \t\n",
           any_case=True),
    Secret("convertto-securestring", "password", f'ConvertTo-SecureString "{PW}" -AsPlainText -Force', PW,
           any_case=True),
    Secret("requirepass", "password", f"requirepass {PW}\n", PW, befores=" \t\n", any_case=True),
    Secret("masterauth", "password", f"masterauth {PW}\n", PW, befores=" \t\n", any_case=True),
    Secret("value=", "password", f'<add key="SmtpPassword" value="{PW}"/>', PW, extra=GLUED, any_case=True),
    Secret("value =", "password", f'<add key="SmtpPassword" value = "{PW}"/>', PW, extra=GLUED, any_case=True),
    Secret("pass", "password", f"pass={PW}", PW, extra=GLUED, any_case=True),
    Secret("pwd", "password", f"pwd={PW}", PW, extra=GLUED, any_case=True),
    *[_tok(t, "generic_secret", f'{t}: "', ALNUM, 32, '"', extra=GLUED, any_case=True)
      for t in ("secret", "token", "key", "credential", "auth")],
    Secret("psk", "password", f'psk="{PW}"', PW, extra=GLUED, any_case=True),
    # Strings shorter than a block (12-14 bytes whole): one padded window is both ends.
    Secret("pwd", "password", f"pwd={PW8}", PW8, extra=GLUED, any_case=True),
    Secret("pass", "password", f"pass={PW8}", PW8, extra=GLUED, any_case=True),
    Secret("psk", "password", f"psk:{PW8}", PW8, extra=GLUED, any_case=True),
    # The prose reading (`pass` must start a word there).
    Secret("pass", "password", f"pass {PW}", PW, any_case=True),
    Secret("identified", "password", f"IDENTIFIED BY '{PW}'", PW, any_case=True),
]

# Bytes put right before the trigger: fold aliases of word bytes and of literal bytes
# (DEL/`_`, `^`/`~`, `@`/backquote, `[`/`{`, backslash/`|`; 0x10-0x19 fold to digits), non-ASCII
# UTF-8, controls, punctuation. BEFORES_EDGE: ones some detectors' edges forbid (`avoid`).
BEFORES = [" ", "\x7f", "^", "`", "@", "{", "[", "|", "\\", "é", "Ａ", "\u00a0", "😀", "\n", "\t", "\x01", "\x10",
           "\x19", "\x1f", '"', "'", "(", "=", ":", ",", ";", "<", ">", "#", "!", "*", "}", "]", "?"]
BEFORES_EDGE = ["~", ".", "/"]
# Trigger offsets that put it, or the byte before it, at a block's edge: 1..3 (the padded
# first window), 14..18 and 30..34 (the last lanes of a block and the first of the next).
EDGE_OFFSETS = [1, 2, 3, 14, 15, 16, 17, 18, 30, 31, 32, 33, 34]
OFFSETS = range(0, 41)
TAILS = range(0, 21)


def trigger_offset(s: Secret, text: str | None = None) -> int:
    """Byte offset of the trigger in the secret's text."""
    text = s.text if text is None else text
    i = text.lower().index(s.trigger)
    return len(text[:i].encode())


def place(s: Secret, at: int, before: str = " ", tail: int = 0, tail_byte: str = " ",
          text: str | None = None) -> str | None:
    """The secret with its trigger at byte `at` of the string, `before` right before the
    trigger's text, spaces before that, `tail` bytes of `tail_byte` after; None if it does
    not fit. At offset 0 nothing is before it."""
    text = s.text if text is None else text
    lead = at - trigger_offset(s, text)
    b = before.encode()
    if lead < 0 or (0 < lead < len(b)):
        return None
    pad = (b" " * max(lead - len(b), 0) + b) if lead else b""
    return pad.decode() + text + tail_byte * tail


def befores_of(s: Secret) -> list[str]:
    if s.befores:
        return list(s.befores)
    return BEFORES + [c for c in BEFORES_EDGE if c not in s.avoid] + list(s.extra)


def recased(s: Secret) -> list[str]:
    """The text with its trigger upper-cased and in both mixed cases (any-case detectors)."""
    if not s.any_case:
        return []
    i = s.text.lower().index(s.trigger)
    trig = s.text[i:i + len(s.trigger)]
    out = []
    for f in (str.upper,
              lambda t: "".join(c.upper() if k % 2 else c.lower() for k, c in enumerate(t)),
              lambda t: "".join(c.lower() if k % 2 else c.upper() for k, c in enumerate(t))):
        v = s.text[:i] + f(trig) + s.text[i + len(trig):]
        if v != s.text:
            out.append(v)
    return out


def placements(s: Secret, full: bool = True) -> list[str]:
    """Every string the secret is sent in. `full=False`: the offsets and tails only."""
    out: list[str] = []
    t0 = trigger_offset(s)
    out += [p for at in OFFSETS if (p := place(s, at)) is not None]
    for at in (t0, t0 + 1, t0 + 17):
        out += [place(s, at, tail=n, tail_byte=tb) or "" for n in TAILS for tb in (" ", "\n")]
    if full:
        out += [p for b in befores_of(s) for at in EDGE_OFFSETS if (p := place(s, at, before=b)) is not None]
        out += [p for v in recased(s) for at in OFFSETS if (p := place(s, at, text=v)) is not None]
    return list(dict.fromkeys(x for x in out if x))


def escaped_trigger_strings(s: Secret) -> list[tuple[str, str]]:
    """(JSON string literal, the string it decodes to): the trigger's bytes written as
    `\\uXXXX` escapes, all of them or only the first, at the edge offsets."""
    out = []
    for at in [0, *EDGE_OFFSETS]:
        text = place(s, at)
        if text is None:
            continue
        i = text.lower().index(s.trigger, max(at - 1, 0)) if s.trigger != "." else text.index(".")
        for n in (1, len(s.trigger)):
            esc = "".join(f"\\u{ord(c):04x}" for c in text[i:i + n])
            lit = json.dumps(text[:i], ensure_ascii=False)[:-1] + esc + json.dumps(text[i + n:], ensure_ascii=False)[1:]
            out.append((lit, text))
    return out


# --------------------------------------------------------------------------- the results server

def _serve(port: int, wire: str) -> None:
    import mcp_types as types
    import uvicorn
    from mcp.server.lowlevel import Server

    async def list_tools(ctx, params) -> types.ListToolsResult:  # noqa: ANN001 - SDK handler signature
        headers = getattr(getattr(ctx, "request", None), "headers", None)
        index = int(headers.get("x-secret", "-1")) if headers is not None else -1
        tools = [types.Tool(name="say", description="Answers its parts, one text item each.",
                            input_schema={"type": "object"})]
        if 0 <= index < len(SECRETS):
            tools += [types.Tool(name=f"t{k}", description=d, input_schema={"type": "object"})
                      for k, d in enumerate(placements(SECRETS[index], full=False))]
        return types.ListToolsResult(tools=tools)

    async def call_tool(ctx, params) -> types.CallToolResult:  # noqa: ANN001
        parts = (params.arguments or {}).get("parts") or []
        return types.CallToolResult(content=[types.TextContent(type="text", text=str(p)) for p in parts])

    server = Server("mcp-firewall-e2e-prefilter", on_list_tools=list_tools, on_call_tool=call_tool)
    uvicorn.run(server.streamable_http_app(json_response=wire == "json"), host="127.0.0.1", port=port,
                log_level="warning")


if __name__ == "__main__":
    _serve(int(sys.argv[1]), sys.argv[2])
    sys.exit(0)

# --------------------------------------------------------------------------- the tests

from conftest import READER_KEY, base_policy  # noqa: E402
from mcp_raw import call, messages, open_session, rpc, send  # noqa: E402

import harness  # noqa: E402

IDS = [f"{i:03d}-{s.kind}-{s.trigger}" for i, s in enumerate(SECRETS)]


def _policy(dlp: dict[str, Any]) -> dict[str, Any]:
    p = base_policy()
    p["dlp"] = dlp
    p["limits"]["max_request_bytes"] = 1048576
    p["rules"].append({"id": "prefilter-peer", "effect": "allow", "roles": ["reader"], "tools": ["say", "t*"]})
    return p


def test_the_table_covers_every_trigger_literal() -> None:
    """Every literal of src/dlp/rules.rs's `triggers:` lists has its secret here."""
    rules = (harness.REPO / "src" / "dlp" / "rules.rs").read_text()
    literals = {lit for block in re.findall(r"triggers:\s*&\[(.*?)\]", rules, re.S)
                for lit in re.findall(r'"((?:[^"\\]|\\.)*)"', block)}
    assert len(literals) >= 130, len(literals)
    missing = literals - {s.trigger for s in SECRETS}
    assert not missing, f"no secret for the triggers {sorted(missing)}"


@pytest.mark.parametrize("index", range(len(SECRETS)), ids=IDS)
def test_secret_in_arguments_is_refused_at_every_position(envoy_for: Any, index: int) -> None:
    s = SECRETS[index]
    env = envoy_for(_policy({"requests": "block", "responses": "off"}))
    sess = open_session(env.url, READER_KEY)
    strings = placements(s)
    escaped = escaped_trigger_strings(s)
    # The body by hand: the escaped triggers must reach the filter as escapes.
    members = ['"message": "x"']
    members += [f'"p{k}": {json.dumps(t, ensure_ascii=False)}' for k, t in enumerate(strings)]
    members += [f'"e{k}": {lit}' for k, (lit, _) in enumerate(escaped)]
    body = ('{"jsonrpc": "2.0", "id": 7, "method": "tools/call", "params": {"name": "echo", "arguments": {'
            + ", ".join(members) + "}}}")
    for k, (lit, text) in enumerate(escaped):
        assert json.loads(lit) == text, (k, lit)
    before = env.upstream_posts()
    r = send(env.url, body=body.encode(), token=READER_KEY, headers=sess)
    (msg,) = messages(r)
    assert msg.get("error", {}).get("code") == -32013, f"{s.kind} forwarded: {str(msg)[:300]}"
    kinds: dict[str, set[str]] = {}
    for f in msg["error"]["data"]["findings"]:
        kinds.setdefault(f["path"], set()).add(f["kind"])
    missed = [strings[k] for k in range(len(strings)) if s.kind not in kinds.get(f"/p{k}", set())]
    missed += [lit for k, (lit, _) in enumerate(escaped) if s.kind not in kinds.get(f"/e{k}", set())]
    assert not missed, f"{len(missed)} of {len(strings) + len(escaped)} placements of {s.trigger!r} " \
                       f"not found as {s.kind}, e.g. {missed[:3]!r}"
    assert s.core not in r.text
    assert env.upstream_posts() == before, "a refused call reached the server"


class ResultsPeer:
    """This file as an MCP server (official Python SDK, low-level Server)."""

    def __init__(self, workdir: Path, wire: str):
        self.port = harness.free_port()
        self.proc = harness.Proc(f"prefilter-{wire}-{self.port}", [sys.executable, __file__, str(self.port), wire],
                                 workdir / f"prefilter-{wire}-{self.port}.log")
        try:
            harness._wait(lambda: harness.port_open(self.port), 30, "prefilter results peer", self.proc)
        except BaseException:
            self.proc.stop()
            raise

    def stop(self) -> None:
        self.proc.stop()


@pytest.fixture(scope="module", params=["json", "sse"])
def results_envoy(request: pytest.FixtureRequest, workdir: Path, wasm: Path) -> Iterator[tuple[harness.Envoy, dict]]:
    wire = request.param
    peer = ResultsPeer(workdir, wire)
    env = None
    try:
        cfg = harness.render("envoy", listen_port=harness.free_port(), admin_port=harness.free_port(),
                             upstream_port=peer.port, policy=_policy({"requests": "off", "responses": "redact"}),
                             wasm=wasm)
        env = harness.Envoy(cfg, workdir, name=f"envoy-prefilter-{wire}")
        yield env, open_session(env.url, READER_KEY)
    finally:
        if env is not None:
            env.stop()
        peer.stop()


def _unredacted(s: Secret, got: list[str]) -> list[str]:
    """The answers that still hold the secret, or were not redacted as the detector's kind."""
    return [g for g in got if s.core in g or f"[REDACTED:{s.kind}]" not in g]


@pytest.mark.parametrize("index", range(len(SECRETS)), ids=IDS)
def test_secret_in_results_is_redacted_at_every_position(results_envoy: Any, index: int) -> None:
    env, sess = results_envoy
    s = SECRETS[index]
    strings = placements(s)
    r = send(env.url, body=json.dumps(call("say", {"parts": strings}, id=11), ensure_ascii=False).encode(),
             token=READER_KEY, headers=sess)
    assert r.status_code == 200, r.text[:300]
    msg = messages(r)[-1]
    items = msg["result"]["content"]
    assert len(items) == len(strings)
    leaked = _unredacted(s, [i["text"] for i in items])
    assert not leaked, f"{len(leaked)} of {len(strings)} results with {s.trigger!r} unredacted, e.g. {leaked[:3]!r}"
    assert s.core not in r.text


@pytest.mark.parametrize("index", range(len(SECRETS)), ids=IDS)
def test_secret_in_tool_descriptions_is_redacted_at_every_position(results_envoy: Any, index: int) -> None:
    env, sess = results_envoy
    s = SECRETS[index]
    strings = placements(s, full=False)
    r = send(env.url, body=json.dumps(rpc("tools/list", {}, id=12)).encode(), token=READER_KEY,
             headers={**sess, "x-secret": str(index)})
    assert r.status_code == 200, r.text[:300]
    tools = {t["name"]: t.get("description", "") for t in messages(r)[-1]["result"]["tools"]}
    got = [tools.get(f"t{k}", "") for k in range(len(strings))]
    assert all(f"t{k}" in tools for k in range(len(strings))), "the list lost tools"
    leaked = _unredacted(s, got)
    assert not leaked, f"{len(leaked)} of {len(strings)} descriptions with {s.trigger!r} unredacted, " \
                       f"e.g. {leaked[:3]!r}"
    assert s.core not in r.text
