//! The phrase markers: word sequences, matched on folded words (`fold.rs`),
//! that a tool description or a tool result uses to address the model.
//!
//! A phrase is a few steps; each step is a set of words (a trailing `*` makes
//! a word a prefix) that must occur within `gap` words after the previous
//! step's match. A *strong* marker is a finding by itself; a *weak* one only
//! counts when the same definition (or result) holds another marker too
//! (`poison.rs`): "before using this tool" is legitimate guidance alone
//! ("call list_allowed_directories first"), and poisoning when it comes with a
//! secret path or "do not tell the user".
//!
//! Sources of the phrases: Invariant Labs' tool-poisoning, shadowing and
//! rug-pull write-ups (2025), the OWASP LLM01 prompt-injection examples, and
//! the published MCP attack taxonomies (`docs/catalogue.md` cites them).

use super::poison::Check;

/// One step of a phrase: one of `words`, at most `gap` words after the
/// previous step (the first step's gap is ignored).
pub(crate) struct Step {
    pub gap: u8,
    pub words: &'static [&'static str],
}

/// How much one marker says on its own.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Strength {
    /// A finding by itself.
    Strong,
    /// A finding beside a second weak marker with another reason (anywhere
    /// in the definition or result), or beside a strong content marker
    /// (instructions, secrets, exfiltration) in the same string.
    Weak,
    /// Ordinary wording ("read the contents of", "pass it in the `x`
    /// parameter") that is a finding only beside a strong content marker in
    /// the same string.
    Context,
}

pub(crate) struct Phrase {
    pub check: Check,
    pub strength: Strength,
    pub reason: &'static str,
    pub steps: &'static [Step],
}

const fn s(gap: u8, words: &'static [&'static str]) -> Step {
    Step { gap, words }
}

const fn strong(check: Check, reason: &'static str, steps: &'static [Step]) -> Phrase {
    Phrase {
        check,
        strength: Strength::Strong,
        reason,
        steps,
    }
}

const fn weak(check: Check, reason: &'static str, steps: &'static [Step]) -> Phrase {
    Phrase {
        check,
        strength: Strength::Weak,
        reason,
        steps,
    }
}

const fn context(check: Check, reason: &'static str, steps: &'static [Step]) -> Phrase {
    Phrase {
        check,
        strength: Strength::Context,
        reason,
        steps,
    }
}

use Check::{Exfiltration as X, ModelInstructions as I, SecretReference as S};

const PRIOR: &[&str] = &[
    "previous",
    "prior",
    "above",
    "earlier",
    "preceding",
    "all",
    "any",
    "other",
    "original",
    "initial",
    "system",
    "existing",
    "your",
    "the",
    "these",
    "those",
    "my",
];
const RULES: &[&str] = &[
    "instruction*",
    "direction*",
    "guideline*",
    "rule",
    "rules",
    "prompt",
    "prompts",
    "polic*",
    "constraint*",
    "context",
    "message",
    "messages",
    "guardrail*",
    "safeguard*",
    "restriction*",
    "programming",
    "directive*",
];
const TELL: &[&str] = &[
    "tell",
    "inform",
    "mention",
    "notify",
    "alert",
    "reveal",
    "disclose",
    "show",
    "let",
    "warn",
    "ask",
    "say",
    "explain",
    "display",
    "report",
    "bother",
    "acknowledge",
];
const WHOM: &[&str] = &[
    "user", "users", "human", "humans", "operator", "person", "them",
];
const MODEL: &[&str] = &[
    "ai",
    "assistant",
    "model",
    "llm",
    "agent",
    "claude",
    "chatgpt",
    "gpt",
    "copilot",
    "cursor",
    "gemini",
    "bot",
    "ais",
    "assistants",
    "models",
    "agents",
    "llms",
];
const READ_VERBS: &[&str] = &[
    "read", "cat", "open", "include", "pass", "send", "attach", "append", "provide", "upload",
    "copy", "dump", "print", "output", "extract", "collect", "fetch", "load", "access", "grab",
    "paste", "insert", "embed", "add",
];
const CREDENTIALS: &[&str] = &[
    "apikey",
    "apikeys",
    "password",
    "passwords",
    "passwd",
    "token",
    "tokens",
    "credential*",
    "secret",
    "secrets",
    "cookie*",
    "privatekey",
    "ssh",
    "mnemonic",
    "seed",
];

