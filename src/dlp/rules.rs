//! Built-in secret detectors: one documented rule per credential format.
//!
//! Each rule names the literal(s) that every match must contain (the
//! prefilter's triggers), the window around a trigger the regex may look at,
//! which characters may not touch the match (regex-lite has no lookaround, so
//! boundaries are checked here in code against the whole text), and a
//! post-check that throws out placeholders, templates and low-entropy values.
//!
//! Formats follow the issuers' documentation (prefixes, lengths, alphabets);
//! nothing here is keyed to any particular sample value.

use super::text::{
    at, before, decode_b64std, decode_b64url, entropy, is_b64_byte, is_placeholder,
    is_random_token, is_strong_password, is_template, is_token_byte, is_word_byte, run_len,
    Classes,
};
use regex_lite::Captures;

/// Which bytes may not sit right before/after a match.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Edge {
    /// Anything may touch.
    None,
    /// No `[A-Za-z0-9_]`.
    Word,
    /// No `[A-Za-z0-9_-]`.
    Token,
    /// No base64/base64url character.
    Base64,
    /// No digit (a numeric id must not be part of a longer number).
    Digit,
    /// No `[A-Za-z0-9_-]`, `.` or `/` (file names and URL paths are not tokens).
    Path,
    /// No `[A-Za-z0-9_~.-]` (Azure secrets use `~` and `.` inside).
    Tilde,
    /// No `[A-Za-z0-9]`: before a vendor prefix that carries its own
    /// separator (`ghp_`, `glpat-`, `npm_`), a `_` or `-` joins it to a name
    /// (`x_ghp_…`, `srv-ghp_…`, `GITHUB_TOKEN_ghp_…`) and the token is still
    /// whole; a letter or digit before it means it is the middle of something.
    Alnum,
}

impl Edge {
    /// How many edges there are (`Edge as usize` indexes a table of them).
    pub const COUNT: usize = 8;

    #[inline]
    pub fn blocks(self, b: u8) -> bool {
        match self {
            Edge::None => false,
            Edge::Word => is_word_byte(b),
            Edge::Token => is_token_byte(b),
            Edge::Base64 => is_b64_byte(b),
            Edge::Digit => b.is_ascii_digit(),
            Edge::Path => is_token_byte(b) || b == b'.' || b == b'/',
            Edge::Tilde => is_token_byte(b) || b == b'~' || b == b'.',
            Edge::Alnum => b.is_ascii_alphanumeric(),
        }
    }
}

/// What must hold after the regex matched.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Check {
    /// Not a placeholder (`xxxx`, `EXAMPLE`, `123456`, long repeats).
    Token,
    /// Token, and mixes upper and lower case (alphabetic-only tokens).
    MixedCase,
    /// Token, and mixes upper, lower and digits (short legacy formats).
    UpperLowerDigit,
    /// Token, and at least 3 bits of entropy per character.
    Random,
    /// Slack token structure: dash-separated segments, random last segment.
    Slack,
    /// `curl -u user:password`.
    CurlUser,
}

/// A rule matched by code rather than a regex.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Native {
    /// JSON Web Token whose header decodes to a JSON object with `alg`/`typ`.
    Jwt,
    /// PEM/OpenSSH/PGP private key block with a real body.
    PrivateKey,
    /// `identifier <op> value` where the identifier names a secret.
    Assignment,
    /// Prose: "… and pass 1ThQgdwWYpVoaOnSDu", "password is …".
    ProsePassword,
    /// `scheme://user:password@host`.
    UrlCredential,
    /// `curl -u user:password`: after the pre-check nothing is left for a
    /// regex to decide, and a run of ` -u a:b` made its merged window the
    /// slowest input of all (5 MB/s).
    CurlUser,
    /// `SUMO_ACCESS_ID/KEY = …`: every part has one reading, so code reads
    /// it; a case-insensitive regex call per `sumo` made `sumo_access_id=`
    /// repeated 16-27x clean text per byte.
    SumoKey,
    /// `mysql … -p<password>`: the first `-p` on the line within 120 bytes
    /// whose value has the shape, judged as a password. Code, not a regex:
    /// a case-insensitive lazy gap before `-p` cost a regex call per
    /// `mysql` (`mysql -p` repeated: 30-40x clean text per byte).
    MysqlPassword,
    /// A password given to a command or directive as its argument:
    /// `docker login -p …`, `sshpass -p …`, `redis-cli -a …`,
    /// `ConvertTo-SecureString "…" -AsPlainText`, redis.conf
    /// `requirepass …`. Code: each reads the words after its name on its
    /// line, up to the next command of that name.
    CommandPassword,
    /// `key="SmtpPassword" value="…"` (XML/.config settings), judged by the
    /// identifier. Code, not a regex: the identifier lies before the
    /// `value` trigger, so a regex searched a merged window up to 200 bytes
    /// back for it, and a run of `<add key="password" value="` cost 50x
    /// clean text; read back from the trigger, each byte is read once.
    XmlAssignment,
    /// `Authorization: [<scheme>] <credential>`. Code, not a regex: this
    /// trigger is common in ordinary HTTP code, and a case-insensitive pattern
    /// with a scheme alternation cost more than the rest of the scan there.
    AuthHeader,
}

/// A necessary condition checked in code at the trigger before the rule's
/// regex runs: for triggers that are common words (`value=`, `-u`,
/// `authorization`) most occurrences are not the context the pattern needs,
/// and a few byte tests are far cheaper than a regex window.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Pre {
    None,
    /// `-u`/`--user` after a blank (or at the start), then a blank or `=`.
    CurlUser,
    /// `["'][ \t]+value[ \t]*=[ \t]*["']` around the `value` trigger.
    XmlValue,
    /// The trigger's first byte ends a run of at least this many bytes of
    /// the class (the match's fixed part before the trigger): a run of
    /// triggers (`3|3|3|…`) has none, and each used to widen a merged window.
    RunBefore(Run, usize),
}

/// A byte class [`Pre::RunBefore`] counts.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Run {
    Digit,
    Alnum,
}

impl Run {
    fn has(self, b: u8) -> bool {
        match self {
            Run::Digit => b.is_ascii_digit(),
            Run::Alnum => b.is_ascii_alphanumeric(),
        }
    }
}

#[derive(Debug)]
pub struct RuleSpec {
    pub kind: &'static str,
    /// Lower-case literals; a rule runs only near one of them. At least 2 bytes each.
    pub triggers: &'static [&'static str],
    /// The trigger must start a word (previous byte not `[A-Za-z0-9_]`).
    pub word_start: bool,
    pub pattern: &'static str,
    pub native: Option<Native>,
    /// Bytes before a trigger the match may start at.
    pub back: usize,
    /// Bytes after a trigger the match may end at (longest token of the format).
    pub ahead: usize,
    pub before: Edge,
    pub after: Edge,
    pub check: Check,
    pub pre: Pre,
    /// A literal every match contains, in any case ("" = none): a trigger with no such
    /// literal within its window is not run, and where the next one lies is
    /// remembered, so a run of triggers costs one pass (`sk-sk-sk-…`).
    pub requires: &'static str,
    /// Lower wins when two matches overlap: exact formats beat context rules,
    /// context rules beat generic assignments.
    pub priority: u8,
    /// Fewest bytes of the `after` edge's class every match has right after
    /// the trigger, up to its end (0 = no such check): read in code from the
    /// run the edge test reads anyway, so that a run of triggers with short
    /// tails (`123456789012345|` repeated) costs no regex call per trigger.
    pub tail: usize,
    /// For a pattern that is a fixed start (the trigger, as `prefix.rs`
    /// reads it) and then `[A-Za-z0-9_-]{m,longest}` (GitLab: and an optional
    /// `.` + 9 suffix), with an `after` edge that forbids token bytes:
    /// `longest` (0 = not such a pattern). The match is then the run of token
    /// bytes after the trigger, cut at `longest`, and code finds it from the
    /// run the edge test reads: a regex-lite call cost ~40 ns per byte of
    /// tail (`glpat-` + 300 bytes repeated: 16-28x clean text per byte).
    pub longest: usize,
}

const BASE: RuleSpec = RuleSpec {
    kind: "",
    triggers: &[],
    word_start: true,
    pattern: "",
    native: None,
    back: 0,
    ahead: 128,
    before: Edge::Token,
    after: Edge::Token,
    check: Check::Token,
    pre: Pre::None,
    requires: "",
    priority: 0,
    tail: 0,
    longest: 0,
};

/// Rule index of the Discord bot token, which has no literal: the prefilter
/// triggers it on a `.` that ends a 24–26 character token run.
pub const DISCORD_KIND: &str = "discord_bot_token";

/// A JSON Web Token: the credential a server issues on purpose as a session
/// id or cookie (`response_head` lets it stand there).
pub const JWT_KIND: &str = "jwt";