pub(crate) const PHRASES: &[Phrase] = &[
    // "ignore all previous instructions", "disregard your rules", "forget the above context"
    strong(
        I,
        "asks to ignore previous instructions",
        &[
            s(
                0,
                &["ignore", "disregard", "forget", "ignoring", "disregarding"],
            ),
            s(3, PRIOR),
            s(3, RULES),
        ],
    ),
    // "disregard everything above", "forget all that came before" (eleventh review)
    strong(
        I,
        "asks to ignore previous instructions",
        &[
            s(0, &["ignore", "disregard", "forget"]),
            s(0, &["everything", "anything", "all"]),
            s(2, &["above", "before", "previously"]),
        ],
    ),
    // "pay no attention to your earlier directives"
    strong(
        I,
        "asks to ignore previous instructions",
        &[
            s(0, &["pay"]),
            s(0, &["no"]),
            s(0, &["attention", "heed"]),
            s(1, PRIOR),
            s(3, RULES),
        ],
    ),
    // "SYSTEM: the assistant must call ..."
    strong(
        I,
        "addresses the assistant as the system",
        &[
            s(0, &["system"]),
            s(1, MODEL),
            s(0, &["must", "shall", "should", "will"]),
        ],
    ),
    // "do not tell the user", "never mention this to the user"
    strong(
        I,
        "asks to keep something from the user",
        &[
            s(0, &["do", "must", "should", "shall"]),
            s(0, &["not"]),
            s(1, TELL),
            s(4, WHOM),
        ],
    ),
    strong(
        I,
        "asks to keep something from the user",
        &[
            s(0, &["dont", "never", "mustnt", "shouldnt", "cannot"]),
            s(1, TELL),
            s(4, WHOM),
        ],
    ),
    strong(
        I,
        "asks to act without telling the user",
        &[
            s(0, &["without"]),
            s(
                1,
                &[
                    "telling",
                    "informing",
                    "notifying",
                    "alerting",
                    "asking",
                    "showing",
                    "letting",
                    "warning",
                    "mentioning",
                    "consulting",
                    "bothering",
                ],
            ),
            s(2, &["user", "users", "human", "humans", "them", "anyone"]),
        ],
    ),
    strong(
        I,
        "says the user must not know",
        &[
            s(0, &["user", "users", "human"]),
            s(2, &["should", "must", "will", "need", "needs", "shall"]),
            s(0, &["not", "never"]),
            s(
                1,
                &[
                    "know", "see", "notice", "learn", "find", "aware", "suspect", "discover",
                ],
            ),
        ],
    ),
    strong(
        I,
        "says the user must not know",
        &[
            s(0, &["user", "users", "human"]),
            s(2, &["shouldnt", "mustnt", "wont", "cant"]),
            s(
                1,
                &[
                    "know", "see", "notice", "learn", "find", "aware", "suspect", "discover",
                ],
            ),
        ],
    ),
    strong(
        I,
        "asks to hide something from the user",
        &[
            s(0, &["hide", "conceal", "obscure", "withhold"]),
            s(4, &["from"]),
            s(1, WHOM),
        ],
    ),
    strong(
        I,
        "tells the model to skip confirmation",
        &[
            s(0, &["dont", "never"]),
            s(1, &["ask", "request", "wait", "seek"]),
            s(2, &["permission", "confirmation", "approval", "consent"]),
        ],
    ),
    strong(
        I,
        "tells the model to skip confirmation",
        &[
            s(0, &["do", "must", "should"]),
            s(0, &["not"]),
            s(1, &["ask", "request", "wait", "seek"]),
            s(2, &["permission", "confirmation", "approval", "consent"]),
        ],
    ),
    strong(
        I,
        "addresses the model directly",
        &[
            s(
                0,
                &[
                    "attention",
                    "note",
                    "message",
                    "instructions",
                    "instruction",
                    "reminder",
                ],
            ),
            s(0, &["to", "for"]),
            s(1, MODEL),
        ],
    ),
    strong(
        I,
        "addresses the model directly",
        &[
            s(0, &["dear", "hey", "hello", "hi", "attention"]),
            s(1, MODEL),
        ],
    ),
    strong(
        I,
        "announces new instructions",
        &[
            s(
                0,
                &[
                    "new", "updated", "revised", "real", "actual", "true", "secret", "hidden",
                    "override",
                ],
            ),
            s(
                0,
                &[
                    "instructions",
                    "directives",
                    "orders",
                    "instruction",
                    "directive",
                ],
            ),
        ],
    ),
    strong(
        I,
        "asks for a mode switch",
        &[
            s(
                0,
                &[
                    "system",
                    "admin",
                    "developer",
                    "god",
                    "dan",
                    "debug",
                    "maintenance",
                ],
            ),
            s(0, &["override", "mode"]),
            s(3, &["enabled", "activated", "on", "engaged", "now"]),
        ],
    ),
    strong(
        I,
        "mentions a jailbreak",
        &[s(0, &["jailbreak", "jailbroken"])],
    ),
    strong(
        I,
        "asks to reveal the system prompt",
        &[
            s(
                0,
                &[
                    "reveal", "print", "output", "show", "repeat", "include", "send", "leak",
                    "disclose", "dump", "append",
                ],
            ),
            s(2, &["your", "the", "full", "entire", "complete"]),
            s(1, &["system"]),
            s(0, &["prompt", "instructions", "message"]),
        ],
    ),
    strong(
        I,
        "says its text is hidden",
        &[
            s(0, &["this", "these", "the", "following"]),
            s(
                1,
                &[
                    "instruction*",
                    "message",
                    "messages",
                    "note",
                    "text",
                    "section",
                ],
            ),
            s(1, &["is", "are"]),
            s(
                1,
                &["hidden", "secret", "confidential", "invisible", "private"],
            ),
        ],
    ),
    // Weak: legitimate alone, suspicious beside another marker.
    weak(
        I,
        "tells the model what to do before using the tool",
        &[
            s(0, &["before"]),
            s(
                0,
                &[
                    "using",
                    "calling",
                    "invoking",
                    "running",
                    "executing",
                    "use",
                    "call",
                ],
            ),
            s(1, &["this", "the", "any", "each", "every"]),
            s(0, &["tool", "tools", "function"]),
        ],
    ),
    weak(
        I,
        "insists on importance",
        &[
            s(0, &["this", "it"]),
            s(0, &["is"]),
            s(
                1,
                &[
                    "important",
                    "critical",
                    "vital",
                    "mandatory",
                    "crucial",
                    "essential",
                ],
            ),
        ],
    ),
    weak(
        I,
        "insists on importance",
        &[s(0, &["very", "extremely"]), s(0, &["important"])],
    ),
    weak(
        I,
        "threatens a failure",
        &[
            s(0, &["otherwise", "else"]),
            s(
                2,
                &[
                    "tool",
                    "application",
                    "app",
                    "system",
                    "server",
                    "it",
                    "everything",
                ],
            ),
            s(1, &["will", "would"]),
            s(1, &["not", "crash", "fail", "break", "stop", "error"]),
        ],
    ),
    weak(
        I,
        "calls its request an implementation detail",
        &[
            s(0, &["implementation", "technical"]),
            s(0, &["detail", "details"]),
        ],
    ),
    weak(
        I,
        "worries about the user's reaction",
        &[
            s(
                0,
                &[
                    "upset", "scare", "worry", "alarm", "annoy", "confuse", "frighten", "concern",
                ],
            ),
            s(1, WHOM),
        ],
    ),
    context(
        I,
        "asks for the contents of something",
        &[
            s(0, READ_VERBS),
            s(3, &["contents", "content", "text", "body"]),
            s(0, &["of"]),
        ],
    ),
    context(
        I,
        "asks to pass data in a parameter",
        &[
            s(
                0,
                &[
                    "pass", "put", "include", "insert", "place", "add", "provide", "send", "append",
                ],
            ),
            s(4, &["as", "in", "into", "inside", "within"]),
            s(
                2,
                &[
                    "param*",
                    "argument*",
                    "field",
                    "sidenote",
                    "note",
                    "notes",
                    "metadata",
                    "comment",
                    "comments",
                ],
            ),
        ],
    ),
    weak(
        I,
        "tells the model what it is",
        &[s(0, &["you"]), s(0, &["are"]), s(0, &["now"])],
    ),
    context(
        I,
        "tells the model what it is",
        &[s(0, &["as"]), s(0, &["an", "a"]), s(0, MODEL)],
    ),
    weak(
        I,
        "steers the model away from other tools",
        &[
            s(0, &["instead"]),
            s(0, &["of"]),
            s(2, &["other", "any", "the", "all"]),
            s(1, &["tool", "tools"]),
        ],
    ),
    weak(
        I,
        "steers the model away from other tools",
        &[
            s(0, &["do", "dont", "never"]),
            s(1, &["use", "call", "invoke"]),
            s(1, &["other", "any", "another"]),
            s(1, &["tool", "tools"]),
        ],
    ),
    weak(
        I,
        "acts quietly",
        &[s(
            0,
            &[
                "secretly",
                "silently",
                "quietly",
                "covertly",
                "discreetly",
                "invisibly",
            ],
        )],
    ),
    weak(
        I,
        "claims the user already agreed",
        &[
            s(0, &["user"]),
            s(1, &["has", "have", "already"]),
            s(
                1,
                &[
                    "approved",
                    "authorized",
                    "authorised",
                    "consented",
                    "confirmed",
                    "granted",
                    "agreed",
                ],
            ),
        ],
    ),
    weak(
        I,
        "dictates other tools' behaviour",
        &[
            s(0, &["when", "whenever", "if"]),
            s(2, &["tool", "tools", "function"]),
            s(1, &["is", "are"]),
            s(
                0,
                &[
                    "available",
                    "present",
                    "loaded",
                    "installed",
                    "used",
                    "called",
                ],
            ),
        ],
    ),
    // Secrets: a credential being read, passed or sent somewhere.
    context(
        S,
        "asks for a credential",
        &[
            s(
                0,
                &[
                    "read", "include", "pass", "send", "append", "attach", "provide", "extract",
                    "collect", "copy", "leak", "steal", "grab", "dump", "upload", "print",
                    "output",
                ],
            ),
            s(3, CREDENTIALS),
        ],
    ),
    weak(
        S,
        "names a private key",
        &[
            s(0, &["private", "secret", "signing", "ssh", "gpg", "pgp"]),
            s(0, &["key", "keys"]),
        ],
    ),
    weak(
        S,
        "names a wallet recovery phrase",
        &[
            s(0, &["seed", "recovery", "mnemonic", "secret"]),
            s(0, &["phrase", "phrases", "words"]),
        ],
    ),
    context(
        S,
        "names secrets in environment variables",
        &[
            s(0, &["environment", "env"]),
            s(0, &["variable", "variables", "vars"]),
            s(
                4,
                &[
                    "secret*",
                    "key",
                    "keys",
                    "token*",
                    "password*",
                    "credential*",
                ],
            ),
        ],
    ),
    context(
        S,
        "names a credential store",
        &[s(
            0,
            &[
                "keychain",
                "keyring",
                "wallet",
                "kubeconfig",
                "1password",
                "lastpass",
                "bitwarden",
            ],
        )],
    ),
    context(
        S,
        "names browser cookies",
        &[
            s(0, &["browser"]),
            s(0, &["cookies", "history", "passwords"]),
        ],
    ),
    weak(
        X,
        "mentions exfiltration",
        &[s(0, &["exfiltrat*", "exfil"])],
    ),
    context(
        X,
        "asks to put data in a URL",
        &[
            s(
                0,
                &[
                    "include", "append", "add", "embed", "encode", "put", "insert",
                ],
            ),
            s(5, &["in", "into", "to", "as"]),
            s(2, &["url", "urls", "link", "image", "querystring"]),
        ],
    ),
];