pub static SECRET_RULES: &[RuleSpec] = &[
    // --- Keys and structured tokens matched by code -------------------------
    RuleSpec {
        kind: "private_key",
        triggers: &["-----begin"],
        word_start: false,
        native: Some(Native::PrivateKey),
        ahead: 64,
        before: Edge::None,
        after: Edge::None,
        ..BASE
    },
    RuleSpec {
        kind: JWT_KIND,
        triggers: &["eyj"],
        native: Some(Native::Jwt),
        ahead: 8,
        ..BASE
    },
    // --- Cloud providers -------------------------------------------------------
    // AWS access key id: 4-letter type prefix + 16 base32 characters.
    RuleSpec {
        kind: "aws_access_key",
        triggers: &["akia", "asia", "abia", "acca", "a3t"],
        pattern: r"(?:A3T[A-Z0-9]|AKIA|ASIA|ABIA|ACCA)[A-Z2-7]{16}",
        before: Edge::Word,
        after: Edge::Word,
        ..BASE
    },
    // Amazon Bedrock long-term API key: "ABSK" + base64.
    RuleSpec {
        kind: "aws_bedrock_key",
        triggers: &["absk"],
        pattern: r"ABSK[A-Za-z0-9+/]{109,269}={0,2}",
        ahead: 300,
        after: Edge::Base64,
        ..BASE
    },
    // Google API key: "AIza" + 35 base64url characters.
    RuleSpec {
        kind: "gcp_api_key",
        triggers: &["aiza"],
        pattern: r"AIza[0-9A-Za-z_-]{35}",
        ..BASE
    },
    // Google OAuth client secret.
    RuleSpec {
        kind: "google_oauth_secret",
        triggers: &["gocspx-"],
        pattern: r"GOCSPX-[A-Za-z0-9_-]{28}",
        ..BASE
    },
    // Azure storage account key in a connection string: 64 bytes, base64.
    RuleSpec {
        kind: "azure_storage_key",
        triggers: &["accountkey"],
        word_start: false,
        pattern: r"(?i:AccountKey)\s*=\s*([A-Za-z0-9+/]{86,88}={0,2})",
        ahead: 120,
        before: Edge::None,
        after: Edge::Base64,
        priority: 1,
        ..BASE
    },
    // Azure AD (Entra) client secret: 3 chars, a digit, "Q~", 31-34 chars.
    RuleSpec {
        kind: "azure_ad_client_secret",
        triggers: &["q~"],
        word_start: false,
        pattern: r"[A-Za-z0-9_~.]{3}[0-9]Q~[A-Za-z0-9_~.-]{31,34}",
        back: 4,
        ahead: 40,
        before: Edge::Tilde,
        after: Edge::Tilde,
        ..BASE
    },
    // DigitalOcean personal/OAuth/refresh tokens.
    RuleSpec {
        kind: "digitalocean_token",
        triggers: &["dop_v1_", "doo_v1_", "dor_v1_"],
        pattern: r"do[opr]_v1_[a-f0-9]{64}",
        ..BASE
    },
    // Cloudflare Origin CA key.
    RuleSpec {
        kind: "cloudflare_key",
        triggers: &["v1.0-"],
        pattern: r"v1\.0-[a-f0-9]{24}-[a-f0-9]{146}",
        ahead: 180,
        ..BASE
    },
    // Fly.io tokens: "fo1_" + 43, or macaroon "fm1_/fm2_" + base64.
    RuleSpec {
        kind: "flyio_token",
        triggers: &["fo1_"],
        pattern: r"fo1_[A-Za-z0-9_-]{43}",
        ..BASE
    },
    RuleSpec {
        kind: "flyio_token",
        triggers: &["fm1", "fm2"],
        pattern: r"fm[12][ar]?_[A-Za-z0-9+/]{100,}={0,3}",
        ahead: 4096,
        after: Edge::Base64,
        ..BASE
    },
    // Heroku platform key (new format).
    RuleSpec {
        kind: "heroku_key",
        triggers: &["hrku-"],
        pattern: r"HRKU-[A-Za-z0-9_-]{58,64}",
        ..BASE
    },
    // Scalingo API token.
    RuleSpec {
        kind: "scalingo_token",
        triggers: &["tk-us-"],
        pattern: r"tk-us-[A-Za-z0-9_-]{48}",
        ..BASE
    },
    // OpenShift OAuth access token.
    RuleSpec {
        kind: "openshift_token",
        triggers: &["sha256~"],
        pattern: r"sha256~[A-Za-z0-9_-]{43}",
        ..BASE
    },
    // Databricks personal access token (optional "-N" suffix).
    RuleSpec {
        kind: "databricks_token",
        triggers: &["dapi"],
        pattern: r"dapi[a-f0-9]{32}(?:-[0-9]+)?",
        ..BASE
    },
    // HashiCorp Vault service/batch/recovery tokens, and the legacy "s." form.
    RuleSpec {
        kind: "vault_token",
        triggers: &["hvs.", "hvb.", "hvr."],
        pattern: r"hv[sbr]\.[A-Za-z0-9_-]{90,400}",
        longest: 400,
        ahead: 420,
        ..BASE
    },
    RuleSpec {
        kind: "vault_token",
        triggers: &["s."],
        pattern: r"s\.[A-Za-z0-9]{24}",
        ahead: 30,
        before: Edge::Path,
        after: Edge::Word,
        check: Check::UpperLowerDigit,
        ..BASE
    },
    // Terraform Cloud / Enterprise API token.
    RuleSpec {
        kind: "terraform_token",
        triggers: &[".atlasv1."],
        word_start: false,
        pattern: r"[A-Za-z0-9]{14}\.atlasv1\.[A-Za-z0-9_=-]{60,70}",
        back: 14,
        pre: Pre::RunBefore(Run::Alnum, 14),
        ahead: 80,
        ..BASE
    },
    // Doppler tokens.
    RuleSpec {
        kind: "doppler_token",
        triggers: &[
            "dp.pt.",
            "dp.st.",
            "dp.sa.",
            "dp.ct.",
            "dp.scim.",
            "dp.audit.",
        ],
        pattern: r"dp\.(?:pt|st|sa|ct|scim|audit)\.[A-Za-z0-9]{40,44}",
        ..BASE
    },
    // Infracost API token.
    RuleSpec {
        kind: "infracost_token",
        triggers: &["ico-"],
        pattern: r"ico-[A-Za-z0-9]{32}",
        before: Edge::Path,
        after: Edge::Path,
        ..BASE
    },
    // Grafana service account token and Grafana Cloud token.
    RuleSpec {
        kind: "grafana_token",
        triggers: &["glsa_"],
        pattern: r"glsa_[A-Za-z0-9]{32}_[A-Fa-f0-9]{8}",
        ..BASE
    },
    RuleSpec {
        kind: "grafana_token",
        triggers: &["glc_"],
        pattern: r"glc_[A-Za-z0-9+/]{32,400}={0,2}",
        ahead: 420,
        after: Edge::Base64,
        ..BASE
    },
    // Sentry org/user auth tokens.
    RuleSpec {
        kind: "sentry_token",
        triggers: &["sntrys_"],
        pattern: r"sntrys_eyJ[A-Za-z0-9+/=]{30,600}_[A-Za-z0-9+/]{43}",
        ahead: 700,
        after: Edge::Base64,
        ..BASE
    },
    RuleSpec {
        kind: "sentry_token",
        triggers: &["sntryu_"],
        pattern: r"sntryu_[a-f0-9]{64}",
        ..BASE
    },
    // 1Password service account token and secret key.
    RuleSpec {
        kind: "onepassword_token",
        triggers: &["ops_eyj"],
        pattern: r"ops_eyJ[A-Za-z0-9+/]{100,}={0,3}",
        ahead: 4096,
        after: Edge::Base64,
        ..BASE
    },
    RuleSpec {
        kind: "onepassword_token",
        triggers: &["a3-"],
        pattern: r"A3-[A-Z0-9]{6}-(?:[A-Z0-9]{11}|[A-Z0-9]{6}-[A-Z0-9]{5})-[A-Z0-9]{5}-[A-Z0-9]{5}-[A-Z0-9]{5}",
        ..BASE
    },
    // age encryption secret key (bech32).
    RuleSpec {
        kind: "age_secret_key",
        triggers: &["age-secret-key-1"],
        pattern: r"AGE-SECRET-KEY-1[QPZRY9X8GF2TVDW0S3JN54KHCE6MUA7L]{58}",
        ..BASE
    },
    // Octopus Deploy API key.
    RuleSpec {
        kind: "octopus_key",
        triggers: &["api-"],
        pattern: r"API-[A-Z0-9]{26}",
        before: Edge::Word,
        after: Edge::Word,
        check: Check::Random,
        ..BASE
    },
    // --- Version control and package registries --------------------------------
    RuleSpec {
        kind: "github_pat",
        triggers: &["ghp_"],
        word_start: false,
        pattern: r"ghp_[A-Za-z0-9]{36}",
        before: Edge::Alnum,
        ..BASE
    },
    RuleSpec {
        kind: "github_oauth",
        triggers: &["gho_"],
        word_start: false,
        pattern: r"gho_[A-Za-z0-9]{36}",
        before: Edge::Alnum,
        ..BASE
    },
    RuleSpec {
        kind: "github_app_token",
        triggers: &["ghu_", "ghs_"],
        word_start: false,
        pattern: r"gh[us]_[A-Za-z0-9]{36}",
        before: Edge::Alnum,
        ..BASE
    },
    RuleSpec {
        kind: "github_refresh_token",
        triggers: &["ghr_"],
        word_start: false,
        pattern: r"ghr_[A-Za-z0-9]{36,76}",
        before: Edge::Alnum,
        ..BASE
    },
    RuleSpec {
        kind: "github_fine_grained_pat",
        triggers: &["github_pat_"],
        word_start: false,
        pattern: r"github_pat_[A-Za-z0-9]{22}_[A-Za-z0-9]{59}",
        before: Edge::Alnum,
        ..BASE
    },
    // GitLab tokens: documented prefixes, 20+ characters; pipeline trigger
    // tokens are exactly 40; runner registration tokens start "GR1348941".
    RuleSpec {
        kind: "gitlab_token",
        triggers: &[
            "glpat-", "gldt-", "glcbt-", "glrt-", "glsoat-", "glft-", "glimt-", "glagent-",
            "gloas-", "glffct-",
        ],
        word_start: false,
        pattern: r"gl(?:pat|dt|cbt|rt|soat|ft|imt|agent|oas|ffct)-[A-Za-z0-9_-]{20,300}(?:\.[0-9a-z]{2}[0-9a-z]{7})?",
        longest: 300,
        before: Edge::Alnum,
        // The longest tail: 300 token bytes and `.` + 9 (not more: a run
        // of prefixes ran the regex from every trigger within the slack).
        ahead: 310,
        after: Edge::Path,
        ..BASE
    },
    RuleSpec {
        kind: "gitlab_token",
        triggers: &["glptt-"],
        word_start: false,
        pattern: r"glptt-[A-Za-z0-9_-]{40}",
        before: Edge::Alnum,
        ..BASE
    },
    RuleSpec {
        kind: "gitlab_token",
        triggers: &["gr1348941"],
        pattern: r"GR1348941[A-Za-z0-9_-]{20}",
        ..BASE
    },
    // Sourcegraph access token.
    RuleSpec {
        kind: "sourcegraph_token",
        triggers: &["sgp_"],
        pattern: r"sgp_(?:[A-Fa-f0-9]{16}_|local_)?[A-Fa-f0-9]{40}",
        ..BASE
    },
    RuleSpec {
        kind: "npm_token",
        triggers: &["npm_"],
        word_start: false,
        pattern: r"npm_[A-Za-z0-9]{36}",
        before: Edge::Alnum,
        ..BASE
    },
    // PyPI upload token: macaroon, base64 of a v2 header.
    RuleSpec {
        kind: "pypi_token",
        triggers: &["pypi-age"],
        pattern: r"pypi-AgE[A-Za-z0-9_-]{50,1000}",
        longest: 1000,
        ahead: 1024,
        ..BASE
    },
    // --- Chat, mail and webhooks -----------------------------------------------
    RuleSpec {
        kind: "slack_token",
        triggers: &[
            "xoxa-", "xoxb-", "xoxp-", "xoxs-", "xoxr-", "xoxe-", "xoxc-", "xoxe.xox",
        ],
        pattern: r"(?:xoxe\.)?xox[abpsrce]-[0-9A-Za-z-]{6,250}",
        ahead: 260,
        check: Check::Slack,
        ..BASE
    },
    RuleSpec {
        kind: "slack_token",
        triggers: &["xapp-"],
        pattern: r"xapp-[0-9]-[A-Z0-9]{6,}-[0-9]{6,}-[a-z0-9]{32,}",
        ahead: 160,
        ..BASE
    },
    RuleSpec {
        kind: "slack_webhook",
        triggers: &["hooks.slack.com"],
        word_start: false,
        pattern: r"hooks\.slack\.com/(?:services|workflows|triggers)/[A-Za-z0-9_]{6,}/[A-Za-z0-9_]{6,}/[A-Za-z0-9_/]{8,}",
        ahead: 200,
        before: Edge::None,
        ..BASE
    },
    // One rule per host, not `discord(?:app)?`: an optional group ends the
    // fixed start `prefix.rs` checks in code, and then every repeated
    // `discord.com/api/webhooks/` cost a regex call (18x clean text).
    RuleSpec {
        kind: "discord_webhook",
        triggers: &["discord.com/api/webhooks/"],
        word_start: false,
        pattern: r"discord\.com/api/webhooks/[0-9]{17,20}/[A-Za-z0-9_-]{60,68}",
        ahead: 120,
        before: Edge::None,
        ..BASE
    },
    RuleSpec {
        kind: "discord_webhook",
        triggers: &["discordapp.com/api/webhooks/"],
        word_start: false,
        pattern: r"discordapp\.com/api/webhooks/[0-9]{17,20}/[A-Za-z0-9_-]{60,68}",
        ahead: 120,
        before: Edge::None,
        ..BASE
    },
    // Discord bot token: base64 user id, 6-char timestamp, 27-38 char HMAC.
    RuleSpec {
        kind: DISCORD_KIND,
        pattern: r"[MNO][A-Za-z0-9_-]{23,25}\.[A-Za-z0-9_-]{6}\.[A-Za-z0-9_-]{27,38}",
        ahead: 80,
        check: Check::Random,
        ..BASE
    },
    // Telegram bot token: numeric bot id, ":AA", 33 characters.
    RuleSpec {
        kind: "telegram_bot_token",
        triggers: &[":aa"],
        word_start: false,
        pattern: r"[0-9]{5,16}:AA[A-Za-z0-9_-]{33}",
        back: 17,
        tail: 33,
        pre: Pre::RunBefore(Run::Digit, 5),
        ahead: 40,
        before: Edge::Digit,
        ..BASE
    },
    RuleSpec {
        kind: "sendgrid_key",
        triggers: &["sg."],
        pattern: r"SG\.[A-Za-z0-9_-]{22}\.[A-Za-z0-9_-]{43}",
        ..BASE
    },
    RuleSpec {
        kind: "mailgun_key",
        triggers: &["key-"],
        pattern: r"key-[0-9a-f]{32}",
        before: Edge::Word,
        check: Check::Random,
        ..BASE
    },
    // Mailchimp API key: 32 hex + "-us" + datacenter number.
    RuleSpec {
        kind: "mailchimp_key",
        triggers: &["-us"],
        word_start: false,
        pattern: r"[0-9a-f]{32}-us[0-9]{1,2}",
        back: 32,
        ahead: 8,
        check: Check::Random,
        ..BASE
    },
    RuleSpec {
        kind: "twilio_api_key",
        triggers: &["sk"],
        pattern: r"SK[0-9a-fA-F]{32}",
        before: Edge::Word,
        after: Edge::Word,
        check: Check::Random,
        ..BASE
    },
    RuleSpec {
        kind: "linear_key",
        triggers: &["lin_api_"],
        pattern: r"lin_api_[A-Za-z0-9]{40}",
        ..BASE
    },
    RuleSpec {
        kind: "notion_token",
        triggers: &["ntn_"],
        pattern: r"ntn_[0-9]{11}[A-Za-z0-9]{35}",
        check: Check::UpperLowerDigit,
        ..BASE
    },
    RuleSpec {
        kind: "notion_token",
        triggers: &["secret_"],
        pattern: r"secret_[A-Za-z0-9]{43}",
        check: Check::UpperLowerDigit,
        ..BASE
    },
    // --- Payments ----------------------------------------------------------------
    // Stripe secret and restricted keys (publishable "pk_" keys are public).
    RuleSpec {
        kind: "stripe_key",
        triggers: &["sk_live_", "sk_test_", "rk_live_", "rk_test_"],
        word_start: false,
        pattern: r"[sr]k_(?:live|test)_[A-Za-z0-9]{20,247}",
        before: Edge::Alnum,
        ahead: 260,
        ..BASE
    },
    RuleSpec {
        kind: "square_token",
        triggers: &["sq0csp-", "sq0atp-"],
        pattern: r"sq0(?:csp|atp)-[A-Za-z0-9_-]{22,43}",
        ..BASE
    },
    RuleSpec {
        kind: "square_token",
        triggers: &["eaaa"],
        pattern: r"EAAA[A-Za-z0-9_-]{60}",
        ..BASE
    },
    RuleSpec {
        kind: "shopify_token",
        triggers: &["shpat_", "shpca_", "shppa_", "shpss_"],
        pattern: r"shp(?:at|ca|pa|ss)_[a-fA-F0-9]{32}",
        ..BASE
    },
    // Facebook/Meta user or page access token, and app access token "id|secret".
    RuleSpec {
        kind: "facebook_token",
        triggers: &["eaa"],
        pattern: r"EAA[A-Za-z0-9]{100,400}",
        ahead: 420,
        check: Check::Random,
        ..BASE
    },
    RuleSpec {
        kind: "facebook_token",
        triggers: &["0|", "1|", "2|", "3|", "4|", "5|", "6|", "7|", "8|", "9|"],
        word_start: false,
        pattern: r"[0-9]{15,16}\|[A-Za-z0-9_-]{27}",
        back: 16,
        tail: 27,
        pre: Pre::RunBefore(Run::Digit, 15),
        ahead: 32,
        check: Check::Random,
        ..BASE
    },
    // --- AI providers --------------------------------------------------------------
    RuleSpec {
        kind: "anthropic_key",
        triggers: &["sk-ant-"],
        pattern: r"sk-ant-(?:api|admin|sid)[0-9]{2}-[A-Za-z0-9_-]{78,118}AA",
        ahead: 140,
        ..BASE
    },
    // OpenAI keys carry "T3BlbkFJ" (base64 of "OpenAI") in the middle.
    RuleSpec {
        kind: "openai_key",
        triggers: &["sk-"],
        pattern: r"sk-(?:(?:proj|svcacct|admin|None)-)?[A-Za-z0-9_-]{16,200}T3BlbkFJ[A-Za-z0-9_-]{16,200}",
        ahead: 420,
        requires: "T3BlbkFJ",
        ..BASE
    },
    RuleSpec {
        kind: "perplexity_key",
        triggers: &["pplx-"],
        pattern: r"pplx-[A-Za-z0-9]{48}",
        ..BASE
    },
    RuleSpec {
        kind: "huggingface_token",
        triggers: &["hf_"],
        pattern: r"hf_[A-Za-z]{34}",
        check: Check::MixedCase,
        ..BASE
    },
    RuleSpec {
        kind: "huggingface_token",
        triggers: &["api_org_"],
        pattern: r"api_org_[A-Za-z]{34}",
        check: Check::MixedCase,
        ..BASE
    },
    RuleSpec {
        kind: "intra42_secret",
        triggers: &["s-s4t2ud-", "s-s4t2af-"],
        pattern: r"s-s4t2(?:ud|af)-[a-f0-9]{64}",
        ..BASE
    },
    // --- Credentials recognised by their context -----------------------------------
    RuleSpec {
        kind: "sumologic_key",
        triggers: &["sumo"],
        word_start: false,
        native: Some(Native::SumoKey),
        ahead: 120,
        before: Edge::None,
        after: Edge::Word,
        priority: 1,
        ..BASE
    },
    // HTTP Authorization header value.
    RuleSpec {
        kind: "auth_header_token",
        triggers: &["authorization"],
        word_start: false,
        native: Some(Native::AuthHeader),
        before: Edge::None,
        after: Edge::None,
        priority: 1,
        ..BASE
    },
    // curl -u / --user user:password (also the "token:" form with an empty password).
    RuleSpec {
        kind: "basic_auth_credentials",
        triggers: &["-u", "--user"],
        word_start: false,
        native: Some(Native::CurlUser),
        ahead: 12,
        before: Edge::None,
        after: Edge::None,
        check: Check::CurlUser,
        pre: Pre::CurlUser,
        priority: 1,
        ..BASE
    },
    // scheme://user:password@host (database URLs, registries, git remotes).
    RuleSpec {
        kind: "basic_auth_url",
        triggers: &["://"],
        word_start: false,
        native: Some(Native::UrlCredential),
        before: Edge::None,
        after: Edge::None,
        priority: 1,
        ..BASE
    },
    // mysql/mariadb client with the password glued to -p.
    RuleSpec {
        kind: "password",
        triggers: &["mysql", "mariadb"],
        word_start: false,
        native: Some(Native::MysqlPassword),
        // The name, 120 bytes, ` -p`: where the `-p` must start by.
        ahead: 130,
        requires: "-p",
        before: Edge::None,
        after: Edge::None,
        priority: 1,
        ..BASE
    },
    // Passwords on command lines and in directives (twelfth attack pass,
    // finding 7): `docker login -p`, `sshpass -p`, `redis-cli -a`,
    // `ConvertTo-SecureString "…" -AsPlainText`, `requirepass`/`masterauth`.
    COMMAND_PASSWORD,
    // `oc login`, `az login`, read at `login` (see [`COMMAND_WORDS`]); in
    // the prefilter's group whose literals need not start a word, where it
    // costs prose least (its word start is checked by the reader).
    RuleSpec {
        triggers: &["login"],
        word_start: false,
        ..COMMAND_PASSWORD
    },
    // <add key="SmtpPassword" value="…"/> and similar settings files.
    RuleSpec {
        kind: "password",
        triggers: &["value=", "value ="],
        word_start: false,
        native: Some(Native::XmlAssignment),
        before: Edge::None,
        after: Edge::None,
        pre: Pre::XmlValue,
        priority: 2,
        ..BASE
    },
    // identifier <op> value, where the identifier names a password/secret/token/key.
    RuleSpec {
        kind: "generic_secret",
        triggers: &[
            "pass",
            "pwd",
            "secret",
            "token",
            "key",
            "credential",
            "auth",
            "psk",
        ],
        word_start: false,
        native: Some(Native::Assignment),
        before: Edge::None,
        after: Edge::None,
        priority: 2,
        ..BASE
    },
    // Prose: "… and pass 1ThQgdwWYpVoaOnSDu", "password is …"; SQL:
    // `WITH PASSWORD '…'`, `IDENTIFIED BY '…'`.
    RuleSpec {
        kind: "password",
        triggers: &["pass", "pwd", "identified"],
        word_start: true,
        native: Some(Native::ProsePassword),
        before: Edge::None,
        after: Edge::None,
        priority: 3,
        ..BASE
    },
];

fn skip_blanks(bytes: &[u8], mut i: usize) -> usize {
    while matches!(at(bytes, i), b' ' | b'\t') {
        i += 1;
    }
    i
}

/// Whether the trigger literal of `len` bytes at `pos` can be part of a match
/// of a rule with this pre-check (see [`Pre`]). Never false for a real match.
#[inline]
pub fn precheck(pre: Pre, bytes: &[u8], pos: usize, len: usize) -> bool {
    match pre {
        Pre::None => true,
        Pre::CurlUser => {
            matches!(before(bytes, pos), 0 | b' ' | b'\t')
                && matches!(at(bytes, pos + len), b' ' | b'\t' | b'=')
        }
        Pre::RunBefore(run, n) => {
            // Facebook's `<digits>|`: the trigger's own first byte is the
            // run's last; Telegram's `<digits>:AA` and Terraform's
            // `<14 alnum>.atlasv1.` have the run right before the trigger.
            let (from, to) = match run {
                Run::Digit if at(bytes, pos).is_ascii_digit() => {
                    (pos + 1).checked_sub(n).map(|f| (f, pos + 1))
                }
                _ => pos.checked_sub(n).map(|f| (f, pos)),
            }
            .unwrap_or((0, 0));
            to > from
                && bytes
                    .get(from..to)
                    .is_some_and(|s| s.iter().all(|&b| run.has(b)))
        }
        Pre::XmlValue => {
            let mut j = pos;
            if !matches!(before(bytes, j), b' ' | b'\t') {
                return false;
            }
            while matches!(before(bytes, j), b' ' | b'\t') {
                j -= 1;
            }
            let i = skip_blanks(bytes, pos + "value".len());
            matches!(before(bytes, j), b'"' | b'\'')
                && at(bytes, i) == b'='
                && matches!(at(bytes, skip_blanks(bytes, i + 1)), b'"' | b'\'')
        }
    }
}

/// A match accepted by a rule: byte span of the sensitive part and its kind.
#[derive(Clone, Copy, Debug)]
pub struct Found {
    pub start: usize,
    pub end: usize,
    pub kind: &'static str,
}

/// Span of the first participating capture group, else the whole match.
fn secret_span(caps: &Captures, offset: usize) -> Option<(usize, usize)> {
    let m = (1..caps.len())
        .find_map(|i| caps.get(i))
        .or_else(|| caps.get(0))?;
    Some((offset + m.start(), offset + m.end()))
}

/// Run a rule's post-check on one regex match. `offset` maps window to text.
pub fn accept(spec: &RuleSpec, text: &str, caps: &Captures, offset: usize) -> Option<Found> {
    let whole = caps.get(0)?;
    let (mstart, mend) = (offset + whole.start(), offset + whole.end());
    let (start, end) = secret_span(caps, offset)?;
    judge(spec, text, (mstart, mend), (start, end))
}

/// [`accept`] for a match without groups found by code: `[start, end)`.
pub fn accept_span(spec: &RuleSpec, text: &str, start: usize, end: usize) -> Option<Found> {
    judge(spec, text, (start, end), (start, end))
}

/// The match `[mstart, mend)` against the rule's edges, and its secret part
/// `[start, end)` against the rule's check.
fn judge(
    spec: &RuleSpec,
    text: &str,
    (mstart, mend): (usize, usize),
    (start, end): (usize, usize),
) -> Option<Found> {
    let bytes = text.as_bytes();
    if spec.before.blocks(before(bytes, mstart)) || spec.after.blocks(at(bytes, mend)) {
        return None;
    }
    let value = text.get(start..end)?;
    let found = |kind| Some(Found { start, end, kind });
    match spec.check {
        Check::Token => (!is_placeholder(value)).then_some(()).and(found(spec.kind)),
        Check::MixedCase => {
            let c = Classes::of(value);
            (c.upper && c.lower && !is_placeholder(value))
                .then_some(())
                .and(found(spec.kind))
        }
        Check::UpperLowerDigit => {
            let c = Classes::of(value);
            (c.upper && c.lower && c.digit && !is_placeholder(value))
                .then_some(())
                .and(found(spec.kind))
        }
        Check::Random => (entropy(value) >= 3.0 && !is_placeholder(value))
            .then_some(())
            .and(found(spec.kind)),
        Check::Slack => slack_ok(value).then_some(()).and(found(spec.kind)),
        Check::CurlUser => curl_user(text, mend),
    }
}

/// Slack tokens are dash-separated; the last segment is random (letters and
/// digits), and real tokens are at least 24 characters long.
fn slack_ok(token: &str) -> bool {
    if token.len() < 24 || is_placeholder(token) {
        return false;
    }
    let body = token.split_once('-').map_or("", |(_, b)| b);
    let segments: Vec<&str> = body.split('-').filter(|s| !s.is_empty()).collect();
    let Some(last) = segments.last() else {
        return false;
    };
    let c = Classes::of(last);
    segments.len() >= 2 && last.len() >= 8 && c.digit && (c.lower || c.upper)
}

/// What an identifier says its value is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SecretWord {
    /// password, passwd, pwd, pass, passphrase: chosen by a person.
    Password,
    /// secret: a person or a generator.
    Secret,
    /// token, key, credential, auth: generated.
    Token,
}

/// The words that make an identifier name a secret, and what kind of value
/// each names, by their last letter (lower case), longest first:
/// [`classify_identifier`] reads identifiers from the end.
fn secret_words_ending_with(last: u8) -> &'static [(&'static str, SecretWord)] {
    use SecretWord::{Password, Secret, Token};
    match last {
        // wpa_supplicant's `psk="…"`, hostapd's `wpa_psk=…`.
        b'k' => &[("psk", Password)],
        b'd' => &[
            ("password", Password),
            ("passwd", Password),
            ("pwd", Password),
        ],
        b'e' => &[("passphrase", Password)],
        b's' => &[("credentials", Token), ("pass", Password)],
        b't' => &[("secret", Secret)],
        b'n' => &[("token", Token)],
        b'y' => &[("apikey", Token), ("key", Token)],
        b'h' => &[("auth", Token)],
        b'l' => &[("credential", Token)],
        _ => &[],
    }
}

/// Words that, anywhere in the identifier, say the value is meant to be public.
static PUBLIC_WORDS: super::text::Needles =
    super::text::Needles::new(&["public", "publishable", "csrf", "xsrf"]);

/// What may follow the secret word in an identifier and still name the secret
/// itself (`db_password_secure`, `access_token2`, `secretValue`); anything else
/// (`_name`, `Id`, `_file`, `_ttl_seconds`, `Variable`) names something about it.
const SUFFIXES: &[&str] = &[
    "value",
    "secure",
    "str",
    "string",
    "b64",
    "base64",
    "hex",
    "raw",
    "enc",
    "encrypted",
    "plain",
    "text",
];

/// Case-insensitive: does `word` (lower-case) occur in `hay` at `i`?
fn word_at(hay: &[u8], i: usize, word: &[u8]) -> bool {
    hay.get(i..i + word.len())
        .is_some_and(|s| s.eq_ignore_ascii_case(word))
}

/// Case-insensitive substring test for a lower-case `word`. The first byte is
/// compared before the slice: this runs for every identifier that names a
/// secret, and most positions differ at once.
fn contains_word(hay: &[u8], word: &[u8]) -> bool {
    let Some(&first) = word.first() else {
        return true;
    };
    hay.iter()
        .enumerate()
        .any(|(i, b)| b.to_ascii_lowercase() == first && word_at(hay, i, word))
}

/// Classify an identifier such as `DB_PASSWORD`, `client_secret`, `X-API-Key`.
/// Byte comparisons only: this runs for every object key and every trigger.
pub fn classify_identifier(id: &str) -> Option<(SecretWord, &'static str)> {
    let l = id.trim_matches(|c| c == '"' || c == '\'').as_bytes();
    // The secret word that ends last decides (`password_reset_token_ttl` →
    // token; at one end the longer word, `password` over `pass`). Searched
    // from the end, so the first end holding a word is the answer: from the
    // start, every word at every position of a long identifier
    // (`pass_pass_…_pass`) was compared (eighth review F3).
    let best = (1..=l.len()).rev().find_map(|end| {
        secret_words_ending_with(at(l, end - 1).to_ascii_lowercase())
            .iter()
            .find(|(w, _)| end >= w.len() && word_at(l, end - w.len(), w.as_bytes()))
            .map(|(_, kind)| (end, *kind))
    });
    let (end, word) = best?;
    if PUBLIC_WORDS.any_in(l) {
        return None;
    }
    let rest = std::str::from_utf8(l.get(end..)?).ok()?;
    let ok = rest
        .split(['_', '-', '.'])
        .filter(|p| !p.is_empty())
        .all(|p| {
            SUFFIXES.iter().any(|s| p.eq_ignore_ascii_case(s))
                || p.bytes().all(|b| b.is_ascii_digit())
        });
    if !ok {
        return None;
    }
    let kind = match word {
        SecretWord::Password => "password",
        SecretWord::Secret | SecretWord::Token => "generic_secret",
    };
    Some((word, kind))
}

/// Whether `value` is plausibly the secret an identifier of this class names.
pub fn value_ok(word: SecretWord, _id: &str, value: &str) -> bool {
    match word {
        SecretWord::Password => is_strong_password(value),
        SecretWord::Secret => is_random_token(value) || is_strong_password(value),
        SecretWord::Token => is_random_token(value),
    }
}

/// Longest value [`read_value`] reads.
pub const VALUE_MAX: usize = 1024;
/// Longest span an `Authorization` header is read over: the name, 64 bytes
/// to the credential, the credential.
pub const AUTH_HEADER_MAX: usize = 13 + 64 + 4096;

/// Read the value that starts at `from`: quoted (to the closing quote) or bare
/// (to whitespace, a separator or `limit`). Returns the inner span.
fn read_value(text: &str, from: usize, form: ValueForm, limit: usize) -> Option<(usize, usize)> {
    let bytes = text.as_bytes();
    if form == ValueForm::ElementText {
        // `<password>value</password>`: one word up to the next tag, blanks
        // around it allowed (pretty-printed XML), or a CDATA section
        // (`<password> to log in` is prose about a placeholder).
        let start = from + run_len(bytes, from, |b| b.is_ascii_whitespace());
        let window = bytes.get(start..bytes.len().min(start + VALUE_MAX))?;
        if window.starts_with(b"<![CDATA[") {
            let inner = start + 9;
            let len = window.get(9..)?.windows(3).position(|w| w == b"]]>")?;
            return (len > 0).then_some((inner, inner + len));
        }
        let len = window
            .iter()
            .take_while(|b| !b.is_ascii_whitespace() && **b != b'<')
            .count();
        let after = start + len + run_len(bytes, start + len, |b| b.is_ascii_whitespace());
        return (len > 0 && at(bytes, after) == b'<').then_some((start, start + len));
    }
    // `\"password\":\"value\"`: JSON inside a JSON string (kubectl's
    // last-applied-configuration, logged bodies), its quotes escaped once
    // or more (`\\\"` inside a string inside a string).
    let escapes = run_len(bytes, from, |b| b == b'\\');
    if escapes > 0 && matches!(at(bytes, from + escapes), b'"' | b'\'') {
        let q = at(bytes, from + escapes);
        let start = from + escapes + 1;
        let mut i = start;
        while i < bytes.len() && i - start <= VALUE_MAX {
            match at(bytes, i) {
                b'\\' => {
                    let run = run_len(bytes, i, |b| b == b'\\');
                    if run == escapes && at(bytes, i + run) == q {
                        return Some((start, i));
                    }
                    i += run + 1;
                }
                b'\n' => return None,
                _ => i += 1,
            }
        }
        return None;
    }
    let q = at(bytes, from);
    if matches!(q, b'"' | b'\'' | b'`') {
        let start = from + 1;
        let mut i = start;
        while i < bytes.len() && i - start <= VALUE_MAX {
            let b = at(bytes, i);
            if b == b'\\' {
                i += 2;
                continue;
            }
            if b == q {
                return Some((start, i));
            }
            if b == b'\n' {
                return None;
            }
            i += 1;
        }
        return None;
    }
    if form == ValueForm::QuotedOnly {
        return None;
    }
    let end_limit = limit.min(bytes.len()).max(from).min(from + VALUE_MAX);
    let bare_run = |i: usize| {
        bytes.get(i..end_limit).map_or(0, |rest| {
            rest.iter()
                .take_while(|b| {
                    let ends = b.is_ascii_whitespace()
                        || matches!(**b, b'"' | b'\'' | b'`' | b',' | b';' | b'&')
                        || (form == ValueForm::Flow && matches!(**b, b'}' | b']'));
                    !ends
                })
                .count()
        })
    };
    let mut end = from + bare_run(from);
    if end == from {
        return None;
    }
    // A shell word glues quoted pieces to bare ones (`Sup3r"S3cret"x` is the
    // one value `Sup3rS3cretx`), so a quote right after a bare run continues
    // the value when its piece closes inside the word. A piece holding a
    // separator (`abc","user":"x"`) is the end of a quoted string around the
    // assignment, not part of its value.
    while let q @ (b'"' | b'\'' | b'`') = at(bytes, end) {
        let piece = bytes.get(end + 1..end_limit).unwrap_or_default();
        let Some(close) = piece.iter().position(|b| {
            *b == q || b.is_ascii_whitespace() || matches!(*b, b',' | b';' | b'&' | b':')
        }) else {
            break;
        };
        if at(piece, close) != q || close == 0 {
            break;
        }
        end += close + 2;
        end += bare_run(end);
    }
    Some((from, end))
}