/// Tag-shaped markers of chat templates and fake system sections:
/// `<important>`, `</system>`, `<|im_start|>`, `[inst]`, `<<sys>>`.
pub(crate) const INSTRUCTION_TAGS: &[&str] = &[
    "important",
    "system",
    "instructions",
    "instruction",
    "hidden",
    "admin",
    "critical",
    "sys",
    "inst",
    "im_start",
    "im_end",
    "tool_description",
    "description",
    "assistant",
    "developer",
    "system_prompt",
    "override",
    "priority",
    "secret_instructions",
    "user_instructions",
];

/// Words inside a URL placeholder (`{conversation}`, `<secret>`, `${API_KEY}`)
/// or a query value that say the URL is meant to carry data out.
pub(crate) const DATA_WORDS: &[&str] = &[
    "messages",
    "conversations",
    "data",
    "content",
    "contents",
    "secret",
    "secrets",
    "key",
    "keys",
    "apikey",
    "token",
    "tokens",
    "password",
    "passwords",
    "passwd",
    "credential",
    "credentials",
    "conversation",
    "chat",
    "history",
    "context",
    "prompt",
    "memory",
    "env",
    "environment",
    "ssh",
    "cookie",
    "cookies",
    "base64",
    "encoded",
    "stolen",
    "exfil",
    "leak",
    "sidenote",
    "rsa",
    "private",
    "session",
];

/// Object words of "send ... to <address>": what is being sent is data.
pub(crate) const SENT_OBJECTS: &[&str] = &[
    "message",
    "every",
    "it",
    "them",
    "this",
    "that",
    "these",
    "those",
    "everything",
    "all",
    "contents",
    "content",
    "data",
    "file",
    "files",
    "key",
    "keys",
    "token",
    "tokens",
    "secret",
    "secrets",
    "password",
    "passwords",
    "credential",
    "credentials",
    "conversation",
    "history",
    "messages",
    "emails",
    "email",
    "mail",
    "results",
    "result",
    "output",
    "information",
    "info",
    "details",
    "copy",
    "summary",
    "context",
    "env",
    "variables",
    "chat",
    "transcript",
    "documents",
    "report",
];

/// Verbs of "send ... to <address>" (imperative forms: a tool describing what
/// it does itself says "sends").
pub(crate) const SEND_VERBS: &[&str] = &[
    "send",
    "forward",
    "upload",
    "post",
    "transmit",
    "exfiltrate",
    "leak",
    "copy",
    "share",
    "report",
    "submit",
    "mail",
    "email",
    "relay",
    "deliver",
    "redirect",
    "bcc",
    "cc",
    "cc'd",
];

/// Hosts whose only common use is catching requests (request bins,
/// tunnels and out-of-band testing services): data sent there is gone.
pub(crate) const CATCHER_HOSTS: &[&str] = &[
    "webhook.site",
    "requestbin.net",
    "requestbin.com",
    "pipedream.net",
    "ngrok.io",
    "ngrok-free.app",
    "ngrok.app",
    "burpcollaborator.net",
    "oastify.com",
    "interact.sh",
    "oast.pro",
    "oast.fun",
    "oast.live",
    "requestcatcher.com",
    "beeceptor.com",
    "hookbin.com",
    "trycloudflare.com",
    "serveo.net",
    "localtunnel.me",
    "loca.lt",
];