/// How far the assignment matcher reads an identifier after its secret word:
/// an identifier that runs on past this finds no operator and matches nothing.
pub const IDENT_AHEAD: usize = 80;

pub fn is_ident_byte(b: u8) -> bool {
    b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.')
}

/// What an assignment's operator lets be read as its value.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ValueForm {
    /// `=`, `:`, `=>`, …: a quoted literal or a bare word.
    Any,
    /// After `(`, `==`, `!=`: only a quoted literal is a value.
    QuotedOnly,
    /// A member of `{…}` joined by `,` (JSON, YAML flow): a quoted literal
    /// or a bare word, which also ends at `}` and `]`.
    Flow,
    /// After the `>` of `<password>` or `<entry key="db.password">`: the
    /// element's text, up to the next tag.
    ElementText,
}

/// The identifier and operator around a secret word, read before its value:
/// what [`assignment_value`] needs, and where the assignment begins (a value
/// read for an earlier one ends there).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct AssignmentHead {
    /// The identifier `[id_start, id_end)` holding the secret word.
    pub id_start: usize,
    pub id_end: usize,
    /// Where the value starts (after the operator and blanks).
    pub value_from: usize,
    /// What may be read as the value.
    pub form: ValueForm,
    word: SecretWord,
    kind: &'static str,
}

/// `identifier <op>` around the secret word found at `pos`: the identifier
/// is the run of `[A-Za-z0-9_.-]` holding it (at most 40 bytes before and 80
/// after the word), the operator one of `= : := => == === != !== (` after an
/// optional closing quote, and the identifier must name a secret.
pub fn assignment_head(text: &str, pos: usize) -> Option<AssignmentHead> {
    let bytes = text.as_bytes();
    let mut s = pos;
    while s > 0 && pos - s < 40 && is_ident_byte(at(bytes, s - 1)) {
        s -= 1;
    }
    let mut e = pos;
    while e < bytes.len() && e - pos < IDENT_AHEAD && is_ident_byte(at(bytes, e)) {
        e += 1;
    }
    let mut i = e;
    // The identifier's closing quote: `"`, `'`, or, inside a JSON string,
    // `\"` (and `\\\"` inside a string inside that one, …).
    let escapes = run_len(bytes, i, |b| b == b'\\');
    let quoted = match at(bytes, i + escapes) {
        b'"' if escapes > 0 => escapes + 1,
        b'"' | b'\'' if escapes == 0 => 1,
        _ => 0,
    };
    i += quoted;
    // A name/value pair as text: `"Name": "DB_PASSWORD", "Value": "…"`,
    // `- name: DB_PASSWORD` / `  value: …`.
    if let Some((value_from, form)) = named_pair(bytes, s, e, quoted) {
        let (word, kind) = classify_identifier(text.get(s..e)?)?;
        return Some(AssignmentHead {
            id_start: s,
            id_end: e,
            value_from,
            form,
            word,
            kind,
        });
    }
    // XML: the value is an element's text (eighth and ninth reviews).
    if let Some(value_from) = element_text_start(bytes, s, e, quoted) {
        let (word, kind) = classify_identifier(text.get(s..e)?)?;
        return Some(AssignmentHead {
            id_start: s,
            id_end: e,
            value_from,
            form: ValueForm::ElementText,
            word,
            kind,
        });
    }
    // A subscript: `os.environ['DB_PASSWORD'] = …`, `ENV["API_KEY"] = …`,
    // `$cfg['password'] = …` (the key quoted inside `[…]`).
    if quoted == 1
        && at(bytes, i) == b']'
        && s > 1
        && before(bytes, s) == at(bytes, e)
        && before(bytes, s - 1) == b'['
    {
        i += 1;
    }
    while matches!(at(bytes, i), b' ' | b'\t') {
        i += 1;
    }
    // One of `=== !== == != := => = : (`, longest first; matched on bytes
    // (no slice comparisons) since most triggers end here.
    let op_len = match (at(bytes, i), at(bytes, i + 1), at(bytes, i + 2)) {
        (b'=' | b'!', b'=', b'=') => 3,
        (b'=' | b'!' | b':', b'=', _) | (b'=', b'>', _) => 2,
        (b'=' | b':' | b'(', _, _) => 1,
        _ => return None,
    };
    let form = if matches!(at(bytes, i), b'(' | b'!')
        || (at(bytes, i) == b'=' && at(bytes, i + 1) == b'=')
    {
        ValueForm::QuotedOnly
    } else {
        ValueForm::Any
    };
    i += op_len;
    // `::` (C++/Rust paths) and `=>` arrows into code are not assignments of literals.
    if at(bytes, i) == b':' {
        return None;
    }
    while matches!(at(bytes, i), b' ' | b'\t') {
        i += 1;
    }
    let (word, kind) = classify_identifier(text.get(s..e)?)?;
    Some(AssignmentHead {
        id_start: s,
        id_end: e,
        value_from: i,
        form,
        word,
        kind,
    })
}

/// How far past an open tag's name or attribute the tag may run to its `>`.
const OPEN_TAG_MAX: usize = 256;

/// Where the text of the element an identifier `[s, e)` names begins, if it
/// names one:
/// - the element's own name: `<password>`, `<ns:password>`,
///   `<password type="plain">`;
/// - a `key=`/`name=` attribute: `<entry key="db.password" type="string">`
///   (`quoted`: the identifier's closing quote is `quoted` bytes long);
/// - a `<name>` (or `<key>`) element followed by its `<value>` (Hadoop's
///   `*-site.xml`): `<name>javax.jdo.option.ConnectionPassword</name>
///   <value>…</value>`.
fn element_text_start(bytes: &[u8], s: usize, e: usize, quoted: usize) -> Option<usize> {
    // To the end of the open tag from `from`: attributes, no other tag,
    // not self-closing.
    let tag_end = |from: usize| {
        let len = bytes
            .get(from..bytes.len().min(from + OPEN_TAG_MAX))?
            .iter()
            .take_while(|b| !matches!(**b, b'>' | b'<'))
            .count();
        (at(bytes, from + len) == b'>' && before(bytes, from + len) != b'/')
            .then_some(from + len + 1)
    };
    match quoted {
        0 => {
            let mut name_start = s;
            // `ns:password`: a prefix of name bytes before a `:`.
            if before(bytes, s) == b':' {
                name_start = s - 1;
                while name_start > 0
                    && s - name_start < 64
                    && is_ident_byte(before(bytes, name_start))
                {
                    name_start -= 1;
                }
            }
            if before(bytes, name_start) == b'<' {
                return match at(bytes, e) {
                    b'>' => Some(e + 1),
                    b' ' | b'\t' | b'\r' | b'\n' => tag_end(e),
                    _ => None,
                };
            }
            name_value_pair(bytes, s, e)
        }
        1 if names_attribute(bytes, s) => tag_end(e + 1),
        _ => None,
    }
}

/// Keys whose text names the value a sibling member holds, in any case:
/// Kubernetes `env`, AWS `Name`/`Key`, CloudFormation `ParameterKey`,
/// `{"field": "password", …}`, 1Password's `id`/`label`/`purpose`.
pub const PAIR_NAME_KEYS: &[&str] = &[
    "name",
    "key",
    "parameterkey",
    "parametername",
    "field",
    "label",
    "id",
    "purpose",
];

/// Keys of the member a sibling of [`PAIR_NAME_KEYS`] names, in any case:
/// `value`/`Value`, CloudFormation `ParameterValue`, `SecretValue`.
pub const PAIR_VALUE_KEYS: &[&str] = &["value", "parametervalue", "secretvalue"];

/// Whether `key` (unquoted) is one of `keys`, ignoring ASCII case.
pub fn is_pair_key(key: &[u8], keys: &[&str]) -> bool {
    keys.iter().any(|k| key.eq_ignore_ascii_case(k.as_bytes()))
}

/// How far a name/value pair reader reads past the name's member for its
/// value (or back before it): members between the two are short
/// (`"Type": "SecureString"`), and each byte is read by one name at most
/// (a reading stops at the next name key), so the scan stays linear.
const PAIR_SPAN: usize = 512;

/// Members a pair reader steps over between a name and its value.
const PAIR_MEMBERS_BETWEEN: usize = 4;

/// How the member naming an identifier is written.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum PairStyle {
    /// `{"name": "X", …}` or YAML flow `{name: X, …}`: members joined by `,`.
    Inline,
    /// YAML block: `- name: X` then `  value: …` on a line of its own, the
    /// key at the same column.
    Block { column: usize },
}

/// A name/value pair read as text: `{"Name": "DB_PASSWORD", "Value": "…"}`
/// (compact or pretty-printed, keys in any case and order, up to four
/// members between), YAML flow `{name: DB_PASSWORD, value: …}` and
/// Kubernetes YAML `- name: DB_PASSWORD` / `  value: …` (what
/// `kubectl -o yaml` prints). For the identifier `[s, e)` whose closing
/// quote is `quoted` bytes long: where the value it names begins, and how
/// it may be read. Every step is a byte test with a bounded reach; the
/// reading stops at the next name key, so no byte is read for two names.
fn named_pair(bytes: &[u8], s: usize, e: usize, quoted: usize) -> Option<(usize, ValueForm)> {
    if quoted > 1 {
        return None;
    }
    let (key_start, style) = pair_name_before(bytes, s, quoted)?;
    let after = e + quoted;
    let found = match style {
        PairStyle::Inline => inline_value_after(bytes, after).map(|v| (v, ValueForm::Flow)),
        PairStyle::Block { column } => {
            block_value_after(bytes, after, column).map(|v| (v, ValueForm::Any))
        }
    };
    found.or_else(|| match style {
        // Keys sorted or written value first: `{"value": "…", "name": "X"}`.
        PairStyle::Inline => inline_value_before(bytes, key_start).map(|v| (v, ValueForm::Flow)),
        PairStyle::Block { .. } => None,
    })
}

/// Whether the identifier starting at `s` (its opening quote right before
/// it when `quoted`) is the text of a name key's member: `"name": "X"`,
/// `name: X`, `'Key': 'X'`. A path before it (`"/prod/db/DB_PASSWORD"`,
/// SSM parameter names) belongs to it. Returns where the key (with its
/// quote) starts, and how the member is written.
fn pair_name_before(bytes: &[u8], s: usize, quoted: usize) -> Option<(usize, PairStyle)> {
    let mut j = s;
    if before(bytes, j) == b'/' {
        let path = bytes
            .get(j.saturating_sub(128)..j)?
            .iter()
            .rev()
            .take_while(|b| is_ident_byte(**b) || **b == b'/')
            .count();
        j -= path;
    }
    if quoted == 1 {
        if !matches!(before(bytes, j), b'"' | b'\'') {
            return None;
        }
        j -= 1;
    }
    let ws_back = |mut j: usize, any: bool| {
        while j > 0 && {
            let b = before(bytes, j);
            b == b' ' || b == b'\t' || (any && b.is_ascii_whitespace())
        } {
            j -= 1;
        }
        j
    };
    j = ws_back(j, false);
    if before(bytes, j) != b':' {
        return None;
    }
    j = ws_back(j - 1, false);
    let key_quote = matches!(before(bytes, j), b'"' | b'\'');
    if key_quote {
        j -= 1;
    }
    let name_len = bytes
        .get(j.saturating_sub(16)..j)?
        .iter()
        .rev()
        .take_while(|b| b.is_ascii_alphabetic())
        .count();
    let key = bytes.get(j - name_len..j)?;
    if !is_pair_key(key, PAIR_NAME_KEYS) {
        return None;
    }
    let mut k = j - name_len;
    if key_quote {
        if before(bytes, k) != at(bytes, j) {
            return None;
        }
        k -= 1;
    }
    // What opens the member: `{` or `,` (inline), or a line start with
    // indentation and an optional `- ` (a YAML block member).
    let inline = ws_back(k, true);
    if matches!(before(bytes, inline), b'{' | b',') {
        return Some((k, PairStyle::Inline));
    }
    let mut m = ws_back(k, false);
    if before(bytes, m) == b'-' {
        m = ws_back(m - 1, false);
    }
    // `m` is then the line's start: the key's column is its indentation.
    (m == 0 || before(bytes, m) == b'\n').then_some((k, PairStyle::Block { column: k - m }))
}

/// Length of the run of `pred` bytes ending at `to`, counted up to `most`.
fn run_len_back(bytes: &[u8], to: usize, most: usize, pred: impl Fn(u8) -> bool) -> usize {
    bytes
        .get(to.saturating_sub(most)..to)
        .map_or(0, |s| s.iter().rev().take_while(|b| pred(**b)).count())
}

/// Length of the run of `pred` bytes starting at `from`, counted up to `most`.
fn run_len_within(bytes: &[u8], from: usize, most: usize, pred: impl Fn(u8) -> bool) -> usize {
    bytes
        .get(from..bytes.len().min(from.saturating_add(most)))
        .map_or(0, |s| s.iter().take_while(|b| pred(**b)).count())
}

/// The key of a member starting at `i` (`"Value"`, `'value'`, `value`):
/// its bytes and where its `:` has been passed (and blanks after it).
fn member_key(bytes: &[u8], i: usize) -> Option<(&[u8], usize)> {
    let q = at(bytes, i);
    let quoted = matches!(q, b'"' | b'\'');
    let start = i + usize::from(quoted);
    let len = run_len_within(bytes, start, 64, is_ident_byte);
    let key = bytes.get(start..start + len)?;
    let mut j = start + len;
    if quoted {
        if at(bytes, j) != q {
            return None;
        }
        j += 1;
    }
    j = skip_blanks(bytes, j);
    if len == 0 || at(bytes, j) != b':' {
        return None;
    }
    Some((key, skip_blanks(bytes, j + 1)))
}