/// Dotted names under a home directory or `/etc` that hold credentials,
/// as (folded text right after the `.`, reason); the `.` must start a path
/// component (`~/.ssh`, `"/app/.env"`, `` `.npmrc` ``), never follow a
/// letter (`process.env`, `registry.docker.io`).
pub(crate) const DOTFILES: &[(&str, &str)] = &[
    ("ssh", "names ~/.ssh"),
    ("env", "names a .env file"),
    ("aws", "names ~/.aws credentials"),
    ("npmrc", "names ~/.npmrc"),
    ("pypirc", "names ~/.pypirc"),
    ("netrc", "names ~/.netrc"),
    ("pgpass", "names ~/.pgpass"),
    ("git-credentials", "names ~/.git-credentials"),
    ("gnupg", "names ~/.gnupg"),
    ("kube", "names ~/.kube config"),
    ("docker/config", "names ~/.docker/config.json"),
    ("bash_history", "names a shell history"),
    ("zsh_history", "names a shell history"),
    ("cursor", "names the Cursor config"),
    ("claude", "names the Claude config"),
    ("config/gcloud", "names gcloud credentials"),
    ("azure", "names Azure credentials"),
    ("vault-token", "names a Vault token"),
    ("password-store", "names a password store"),
    // Eleventh review H3.
    ("config/gh", "names the GitHub CLI's tokens"),
    ("terraform.d", "names Terraform credentials"),
    ("config/solana", "names a Solana wallet"),
    ("bashrc", "names a shell profile (exported keys)"),
    ("zshrc", "names a shell profile (exported keys)"),
    ("profile", "names a shell profile (exported keys)"),
    ("bash_profile", "names a shell profile (exported keys)"),
];