/// Where a scalar member value starting at `i` ends: a quoted string (to its
/// unescaped closing quote on the same line) or a bare run up to `,`, `}`,
/// `]` or a line end. None for an object, an array or an unreadable value.
fn scalar_end(bytes: &[u8], i: usize, limit: usize) -> Option<usize> {
    let q = at(bytes, i);
    if matches!(q, b'"' | b'\'') {
        let mut j = i + 1;
        while j < limit {
            match at(bytes, j) {
                b'\\' => j += 2,
                b'\n' | 0 => return None,
                b if b == q => return Some(j + 1),
                _ => j += 1,
            }
        }
        return None;
    }
    let len = run_len_within(bytes, i, limit.saturating_sub(i), |b| {
        !matches!(b, b',' | b'}' | b']' | b'{' | b'[' | b'\n' | b'\r')
    });
    (len > 0 && !matches!(q, b'{' | b'[')).then_some(i + len)
}

/// After an inline name member ending at `from`: members joined by `,`
/// (none of them a name key) up to one whose key names a value; where that
/// value begins.
fn inline_value_after(bytes: &[u8], from: usize) -> Option<usize> {
    let limit = bytes.len().min(from + PAIR_SPAN);
    let ws = |i: usize| i + run_len(bytes, i, |b| b.is_ascii_whitespace());
    let mut i = from;
    for _ in 0..=PAIR_MEMBERS_BETWEEN {
        i = ws(i);
        if at(bytes, i) != b',' {
            return None;
        }
        let (key, value) = member_key(bytes, ws(i + 1))?;
        if is_pair_key(key, PAIR_VALUE_KEYS) {
            return Some(value);
        }
        if is_pair_key(key, PAIR_NAME_KEYS) {
            return None;
        }
        i = scalar_end(bytes, value, limit)?;
    }
    None
}

/// Before an inline name member whose key starts at `key_start`: members
/// joined by `,`, read right to left (none a name key), back to one whose
/// key names a value; where that value begins.
fn inline_value_before(bytes: &[u8], key_start: usize) -> Option<usize> {
    let floor = key_start.saturating_sub(PAIR_SPAN);
    let ws_back = |mut j: usize| {
        while j > floor && before(bytes, j).is_ascii_whitespace() {
            j -= 1;
        }
        j
    };
    let mut j = key_start;
    for _ in 0..=PAIR_MEMBERS_BETWEEN {
        j = ws_back(j);
        if j <= floor || before(bytes, j) != b',' {
            return None;
        }
        j = ws_back(j - 1);
        // The member's value, right to left: a quoted string (its opening
        // quote is the first unescaped one before its closing quote) or a
        // bare scalar.
        let q = before(bytes, j);
        let value_start = if matches!(q, b'"' | b'\'') {
            let mut o = j - 1;
            loop {
                if o <= floor {
                    return None;
                }
                match before(bytes, o) {
                    b'\n' => return None,
                    b if b == q
                        && run_len_back(bytes, o - 1, PAIR_SPAN, |b| b == b'\\') % 2 == 0 =>
                    {
                        break
                    }
                    _ => o -= 1,
                }
            }
            o - 1
        } else {
            let len = run_len_back(bytes, j, 64, |b| {
                !matches!(b, b',' | b':' | b'{' | b'}' | b'[' | b']' | b'"' | b'\'')
                    && !b.is_ascii_whitespace()
            });
            if len == 0 {
                return None;
            }
            j - len
        };
        let mut k = ws_back(value_start);
        if k <= floor || before(bytes, k) != b':' {
            return None;
        }
        k = ws_back(k - 1);
        let kq = before(bytes, k);
        let key_quoted = matches!(kq, b'"' | b'\'');
        if key_quoted {
            k -= 1;
        }
        let len = run_len_back(bytes, k, 64, is_ident_byte);
        let key = bytes.get(k - len..k)?;
        if is_pair_key(key, PAIR_VALUE_KEYS) {
            return Some(value_start);
        }
        if len == 0 || is_pair_key(key, PAIR_NAME_KEYS) {
            return None;
        }
        j = k - len - usize::from(key_quoted);
    }
    None
}

/// After a YAML block name member ending at `from` whose key is at `column`:
/// lines whose key is at the same column (none a name key), up to one whose
/// key names a value (`value:`, not `valueFrom:`); where that value begins.
fn block_value_after(bytes: &[u8], from: usize, column: usize) -> Option<usize> {
    let limit = bytes.len().min(from + PAIR_SPAN);
    let mut i = skip_blanks(bytes, from);
    for _ in 0..=PAIR_MEMBERS_BETWEEN {
        if at(bytes, i) == b'\r' {
            i += 1;
        }
        if at(bytes, i) != b'\n' {
            return None;
        }
        let indent = run_len(bytes, i + 1, |b| b == b' ');
        if indent != column {
            return None;
        }
        let (key, value) = member_key(bytes, i + 1 + indent)?;
        if is_pair_key(key, PAIR_VALUE_KEYS) {
            // `value:` then a blank and the value on its line (a block
            // scalar `|` or a map on the next lines is not read).
            let on_line = before(bytes, value) != b':'
                && !matches!(at(bytes, value), b'\n' | b'\r' | 0 | b'|' | b'>' | b'#');
            return on_line.then_some(value);
        }
        if is_pair_key(key, PAIR_NAME_KEYS) {
            return None;
        }
        // The rest of the line.
        i = value + run_len_within(bytes, value, limit.saturating_sub(value), |b| b != b'\n');
        if i >= limit {
            return None;
        }
    }
    None
}

/// `<name>ID</name>` (or `<key>`) then blanks and `<value>`: where the value
/// element's text begins, for the identifier `[s, e)`.
fn name_value_pair(bytes: &[u8], s: usize, e: usize) -> Option<usize> {
    let opened = ["<name>", "<key>"]
        .iter()
        .find(|t| word_ends_at(bytes, s, t))?;
    let close = if opened.len() == 6 {
        "</name>"
    } else {
        "</key>"
    };
    let after_close = e + close.len();
    if !bytes
        .get(e..after_close)
        .is_some_and(|b| b.eq_ignore_ascii_case(close.as_bytes()))
    {
        return None;
    }
    let v = after_close + run_len(bytes, after_close, |b| b.is_ascii_whitespace());
    bytes
        .get(v..v + 7)
        .is_some_and(|b| b.eq_ignore_ascii_case(b"<value>"))
        .then_some(v + 7)
}

/// Whether `word` ends at `end`, ignoring ASCII case, and does not continue
/// an identifier before it.
fn word_ends_at(bytes: &[u8], end: usize, word: &str) -> bool {
    end.checked_sub(word.len()).is_some_and(|st| {
        bytes
            .get(st..end)
            .is_some_and(|w| w.eq_ignore_ascii_case(word.as_bytes()))
            && !is_ident_byte(before(bytes, st))
    })
}

/// Whether the quoted identifier starting at `s` is named by what stands
/// before its opening quote, right to left: blanks, `op`, blanks, one of
/// `names` (`key="db.password"`, `"name": "DB_PASSWORD"`).
fn named_by(bytes: &[u8], s: usize, op: u8, names: &[&str]) -> bool {
    let blanks_before = |mut j: usize| {
        while j > 0 && before(bytes, j).is_ascii_whitespace() {
            j -= 1;
        }
        j
    };
    if !matches!(before(bytes, s), b'"' | b'\'') {
        return false;
    }
    let j = blanks_before(s - 1);
    if j == 0 || before(bytes, j) != op {
        return false;
    }
    let j = blanks_before(j - 1);
    names.iter().any(|w| word_ends_at(bytes, j, w))
}

/// Whether the quoted identifier starting at `s` is the value of a `key=` or
/// `name=` attribute (`<entry key="db.password">`).
fn names_attribute(bytes: &[u8], s: usize) -> bool {
    named_by(bytes, s, b'=', &["key", "name"])
}

/// The value of the assignment `head`, judged by what its identifier names.
/// A bare value ends at `limit` too: where the next assignment begins. So
/// the values of a run of assignments (`password=password=…`) are disjoint
/// and each byte is read once; before, every trigger read and judged the
/// whole rest of the run (up to 1 KiB) again.
pub fn assignment_value(text: &str, head: &AssignmentHead, limit: usize) -> Option<Found> {
    let (start, end) = read_value(text, head.value_from, head.form, limit)?;
    let value = text.get(start..end)?;
    let id = text.get(head.id_start..head.id_end)?;
    if !value_ok(head.word, id, value) {
        return None;
    }
    let kind = if value.len() == 40 && contains_word(id.as_bytes(), b"aws") {
        "aws_secret_key"
    } else {
        head.kind
    };
    Some(Found { start, end, kind })
}

/// Prose: the whole word `password`/`passwd`/`passphrase`/`pass`/`pwd` at `pos`,
/// optionally "is"/"was", then a strong password.
pub fn prose_password_at(text: &str, pos: usize) -> Option<Found> {
    let bytes = text.as_bytes();
    let wlen = super::text::run_len(bytes, pos, |b| b.is_ascii_alphabetic());
    // A blank must follow the word: checked first, as most words fail here.
    if !matches!(at(bytes, pos + wlen), b' ' | b'\t') {
        return None;
    }
    let word = bytes.get(pos..pos + wlen)?;
    let mut i = pos + wlen;
    let skip_blanks = |i: usize| skip_blanks(bytes, i);
    let gap = skip_blanks(i);
    if gap == i {
        return None;
    }
    i = gap;
    if word.eq_ignore_ascii_case(b"identified") {
        // SQL's `IDENTIFIED BY '…'`: only a quoted literal.
        let by = text
            .get(i..i + 2)
            .is_some_and(|w| w.eq_ignore_ascii_case("by"));
        let from = skip_blanks(i + 2);
        if !by || from == i + 2 || !matches!(at(bytes, from), b'\'' | b'"') {
            return None;
        }
        return quoted_prose_password(text, from);
    }
    if ![&b"password"[..], b"passwd", b"passphrase", b"pass", b"pwd"]
        .iter()
        .any(|w| word.eq_ignore_ascii_case(w))
    {
        return None;
    }
    for filler in ["is", "was"] {
        let flen = filler.len();
        if text
            .get(i..i + flen)
            .is_some_and(|w| w.eq_ignore_ascii_case(filler))
            && matches!(at(bytes, i + flen), b' ' | b'\t')
        {
            i = skip_blanks(i + flen);
        }
    }
    // `WITH PASSWORD '…'` (SQL), "the password 'x'": a quoted literal.
    if matches!(at(bytes, i), b'\'' | b'"') {
        return quoted_prose_password(text, i);
    }
    let vlen = super::text::run_len(bytes, i, |b| {
        !b.is_ascii_whitespace() && b != b'"' && b != b'\''
    });
    if !(8..=128).contains(&vlen) {
        return None;
    }
    let value = text.get(i..i + vlen)?;
    is_strong_password(value).then_some(Found {
        start: i,
        end: i + vlen,
        kind: "password",
    })
}

/// The strong password quoted at `q` (`'…'` or `"…"`, one line, 8 to 128
/// bytes), for the prose and SQL forms.
fn quoted_prose_password(text: &str, q: usize) -> Option<Found> {
    let bytes = text.as_bytes();
    let quote = at(bytes, q);
    let start = q + 1;
    let vlen = super::text::run_len(bytes, start, |b| b != quote && b != b'\n');
    if !(8..=128).contains(&vlen) || at(bytes, start + vlen) != quote {
        return None;
    }
    let value = text.get(start..start + vlen)?;
    is_strong_password(value).then_some(Found {
        start,
        end: start + vlen,
        kind: "password",
    })
}

/// `sumo(?:logic)?[_.-]?access[_.-]?(id|key)["']?\s*[:=]\s*["']?([A-Za-z0-9]{12,64})`,
/// case-insensitive, at the `sumo` at `pos`, no word byte after the value:
/// an access id is 14 characters starting `su`, a key 64; either mixes two
/// classes and is no placeholder. Each optional part is taken when present
/// (without it the next part cannot match), so one forward reading decides.
pub fn sumo_key_at(text: &str, pos: usize) -> Option<Found> {
    let bytes = text.as_bytes();
    let word = |i: usize, w: &[u8]| {
        bytes
            .get(i..i + w.len())
            .is_some_and(|s| s.eq_ignore_ascii_case(w))
    };
    let space = |b: u8| matches!(b, b' ' | b'\t' | b'\n' | b'\x0b' | b'\x0c' | b'\r');
    let opt = |i: usize, ok: &dyn Fn(u8) -> bool| if ok(at(bytes, i)) { i + 1 } else { i };
    let sep = |b: u8| matches!(b, b'_' | b'.' | b'-');
    let quote = |b: u8| matches!(b, b'"' | b'\'');
    if !word(pos, b"sumo") {
        return None;
    }
    let mut i = pos + 4;
    if word(i, b"logic") {
        i += 5;
    }
    i = opt(i, &sep);
    if !word(i, b"access") {
        return None;
    }
    i = opt(i + 6, &sep);
    let is_id = word(i, b"id");
    if is_id {
        i += 2;
    } else if word(i, b"key") {
        i += 3;
    } else {
        return None;
    }
    i = opt(i, &quote);
    i += super::text::run_len(bytes, i, space);
    if !matches!(at(bytes, i), b':' | b'=') {
        return None;
    }
    i += 1;
    i += super::text::run_len(bytes, i, space);
    i = opt(i, &quote);
    let len = super::text::run_len(bytes, i, |b| b.is_ascii_alphanumeric());
    if !(12..=64).contains(&len) || is_word_byte(at(bytes, i + len)) {
        return None;
    }
    let v = text.get(i..i + len)?;
    let shape = if is_id {
        v.len() == 14 && v.starts_with("su")
    } else {
        v.len() == 64
    };
    (shape && Classes::of(v).count() >= 2 && !is_placeholder(v)).then_some(Found {
        start: i,
        end: i + len,
        kind: "sumologic_key",
    })
}