/// Names that hold credentials wherever they are, matched as whole words of
/// folded text (`id_rsa`, `mcp.json`); (name, reason).
pub(crate) const SECRET_FILES: &[(&str, &str)] = &[
    ("id_rsa", "names an SSH private key"),
    ("id_ed25519", "names an SSH private key"),
    ("id_ecdsa", "names an SSH private key"),
    ("id_dsa", "names an SSH private key"),
    ("authorized_keys", "names SSH authorized_keys"),
    ("/etc/passwd", "names /etc/passwd"),
    ("/etc/shadow", "names /etc/shadow"),
    ("/etc/sudoers", "names /etc/sudoers"),
    ("/proc/self/environ", "names the process environment"),
    ("mcp.json", "names an MCP client config"),
    ("claude_desktop_config.json", "names an MCP client config"),
    ("wallet.dat", "names a wallet file"),
    ("aws_secret_access_key", "names an AWS secret key"),
    ("aws_session_token", "names an AWS session token"),
    ("cookies.sqlite", "names browser cookies"),
    ("key4.db", "names browser passwords"),
    // Eleventh review H3.
    ("/var/run/secrets", "names a mounted service-account secret"),
    (
        "serviceaccount/token",
        "names a Kubernetes service-account token",
    ),
    // Chrome's password store, as a path names it (`…/Default/Login Data`,
    // `…\Default\Login Data`): "login data" alone is everyday prose. Written
    // without its separator it never matched (a helper, twenty-fifth
    // session): [`super::poison`] compares names at a `_`, `.`, `/` or `\`.
    ("/login data", "names browser passwords"),
    ("\\login data", "names browser passwords"),
    ("credentials.tfrc.json", "names Terraform credentials"),
    ("hosts.yml", "names the GitHub CLI's tokens"),
];

/// Tags whose raw HTML a client may render or run.
pub(crate) const HTML_TAGS: &[&str] = &[
    "script", "iframe", "frame", "frameset", "object", "embed", "img", "svg", "style", "link",
    "meta", "base", "form", "math", "video", "audio", "input", "button", "textarea", "a", "image",
];