/// `(?:mysql|mysqldump|mariadb)[^\n]{0,120}?[ \t]-p(?:'(v)'|"(v)"|(v))`,
/// case-insensitive, at the client name at `pos`: the first `[ \t]-p` (any
/// case) on its line at most 120 bytes after the name whose value has one of
/// the three shapes (single-quoted or double-quoted 1-128 bytes without a
/// line break, or bare: 1-128 bytes that are no blank or quote and do not
/// start with `-`); that value must be a strong password.
pub fn mysql_password_at(text: &str, pos: usize) -> Option<Found> {
    let bytes = text.as_bytes();
    let word = |w: &[u8]| {
        bytes
            .get(pos..pos + w.len())
            .is_some_and(|s| s.eq_ignore_ascii_case(w))
    };
    let (first, last) = if word(b"mysqldump") {
        (pos + 5, pos + 9 + 120)
    } else if word(b"mysql") {
        (pos + 5, pos + 5 + 120)
    } else if word(b"mariadb") {
        (pos + 7, pos + 7 + 120)
    } else {
        return None;
    };
    let space = |b: u8| matches!(b, b' ' | b'\t' | b'\n' | b'\x0b' | b'\x0c' | b'\r');
    let mut p = first;
    while p <= last && p < bytes.len() && at(bytes, p) != b'\n' {
        if matches!(at(bytes, p), b' ' | b'\t')
            && at(bytes, p + 1) == b'-'
            && at(bytes, p + 2).eq_ignore_ascii_case(&b'p')
        {
            let v = p + 3;
            let q = at(bytes, v);
            let span = if q == b'\'' || q == b'"' {
                let n = super::text::run_len(bytes, v + 1, |b| b != q && b != b'\n');
                ((1..=128).contains(&n) && at(bytes, v + 1 + n) == q).then_some((v + 1, v + 1 + n))
            } else if q != 0 && !space(q) && q != b'-' {
                let n = super::text::run_len(bytes, v, |b| !space(b) && b != b'\'' && b != b'"');
                Some((v, super::text::floor_boundary(text, v + n.min(128))))
            } else {
                None
            };
            if let Some((start, end)) = span {
                let value = text.get(start..end)?;
                return is_strong_password(value).then_some(Found {
                    start,
                    end,
                    kind: "password",
                });
            }
        }
        p += 1;
    }
    None
}

/// The rule of [`command_password_at`], triggered by [`COMMAND_WORDS`].
const COMMAND_PASSWORD: RuleSpec = RuleSpec {
    kind: "password",
    triggers: &COMMAND_WORDS,
    native: Some(Native::CommandPassword),
    ahead: COMMAND_LINE_MAX,
    before: Edge::None,
    after: Edge::None,
    priority: 1,
    ..BASE
};

/// How far a command's words are read on its line.
pub const COMMAND_LINE_MAX: usize = 256;

/// The next shell word at or after `i` before `to`: blanks and line breaks
/// (inside a command's span only continued ones) skipped, then a quoted
/// string (to its closing quote; `$'…'` is bash's) or a run of non-blanks.
/// Returns its span, quotes included.
fn next_shell_word(bytes: &[u8], i: usize, to: usize) -> Option<(usize, usize)> {
    let s = i + run_len_within(bytes, i, to.saturating_sub(i), |b| {
        matches!(b, b' ' | b'\t' | b'\n' | b'\r')
    });
    if s >= to {
        return None;
    }
    let dollar = usize::from(at(bytes, s) == b'$' && matches!(at(bytes, s + 1), b'\'' | b'"'));
    let q = at(bytes, s + dollar);
    if matches!(q, b'"' | b'\'') {
        let len = dollar
            + 2
            + bytes
                .get(s + dollar + 1..to)?
                .iter()
                .position(|b| *b == q)?;
        return Some((s, s + len));
    }
    // A word goes on through a quoted part (`-p"two words"`) and an escaped
    // blank (`two\ words`), as a shell reads it.
    let mut e = s;
    while e < to {
        match at(bytes, e) {
            b' ' | b'\t' | b'\n' | b'\r' => break,
            b'\\' if matches!(at(bytes, e + 1), b' ' | b'\t') => e += 2,
            q @ (b'"' | b'\'') => {
                match bytes
                    .get(e + 1..to)
                    .and_then(|r| r.iter().position(|b| *b == q))
                {
                    Some(n) => e += n + 2,
                    None => e += 1,
                }
            }
            _ => e += 1,
        }
    }
    Some((s, e.min(to)))
}

/// A word's span without its quotes (`"…"`, `'…'`, `$'…'`).
fn unquoted(bytes: &[u8], (s, e): (usize, usize)) -> (usize, usize) {
    let s = s + usize::from(
        at(bytes, s) == b'$' && matches!(at(bytes, s + 1), b'\'' | b'"') && e >= s + 3,
    );
    let q = at(bytes, s);
    if e >= s + 2 && matches!(q, b'"' | b'\'') && at(bytes, e - 1) == q {
        (s + 1, e - 1)
    } else {
        (s, e)
    }
}

/// Whether `b` continues a command on the next line when it ends one: `\`
/// in a POSIX shell, `` ` `` in PowerShell, `^` in cmd.
fn continues_line(b: u8) -> bool {
    matches!(b, b'\\' | b'`' | b'^')
}

/// Whether a line break starts at `i`.
fn line_break_at(bytes: &[u8], i: usize) -> bool {
    matches!(at(bytes, i), b'\n' | b'\r')
}

/// The commands and directives [`command_password_at`] reads, its rule's
/// triggers; the `ldap…` ones are OpenLDAP's clients, whose `-w` is the bind
/// password (those after `masterauth` since the twenty-second session, forms
/// the thirteenth review noted; those after `7zz` since the twenty-third,
/// forms the twenty-second session's third helper found missed). `auth` is
/// a `redis-cli` prompt's command (`127.0.0.1:6379> AUTH PW`), read only
/// after such a prompt. `oc login` and `az login` are read at `login`: a
/// two-byte literal lets any third byte through the prefilter's bucket
/// (`prefilter.rs`), and `oc`, `az` (or `oc `, `az `) as triggers cost
/// English prose ~1.3 instructions a byte (`callgrind`, 300 texts of 4,000
/// bytes through `mcp-firewall scan`: 72.0M without them, 73.6M with).
const COMMAND_WORDS: [&str; 29] = [
    "docker",
    "podman",
    "sshpass",
    "redis-cli",
    "convertto-securestring",
    "requirepass",
    "masterauth",
    "ldapsearch",
    "ldapmodify",
    "ldapadd",
    "ldapdelete",
    "ldapwhoami",
    "ldappasswd",
    "ldapcompare",
    "ldapmodrdn",
    "ldapexop",
    "smbclient",
    "psexec",
    "psexec64",
    "xfreerdp",
    "xfreerdp3",
    "7z",
    "7za",
    "7zz",
    "helm",
    "net",
    "zip",
    "unzip",
    "auth",
];

/// A password given as the argument of a command or directive, at the
/// command's name at `pos` (see [`Native::CommandPassword`]). The
/// command's words end at its line's end, a `|`, `;` or `&&`, or the next
/// word naming the same command, so a run of them reads each word once.
/// The value must be a strong password (`$PW`, `-` and `changeme` are not).
/// A line that gives more than one (`ldappasswd -w OLD -s NEW`) is found
/// as one span from the first to the last, so a redaction covers them all.
pub fn command_password_at(text: &str, pos: usize) -> Option<Found> {
    let bytes = text.as_bytes();
    let name_len = run_len_within(bytes, pos, 32, is_ident_byte);
    let named = bytes.get(pos..pos + name_len)?;
    let name = without_exe(named);
    let is = |w: &str| name.eq_ignore_ascii_case(w.as_bytes());
    // A trigger inside a longer word (`dockerfile`, `7zip`) names no
    // command: turned away before its line is read.
    // `login` is triggered anywhere (see its rule): here it must start a word.
    let login = is("login") && !is_word_byte(before(bytes, pos));
    if !(COMMAND_WORDS.into_iter().any(is) || login) {
        return None;
    }
    // A quoted path ends with the name (`"C:\Program Files\7-Zip\7z.exe" a`).
    let mut after_name = pos + name_len;
    if matches!(at(bytes, after_name), b'"' | b'\'') {
        after_name += 1;
    }
    // The names that are also prose words (`net income`, `zip code`, `oc`,
    // `az`, `auth`) are turned away by what must follow (or, for `auth`,
    // come before) them, before their line is read.
    let next_is = |words: &[&[u8]]| {
        let s = skip_blanks(bytes, after_name);
        words.iter().any(|w| {
            bytes
                .get(s..s + w.len())
                .is_some_and(|b| b.eq_ignore_ascii_case(w))
                && matches!(at(bytes, s + w.len()), b' ' | b'\t' | b'\r' | b'\n' | 0)
        })
    };
    let plausible = if is("login") {
        program_before(bytes, pos)
            .is_some_and(|p| p.eq_ignore_ascii_case(b"oc") || p.eq_ignore_ascii_case(b"az"))
    } else if is("net") {
        next_is(&[b"user", b"use"])
    } else if is("zip") || is("unzip") {
        at(bytes, skip_blanks(bytes, after_name)) == b'-'
    } else if is("auth") {
        after_redis_prompt(bytes, pos)
    } else {
        true
    };
    if !plausible {
        return None;
    }
    let ldap = name.len() > 4
        && name
            .get(..4)
            .is_some_and(|p| p.eq_ignore_ascii_case(b"ldap"));
    // A line ends at a line break that no `\` continues (shell scripts and
    // docs break long commands so: a helper's attack found `-p PW` on the
    // second line unread).
    let mut line_end = pos;
    loop {
        line_end += run_len_within(bytes, line_end, COMMAND_LINE_MAX, |b| {
            b != b'\n' && b != b'\r'
        });
        // Only before a line break: a text that ends on `` ` `` (a Markdown
        // code span), `^` or `\` ends its command there (a helper's attack,
        // twenty-third session: the line's end ran past the text and the
        // whole command went unread).
        let continued = continues_line(before(bytes, line_end))
            && line_break_at(bytes, line_end)
            && line_end < pos + COMMAND_LINE_MAX;
        if !continued {
            break;
        }
        line_end += 1 + usize::from(bytes.get(line_end..line_end + 2) == Some(b"\r\n"));
    }
    let mut words = Vec::new();
    let mut i = after_name;
    while let Some((s, mut e)) =
        next_shell_word(bytes, i, line_end).filter(|w| words.len() < 32 && w.0 > i)
    {
        let w = bytes.get(s..e)?;
        if matches!(w, b"|" | b";" | b"&&" | b"||") || w.eq_ignore_ascii_case(named) {
            break;
        }
        i = e;
        // A continuation (`\`, `` ` ``, `^` before the line break) is no
        // word, nor part of the word it ends (`-p PW\`): the next line's
        // first word is read whether or not it is indented (a helper's
        // attack, twenty-third session: `-w \` and `$LDAP_PASSWORD` at the
        // next line's start read as one value).
        if line_break_at(bytes, e) && continues_line(before(bytes, e)) {
            e -= 1;
        }
        // A lone `\` is no word even where no line break follows it.
        if e > s && bytes.get(s..e) != Some(b"\\") {
            words.push((s, e));
        }
    }
    // A word's bytes without its quotes: `'-p'` is the flag `-p`.
    let word = |k: usize| {
        let (s, e) = unquoted(bytes, *words.get(k)?);
        bytes.get(s..e)
    };
    let has_word = |w: &[u8]| (0..words.len()).any(|k| word(k) == Some(w));
    // The word after the first of `flags` (or glued to it after `=`).
    let after_flag = |flags: &[&str], from: usize| {
        (from..words.len()).find_map(|k| {
            let w = word(k)?;
            if flags.iter().any(|f| w == f.as_bytes()) {
                return words.get(k + 1).map(|&w| unquoted(bytes, w));
            }
            let (s, e) = unquoted(bytes, *words.get(k)?);
            flags
                .iter()
                .filter(|f| f.starts_with("--"))
                .find(|f| {
                    w.len() > f.len() + 1 && w.starts_with(f.as_bytes()) && at(w, f.len()) == b'='
                })
                .map(|f| unquoted(bytes, (s + f.len() + 1, e)))
        })
    };
    // The rest of the first word that starts with `flag` and goes on past it
    // (`-pPW`, `/p:PW`).
    let glued = |flag: &[u8], from: usize| {
        (from..words.len()).find_map(|k| {
            // The whole word may be quoted (`"/p:PW"`, `'-pPW'`).
            let (s, e) = unquoted(bytes, *words.get(k)?);
            let w = bytes.get(s..e)?;
            (w.len() > flag.len() && w.starts_with(flag))
                .then(|| unquoted(bytes, (s + flag.len(), e)))
        })
    };
    // The word after the first word `first` accepts, unless it is an option
    // (`smbclient //srv/share PW`, `net use \\srv\share PW`).
    let positional_after = |first: &dyn Fn(&[u8]) -> bool| {
        let k = (0..words.len()).find(|&k| word(k).is_some_and(first))?;
        let w = word(k + 1)?;
        (!matches!(w.first(), Some(b'-' | b'/')) && w != b"*")
            .then(|| words.get(k + 1).map(|&w| unquoted(bytes, w)))
            .flatten()
    };
    // `login`'s password: `-p PW`, `--password PW`, or piped in (`echo PW
    // | docker login --password-stdin`, also after `sudo`) or given as a
    // here-string (`--password-stdin <<< PW`).
    let here_string = || {
        (0..words.len()).find_map(|k| {
            let (s, e) = *words.get(k)?;
            let w = bytes.get(s..e)?;
            match w.strip_prefix(b"<<<") {
                Some([]) => words.get(k + 1).map(|&w| unquoted(bytes, w)),
                Some(_) => Some(unquoted(bytes, (s + 3, e))),
                None => None,
            }
        })
    };
    let login_password = |login: usize, short: bool| {
        let flags: &[&str] = if short {
            &["-p", "--password"]
        } else {
            &["--password"]
        };
        after_flag(flags, login + 1)
            .or_else(|| short.then(|| glued(b"-p", login + 1)).flatten())
            .or_else(|| {
                has_word(b"--password-stdin")
                    .then(|| echoed_before(bytes, pos).or_else(here_string))
                    .flatten()
            })
    };
    let mut spans = Vec::new();
    if is("docker") || is("podman") {
        // `docker login [-u user] -p PW [registry]`, also `-pPW` (`docker run
        // -p 80:80` publishes a port: only `login` takes a password).
        // `login` may follow global options (`docker --config DIR login`).
        let login = (0..words.len().min(12)).find(|&k| word(k).is_some_and(|w| w == b"login"))?;
        spans.extend(login_password(login, true));
    } else if is("login") {
        // After `oc` (OpenShift: `oc login -u user -p PW`) or `az` (Azure
        // CLI: `az login --service-principal -u ID -p SECRET`).
        spans.extend(after_flag(&["-p", "--password"], 0));
    } else if is("helm") {
        // `helm registry login HOST -u user -p PW` (or piped in), `helm repo
        // add NAME URL --username user --password PW`; global options may
        // come first (`helm --kube-context prod registry login`).
        let k = (0..words.len().min(8))
            .find(|&k| word(k).is_some_and(|w| w == b"registry" || w == b"repo"))?;
        let registry = word(k) == Some(b"registry");
        spans.extend(login_password(k + usize::from(registry), registry));
    } else if is("net") {
        // Windows: `net user NAME PW /add` (switches may come first: `net
        // user /add NAME PW`), `net use [Z:] \\srv\share PW`, or the
        // password after `/user:NAME`; `*` prompts.
        let operand = |k: usize| word(k).is_some_and(|w| w.first() != Some(&b'/'));
        if word(0).is_some_and(|w| w.eq_ignore_ascii_case(b"user")) {
            // The password right after the name (switches may come before
            // the name; after the password they are options, and a word
            // after them is none: `net user NAME /active:yes build:…`).
            let name = (1..words.len()).find(|&k| operand(k))?;
            let k = name + 1;
            if operand(k) && word(k) != Some(b"*") {
                spans.extend(words.get(k).map(|&w| unquoted(bytes, w)));
            }
        } else {
            // `net use of funds`: a drive, a share or `*` must come first.
            let first = word(1)?;
            let shared = first.starts_with(b"\\\\")
                || first == b"*"
                || (first.len() == 2 && at(first, 1) == b':');
            if !shared {
                return None;
            }
            let user = (1..words.len()).find(|&k| {
                word(k).is_some_and(|w| {
                    w.len() > 6
                        && w.get(..6)
                            .is_some_and(|p| p.eq_ignore_ascii_case(b"/user:"))
                })
            });
            let after_user = user
                .filter(|&k| operand(k + 1))
                .and_then(|k| words.get(k + 1))
                .map(|&w| unquoted(bytes, w));
            spans.extend(positional_after(&|w: &[u8]| w.starts_with(b"\\\\")).or(after_user));
        }
    } else if is("zip") || is("unzip") {
        // Info-ZIP: `zip -P PW out.zip files` (`out.zip -P PW` is read at
        // the archive's name), grouped (`-rP PW`); `unzip -P PW`.
        spans.extend(
            after_flag(&["-P", "--password"], 0)
                .or_else(|| glued(b"-P", 0))
                .or_else(|| {
                    (0..words.len()).find_map(|k| {
                        let w = word(k)?;
                        let grouped = w.len() > 2
                            && w.first() == Some(&b'-')
                            && w.last() == Some(&b'P')
                            && w.get(1..)
                                .is_some_and(|o| o.iter().all(u8::is_ascii_alphanumeric));
                        grouped
                            .then(|| words.get(k + 1).map(|&w| unquoted(bytes, w)))
                            .flatten()
                    })
                }),
        );
    } else if is("auth") {
        // After a `redis-cli` prompt: `AUTH PW` or `AUTH user PW`, alone
        // (a word ending in `>` is the next prompt, not a password).
        let last = words.last().and_then(|&(s, e)| bytes.get(s..e));
        if (1..=2).contains(&words.len()) && last.is_some_and(|w| w.last() != Some(&b'>')) {
            spans.extend(words.last().map(|&w| unquoted(bytes, w)));
        }
    } else if ldap {
        // OpenLDAP's clients: `-w PW` is the bind password (`-W` prompts);
        // `ldappasswd` also takes the old (`-a`) and the new (`-s`) one.
        // Options group as getopt reads them (`-xw PW`, `-xwPW`).
        let grouped = |flag: u8| {
            (0..words.len()).find_map(|k| {
                let (s, e) = unquoted(bytes, *words.get(k)?);
                let w = bytes.get(s..e)?;
                let at_flag = 1 + w
                    .get(1..)?
                    .iter()
                    .position(|&b| !LDAP_BARE_OPTIONS.contains(&b))?;
                if at(w, 0) != b'-' || at(w, at_flag) != flag {
                    return None;
                }
                if at_flag + 1 == w.len() {
                    words.get(k + 1).map(|&w| unquoted(bytes, w))
                } else {
                    Some((s + at_flag + 1, e))
                }
            })
        };
        spans.extend(after_flag(&["-w"], 0).or_else(|| grouped(b'w')));
        if is("ldappasswd") {
            spans.extend(after_flag(&["-a"], 0).or_else(|| grouped(b'a')));
            spans.extend(after_flag(&["-s"], 0).or_else(|| grouped(b's')));
        }
    } else if is("smbclient") {
        // `-U user%PW`, `--user=user%PW`: the password after the `%`; or the
        // one after the service (`smbclient //srv/share PW`).
        if let Some((s, e)) = after_flag(&["-U", "--user"], 0).or_else(|| glued(b"-U", 0)) {
            if let Some(percent) = bytes
                .get(s..e)
                .and_then(|w| w.iter().position(|&b| b == b'%'))
            {
                spans.push((s + percent + 1, e));
            }
        }
        // `-U user PW`: the operand after a separate user name.
        if let Some(k) = (0..words.len()).find(|&k| word(k) == Some(b"-U")) {
            let user = word(k + 1).is_some_and(|w| !w.contains(&b'%'));
            if user && word(k + 2).is_some_and(|w| w.first() != Some(&b'-')) {
                spans.extend(words.get(k + 2).map(|&w| unquoted(bytes, w)));
            }
        }
        spans.extend(positional_after(&|w: &[u8]| {
            w.starts_with(b"//") || w.starts_with(b"\\\\")
        }));
    } else if is("psexec") || is("psexec64") {
        // Sysinternals PsExec: `-u user -p PW`.
        spans.extend(after_flag(&["-p"], 0));
    } else if is("xfreerdp") || is("xfreerdp3") {
        // FreeRDP: `/p:PW`.
        spans.extend(glued(b"/p:", 0));
    } else if is("7z") || is("7za") || is("7zz") {
        // 7-Zip: `-pPW` (a bare `-p` prompts); its switches are read in
        // either case.
        spans.extend(glued(b"-p", 0).or_else(|| glued(b"-P", 0)));
    } else if is("sshpass") {
        // sshpass's own options come first (`-p PW`, `-pPW`); `ssh -p 22`
        // after them is the command it runs.
        let mut k = 0;
        let span = loop {
            let w = word(k)?;
            match w {
                b"-p" => break unquoted(bytes, *words.get(k + 1)?),
                [b'-', b'p', ..] => {
                    let (s, e) = unquoted(bytes, *words.get(k)?);
                    break unquoted(bytes, (s + 2, e));
                }
                b"-f" | b"-d" | b"-P" => k += 2,
                [b'-', ..] => k += 1,
                _ => return None,
            }
        };
        spans.push(span);
    } else if is("redis-cli") {
        // `-p` is the port; the password is `-a` or `--pass`, or the last
        // argument of an `AUTH` command (`AUTH PW`, `AUTH user PW`).
        spans.extend(
            after_flag(&["-a", "--pass"], 0)
                .or_else(|| glued(b"-a", 0))
                .or_else(|| {
                    let auth = (0..words.len())
                        .find(|&k| word(k).is_some_and(|w| w.eq_ignore_ascii_case(b"auth")))?;
                    let last = (auth + 1..words.len().min(auth + 3)).last()?;
                    words.get(last).map(|&w| unquoted(bytes, w))
                }),
        );
    } else if is("convertto-securestring") {
        // `ConvertTo-SecureString [-String] "PW" -AsPlainText`, or the
        // string piped in: `"PW" | ConvertTo-SecureString -AsPlainText`.
        let plain = (0..words.len())
            .any(|k| word(k).is_some_and(|w| w.eq_ignore_ascii_case(b"-asplaintext")));
        if !plain {
            return None;
        }
        // The string is the first quoted word, wherever the switches put it
        // (`-AsPlainText "PW" -Force`, `-Force -String 'PW'`).
        let quoted = words
            .iter()
            .find(|&&(s, _)| matches!(at(bytes, s), b'"' | b'\''))
            .map(|&w| unquoted(bytes, w));
        spans.extend(quoted.or_else(|| piped_string_before(bytes, pos)));
    } else if is("requirepass") || is("masterauth") {
        // redis.conf: the directive opens its line (or follows `CONFIG
        // SET`) and its one argument ends it.
        let mut j = pos;
        while matches!(before(bytes, j), b' ' | b'\t') {
            j -= 1;
        }
        let ends_with = |w: &[u8]| {
            j.checked_sub(w.len())
                .and_then(|k| bytes.get(k..j))
                .is_some_and(|b| b.eq_ignore_ascii_case(w))
        };
        let config_set = ends_with(b"config set");
        if !(j == 0 || before(bytes, j) == b'\n' || config_set) || words.len() != 1 {
            return None;
        }
        spans.push(unquoted(bytes, *words.first()?));
    }
    let strong = |&&(s, e): &&(usize, usize)| text.get(s..e).is_some_and(is_strong_password);
    let start = spans.iter().filter(strong).map(|&(s, _)| s).min()?;
    let end = spans.iter().filter(strong).map(|&(_, e)| e).max()?;
    Some(Found {
        start,
        end,
        kind: "password",
    })
}

/// OpenLDAP clients' options that take no argument, which may come before
/// one that does in a group (`-xw PW`).
const LDAP_BARE_OPTIONS: &[u8] = b"xZnvcMLutAkNWIQ";

/// The word right before `pos` (blanks between), without `.exe`.
fn program_before(bytes: &[u8], pos: usize) -> Option<&[u8]> {
    let end = pos - run_len_back(bytes, pos, 8, |b| b == b' ' || b == b'\t');
    if end == pos {
        return None;
    }
    let len = run_len_back(bytes, end, 32, is_ident_byte);
    bytes.get(end - len..end).map(without_exe)
}

/// A program's name without the extension Windows names it with (`7z.exe`,
/// `PsExec64.exe`).
fn without_exe(name: &[u8]) -> &[u8] {
    match name.len().checked_sub(4) {
        Some(k)
            if name
                .get(k..)
                .is_some_and(|e| e.eq_ignore_ascii_case(b".exe")) =>
        {
            name.get(..k).unwrap_or(name)
        }
        _ => name,
    }
}

/// Whether a `redis-cli` prompt ends right before `pos`: `host:port> `,
/// with the database in brackets when it is not 0 (`127.0.0.1:6379[2]> `).
fn after_redis_prompt(bytes: &[u8], pos: usize) -> bool {
    let mut j = pos - run_len_back(bytes, pos, 8, |b| b == b' ' || b == b'\t');
    if j == pos || before(bytes, j) != b'>' {
        return false;
    }
    j -= 1;
    // Inside MULTI the prompt says so: `127.0.0.1:6379(TX)>`.
    if bytes.get(j.saturating_sub(4)..j) == Some(b"(TX)") {
        j -= 4;
    }
    if before(bytes, j) == b']' {
        let db = run_len_back(bytes, j - 1, 4, |b| b.is_ascii_digit());
        if db == 0 || before(bytes, j - 1 - db) != b'[' {
            return false;
        }
        j -= db + 2;
    }
    let port = run_len_back(bytes, j, 5, |b| b.is_ascii_digit());
    if port == 0 || before(bytes, j - port) != b':' {
        return false;
    }
    // A host name, an IPv4 address or a bracketed IPv6 one (`[::1]`).
    let host = run_len_back(bytes, j - port - 1, 253, |b| {
        b.is_ascii_alphanumeric() || matches!(b, b'.' | b'-' | b'_' | b'[' | b']' | b':')
    });
    host > 0
}

/// `echo PW | ` or `printf '%s' PW | ` right before `pos` (blanks and
/// `echo`'s `-n`/`-e` between): the echoed word's span, quotes removed.
fn echoed_before(bytes: &[u8], pos: usize) -> Option<(usize, usize)> {
    let blanks_back = |j: usize| j - run_len_back(bytes, j, 16, |b| b == b' ' || b == b'\t');
    let mut j = blanks_back(pos);
    // `echo PW | sudo docker login …`
    if j >= 4 && bytes.get(j - 4..j) == Some(b"sudo") && !is_word_byte(before(bytes, j - 4)) {
        j = blanks_back(j - 4);
    }
    if before(bytes, j) != b'|' {
        return None;
    }
    j = blanks_back(j - 1);
    // The echoed word: quoted, or a run of non-blanks.
    let q = before(bytes, j);
    let (start, end, word_start) = if matches!(q, b'"' | b'\'') {
        let len = run_len_back(bytes, j - 1, 200, |b| b != q && b != b'\n');
        if before(bytes, j - 1 - len) != q {
            return None;
        }
        (j - 1 - len, j - 1, j - 2 - len)
    } else {
        let len = run_len_back(bytes, j, 200, |b| !b.is_ascii_whitespace() && b != b'|');
        (j - len, j, j - len)
    };
    if start >= end {
        return None;
    }
    // Back over the command's options (`-n`, `-e`) and printf's format.
    let mut k = word_start;
    for _ in 0..3 {
        let b = blanks_back(k);
        if b == k {
            return None;
        }
        let len = run_len_back(bytes, b, 16, |c| !c.is_ascii_whitespace());
        let w = bytes.get(b - len..b)?;
        let opens =
            b - len == 0 || matches!(before(bytes, b - len), b' ' | b'\t' | b'\n' | b'(' | b';');
        if (w.eq_ignore_ascii_case(b"echo") || w == b"printf") && opens {
            return Some((start, end));
        }
        let option = w.first() == Some(&b'-') && w.len() <= 3;
        let format = matches!(w, b"'%s'" | b"\"%s\"" | b"'%s\\n'" | b"\"%s\\n\"");
        if !(option || format) {
            return None;
        }
        k = b - len;
    }
    None
}

/// `"PW" | ` right before `pos`: the piped string's inner span.
fn piped_string_before(bytes: &[u8], pos: usize) -> Option<(usize, usize)> {
    let mut j = pos;
    while matches!(before(bytes, j), b' ' | b'\t') {
        j -= 1;
    }
    if before(bytes, j) != b'|' {
        return None;
    }
    j -= 1;
    while matches!(before(bytes, j), b' ' | b'\t') {
        j -= 1;
    }
    let q = before(bytes, j);
    if !matches!(q, b'"' | b'\'') {
        return None;
    }
    let end = j - 1;
    let len = run_len_back(bytes, end, 128, |b| b != q && b != b'\n');
    (before(bytes, end - len) == q && len > 0).then_some((end - len, end))
}

/// Where a match of a rule with a token tail (see [`RuleSpec::longest`])
/// whose fixed start `prefix.rs` confirmed at the trigger ends: the run of
/// `run` token bytes after the trigger, then GitLab's optional `.` + 9
/// lower-case letters or digits (its routable-token suffix). None if the
/// run is shorter than the pattern's minimum (`least`) or longer than
/// `longest`: what `[A-Za-z0-9_-]{least,longest}` followed by the suffix matches.
pub fn token_tail_end(
    spec: &RuleSpec,
    bytes: &[u8],
    from: usize,
    run: usize,
    least: usize,
) -> Option<usize> {
    if run < least || run > spec.longest {
        return None;
    }
    let end = from + run;
    let suffix = |k: usize| matches!(at(bytes, end + 1 + k), b'0'..=b'9' | b'a'..=b'z');
    if spec.kind == "gitlab_token" && at(bytes, end) == b'.' && (0..9).all(suffix) {
        return Some(end + 10);
    }
    Some(end)
}

/// Words one of which the identifier of an XML setting holds
/// (`SmtpPassword`, `ApiKey`), in any case.
const XML_SECRET_WORDS: &[&str] = &["pass", "pwd", "secret", "token", "key", "credential"];

/// `(?:key|name)[ \t]*=[ \t]*["'](identifier)["'][ \t]+value[ \t]*=[ \t]*["'](value)["']`,
/// case-insensitive, around the `value` trigger at `pos`: read back from the
/// trigger to the identifier (at most 200 bytes), forward to the value (1 to
/// 256 bytes other than quotes and line breaks, then a quote); the value is
/// judged by what the identifier names.
pub fn xml_assignment_at(text: &str, pos: usize) -> Option<Found> {
    let bytes = text.as_bytes();
    let back_blanks = |mut j: usize| {
        while matches!(before(bytes, j), b' ' | b'\t') {
            j -= 1;
        }
        j
    };
    let quote = |b: u8| matches!(b, b'"' | b'\'');
    // Back: blanks (at least one), a quote, the identifier, a quote.
    let mut j = back_blanks(pos);
    if j == pos || !quote(before(bytes, j)) {
        return None;
    }
    let id_end = j - 1;
    j = id_end;
    while j > 0 && pos - j <= 200 && is_ident_byte(before(bytes, j)) {
        j -= 1;
    }
    let id_start = j;
    if !quote(before(bytes, j)) {
        return None;
    }
    // Blanks, `=`, blanks, then `key` or `name` ending there.
    j = back_blanks(j - 1);
    if before(bytes, j) != b'=' {
        return None;
    }
    j = back_blanks(j - 1);
    let named = ["key", "name"].iter().any(|w| {
        j.checked_sub(w.len())
            .and_then(|s| bytes.get(s..j))
            .is_some_and(|s| s.eq_ignore_ascii_case(w.as_bytes()))
    });
    let id = text.get(id_start..id_end)?;
    if !named
        || !XML_SECRET_WORDS
            .iter()
            .any(|w| contains_word(id.as_bytes(), w.as_bytes()))
    {
        return None;
    }
    // Forward: `value`, blanks, `=`, blanks, a quote, the value, a quote.
    let mut i = skip_blanks(bytes, pos + "value".len());
    if at(bytes, i) != b'=' {
        return None;
    }
    i = skip_blanks(bytes, i + 1);
    if !quote(at(bytes, i)) {
        return None;
    }
    let start = i + 1;
    let len = super::text::run_len(bytes, start, |b| !quote(b) && b != b'\n');
    if !(1..=256).contains(&len) || !quote(at(bytes, start + len)) {
        return None;
    }
    let value = text.get(start..start + len)?;
    let (word, kind) = classify_identifier(id)?;
    value_ok(word, id, value).then_some(Found {
        start,
        end: start + len,
        kind,
    })
}

const AUTH_SCHEMES: &[&str] = &[
    "bearer",
    "token",
    "api-token",
    "apikey",
    "api-key",
    "basic",
    "digest",
    "sso-key",
    "key",
];

/// `authorization["']?[ \t]*[:=][ \t]*["']?[ \t]*(?:(<scheme>)[ \t]+)?`,
/// case-insensitive, at the trigger at `pos` and within 64 bytes after it,
/// then the credential judged by [`auth_header`]. Nothing at or past `limit`
/// (where the next `authorization` begins) is read: the credentials of a run
/// of headers (`Authorization: Bearer ` repeated) are disjoint, and each
/// byte is judged once instead of once per header before it.
pub fn auth_header_at(text: &str, pos: usize, limit: usize) -> Option<Found> {
    let bytes = text.as_bytes();
    let start = pos + "authorization".len();
    if !bytes
        .get(pos..start)?
        .eq_ignore_ascii_case(b"authorization")
    {
        return None;
    }
    let limit = limit.min(bytes.len());
    let head_limit = (start + 64).min(limit);
    let blanks = |mut i: usize| {
        while i < head_limit && matches!(at(bytes, i), b' ' | b'\t') {
            i += 1;
        }
        i
    };
    let mut i = start;
    if i < head_limit && matches!(at(bytes, i), b'"' | b'\'') {
        i += 1;
    }
    i = blanks(i);
    if i >= head_limit || !matches!(at(bytes, i), b':' | b'=') {
        return None;
    }
    i = blanks(i + 1);
    if i < head_limit && matches!(at(bytes, i), b'"' | b'\'') {
        i += 1;
    }
    i = blanks(i);
    let mut scheme = None;
    for s in AUTH_SCHEMES {
        let e = i + s.len();
        let word = bytes.get(i..e).filter(|_| e < head_limit);
        if word.is_some_and(|w| w.eq_ignore_ascii_case(s.as_bytes()))
            && matches!(at(bytes, e), b' ' | b'\t')
        {
            scheme = Some(*s);
            i = blanks(e);
            break;
        }
    }
    auth_header(text, scheme, i, limit)
}

fn auth_header(
    text: &str,
    scheme: Option<&str>,
    value_start: usize,
    limit: usize,
) -> Option<Found> {
    let bytes = text.as_bytes();
    let len = bytes
        .get(value_start..limit.max(value_start))?
        .iter()
        .take(4096)
        .take_while(|b| {
            !b.is_ascii_whitespace() && !matches!(**b, b'"' | b'\'' | b'`' | b',' | b';' | b'\\')
        })
        .count();
    let (start, end) = (value_start, value_start + len);
    let value = text.get(start..end)?;
    let basic = scheme == Some("basic");
    // The shape of a bearer credential first: one read of the value, where
    // the template and placeholder tests copy it; most values fail here.
    let shaped = |c: Classes| value.len() >= 16 && c.digit && (c.lower || c.upper);
    if value.is_empty() || (!basic && !shaped(Classes::of(value))) {
        return None;
    }
    if is_template(value) || is_placeholder(value) {
        return None;
    }
    let ok = if basic {
        // Basic credentials are base64("user:password"): only a non-empty,
        // non-placeholder password makes them a secret.
        decode_b64std(value)
            .and_then(|raw| String::from_utf8(raw).ok())
            .and_then(|s| s.split_once(':').map(|(_, p)| p.to_owned()))
            .is_some_and(|p| !p.is_empty() && !is_placeholder(&p) && !is_template(&p))
    } else {
        entropy(value) >= 3.0
    };
    ok.then_some(Found {
        start,
        end,
        kind: "auth_header_token",
    })
}

/// One shell word starting at `from`: adjacent quoted and bare parts join
/// (`"user":"pass"` is the single word `user:pass`). Returns (word, end).
fn shell_word(text: &str, from: usize) -> Option<(String, usize)> {
    let bytes = text.as_bytes();
    let mut word = String::new();
    let mut i = from;
    let limit = from + 512;
    while i < bytes.len() && i < limit {
        let b = at(bytes, i);
        if b == b'"' || b == b'\'' {
            let close = bytes.get(i + 1..)?.iter().position(|c| *c == b)? + i + 1;
            word.push_str(text.get(i + 1..close)?);
            i = close + 1;
        } else if b.is_ascii_whitespace() {
            break;
        } else {
            let ch = text.get(i..)?.chars().next()?;
            word.push(ch);
            i += ch.len_utf8();
        }
    }
    (!word.is_empty()).then_some((word, i))
}

/// `-u`/`--user` at `pos` (the pre-check held: a blank or the start before,
/// a blank or `=` after), then the user:password word.
pub fn curl_user_at(text: &str, pos: usize, len: usize) -> Option<Found> {
    let bytes = text.as_bytes();
    let after = pos + len;
    let from = if at(bytes, after) == b'=' {
        after + 1
    } else {
        skip_blanks(bytes, after)
    };
    curl_user(text, from)
}

fn curl_user(text: &str, from: usize) -> Option<Found> {
    let (word, end) = shell_word(text, from)?;
    let (user, pass) = word.split_once(':')?;
    if is_template(user) && !pass.is_empty() && is_template(pass) {
        return None;
    }
    // `-u token:` sends an API key as the user name with an empty password.
    let candidate = if pass.is_empty() { user } else { pass };
    if candidate == user && !pass.is_empty() {
        return None;
    }
    is_strong_password(candidate).then_some(Found {
        start: from,
        end,
        kind: "basic_auth_credentials",
    })
}

const DB_SCHEMES: &[&str] = &[
    "postgres",
    "postgresql",
    "mysql",
    "mariadb",
    "mongodb",
    "mongodb+srv",
    "redis",
    "rediss",
    "amqp",
    "amqps",
    "mssql",
    "sqlserver",
    "oracle",
    "cockroachdb",
    "clickhouse",
    "cassandra",
    "neo4j",
    "couchdb",
    "memcached",
];

/// `scheme://user:password@host` around the `://` at `pos`. The password must
/// not be a template, placeholder or port number, and must mix 2+ classes.
pub fn url_credential_at(text: &str, pos: usize) -> Option<Found> {
    let bytes = text.as_bytes();
    let mut s = pos;
    while s > 0
        && pos - s < 30
        && (at(bytes, s - 1).is_ascii_alphanumeric()
            || matches!(at(bytes, s - 1), b'+' | b'.' | b'-'))
    {
        s -= 1;
    }
    if s == pos || !at(bytes, s).is_ascii_alphabetic() {
        return None;
    }
    let scheme = text.get(s..pos)?.to_ascii_lowercase();
    let ui_start = pos + 3;
    let stop = |b: u8| {
        b.is_ascii_whitespace()
            || matches!(b, b'/' | b'?' | b'#' | b'@' | b'"' | b'\'' | b'<' | b'>')
    };
    let ui_len = super::text::run_len(bytes, ui_start, |b| !stop(b));
    if ui_len > 384 || at(bytes, ui_start + ui_len) != b'@' {
        return None;
    }
    let userinfo = text.get(ui_start..ui_start + ui_len)?;
    let (user, pass) = userinfo.split_once(':')?;
    // An empty user is fine (`redis://:password@host`, Redis's own form).
    if pass.len() < 6 || is_template(user) || is_template(pass) || is_placeholder(pass) {
        return None;
    }
    if pass.bytes().all(|b| b.is_ascii_digit()) || Classes::of(pass).count() < 2 {
        return None;
    }
    let pass_start = ui_start + user.len() + 1;
    let base = scheme.rsplit(':').next().unwrap_or(scheme.as_str());
    let kind = if DB_SCHEMES.contains(&base) {
        "db_url_with_password"
    } else {
        "basic_auth_url"
    };
    Some(Found {
        start: pass_start,
        end: pass_start + pass.len(),
        kind,
    })
}

/// JWT: `header.payload[.signature]`, base64url segments, the header decoding to
/// a JSON object that names `alg` or `typ`. Starts at the `eyJ` at `start`.
pub fn jwt_at(text: &str, start: usize) -> Option<Found> {
    let bytes = text.as_bytes();
    // `=` may precede (`access_token=eyJ…`); a base64url character or `.` means
    // this `eyJ` is inside another token or is a later segment.
    let prev = before(bytes, start);
    if bytes.get(start..start + 3) != Some(b"eyJ") || is_token_byte(prev) || prev == b'.' {
        return None;
    }
    let seg = |from: usize| -> usize {
        let n = super::text::run_len(bytes, from, |b| {
            b.is_ascii_alphanumeric() || b == b'_' || b == b'-'
        });
        n + super::text::run_len(bytes, from + n, |b| b == b'=')
    };
    let h = seg(start);
    let p_start = start + h + 1;
    if at(bytes, start + h) != b'.' || bytes.get(p_start..p_start + 3) != Some(b"eyJ") {
        return None;
    }
    let p = seg(p_start);
    let mut end = p_start + p;
    if at(bytes, end) == b'.' {
        end += 1 + seg(end + 1);
    }
    if is_b64_byte(at(bytes, end)) {
        return None;
    }
    let header = decode_b64url(text.get(start..start + h)?)?;
    // As a `str`: the one serde_json reader the module instantiates (json.rs).
    let v: serde_json::Value = serde_json::from_str(std::str::from_utf8(&header).ok()?).ok()?;
    let obj = v.as_object()?;
    (obj.contains_key("alg") || obj.contains_key("typ")).then_some(Found {
        start,
        end,
        kind: JWT_KIND,
    })
}

/// Private key block: `-----BEGIN … PRIVATE KEY-----`, at least 40 base64
/// characters of body (escaped `\n` allowed, as in JSON-embedded keys), up to
/// the matching END line (or the end of the body when it is missing).
pub fn private_key_at(text: &str, start: usize) -> Option<Found> {
    let rest = text.get(start..)?;
    let after_begin = rest.strip_prefix("-----BEGIN ")?;
    let label_len = after_begin
        .get(..80.min(after_begin.len()))?
        .find("-----")?;
    let label = after_begin.get(..label_len)?;
    if !label.contains("PRIVATE KEY") {
        return None;
    }
    let body_start = start + "-----BEGIN ".len() + label_len + 5;
    let bytes = text.as_bytes();
    let mut i = body_start;
    let mut b64 = 0usize;
    let limit = (body_start + 65536).min(bytes.len());
    let mut end = None;
    while i < limit {
        let b = at(bytes, i);
        if b == b'-' && bytes.get(i..i + 8) == Some(b"-----END") {
            let close = text.get(i + 8..)?.find("-----").map(|p| i + 8 + p + 5);
            end = Some(close.unwrap_or(i + 8));
            break;
        }
        if b.is_ascii_alphanumeric() || matches!(b, b'+' | b'/' | b'=') {
            b64 += 1;
        } else if b == b'\\' && matches!(at(bytes, i + 1), b'n' | b'r') {
            i += 1; // an escaped line break, as in JSON service-account files
        } else if b == b':' || b == b',' {
            // "Proc-Type: 4,ENCRYPTED" style headers: part of the block.
        } else if !b.is_ascii_whitespace() {
            if b == b'.' {
                return None; // "...": an elided example
            }
            break;
        }
        i += 1;
    }
    if b64 < 40 {
        return None;
    }
    Some(Found {
        start,
        end: end.unwrap_or(i),
        kind: "private_key",
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn identifier_table() {
        for (id, want) in [
            ("DB_PASSWORD", Some(SecretWord::Password)),
            ("client_secret", Some(SecretWord::Secret)),
            ("X-API-Key", Some(SecretWord::Token)),
            ("access_token2", Some(SecretWord::Token)),
            ("my_password_secure", Some(SecretWord::Password)),
            ("LLM_SECRET_NAME", None),
            ("credentialsId", None),
            ("passwordVariable", None),
            ("password_reset_token_ttl_seconds", None),
            (
                "pass_pass_pass_pass_pass_pass_pass",
                Some(SecretWord::Password),
            ),
            ("user_passphrase", Some(SecretWord::Password)),
            ("token_or_password", Some(SecretWord::Password)),
            ("password_token", Some(SecretWord::Token)),
            ("db_passwd", Some(SecretWord::Password)),
            ("aws_credentials", Some(SecretWord::Token)),
            ("google_credential", Some(SecretWord::Token)),
            ("x-auth", Some(SecretWord::Token)),
            ("openai_apikey", Some(SecretWord::Token)),
            ("public_key", None),
            ("csrf-token", None),
            ("Authorization", None),
            ("keyword", None),
        ] {
            assert_eq!(classify_identifier(id).map(|x| x.0), want, "{id}");
        }
    }
}
