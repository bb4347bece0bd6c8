#!/usr/bin/env bash
# Install or update the edge agent as a systemd service (Raspberry Pi OS 64-bit, bookworm or trixie).
#
#   sudo systemd/install.sh SOURCE [options]
#
# SOURCE is what pip installs: a project checkout (directory), a wheel or sdist file, or a pip
# requirement ("edge-anomaly==0.1.0"). The `agent` extra is added (numpy, paho-mqtt, PyYAML,
# pydantic, ai-edge-litert; never TensorFlow). See docs/raspberry-pi.md.
#
# Safe to run again: an existing config and password file are kept, the program is upgraded in
# place and a running service is restarted onto it.
set -euo pipefail

usage() {
    cat <<'EOF'
usage: sudo install.sh SOURCE [options]

  SOURCE                      project directory, wheel/sdist file, or pip requirement
  --config FILE               config to install as /etc/edge-agent/agent.yaml when there is none
                              (default: SOURCE/configs/agent.yaml, or configs/agent.yaml beside
                              this script's checkout)
  --mqtt-password-file FILE   install FILE ('-' = standard input) as the MQTT password credential
                              (/etc/edge-agent/mqtt-password, root-only, mode 0600); replaces it
  --runtime litert|tflite     LiteRT runtime: ai-edge-litert (default, the `agent` extra) or the
                              old tflite-runtime (`tflite` extra; Python 3.11 only, needs numpy<2)
  --no-start                  install and enable, but neither check nor (re)start the service
  -h, --help                  this help

Environment (for packaging and tests; the unit file assumes the defaults):
  EDGE_AGENT_PREFIX=/opt/edge-agent  EDGE_AGENT_CONF_DIR=/etc/edge-agent
  EDGE_AGENT_UNIT_DIR=/etc/systemd/system  EDGE_AGENT_PYTHON=python3  SYSTEMCTL=systemctl
EOF
}

die() { echo "install.sh: $*" >&2; exit 1; }
say() { echo "==> $*"; }

# -- arguments ---------------------------------------------------------------------------------
source_spec=""
config_file=""
password_file=""
runtime="litert"
start=1
while [[ $# -gt 0 ]]; do
    case "$1" in
        -h|--help) usage; exit 0 ;;
        --config) [[ $# -ge 2 ]] || die "--config needs a file"; config_file="$2"; shift 2 ;;
        --mqtt-password-file)
            [[ $# -ge 2 ]] || die "--mqtt-password-file needs a file (or -)"
            password_file="$2"; shift 2 ;;
        --runtime) [[ $# -ge 2 ]] || die "--runtime needs litert or tflite"; runtime="$2"; shift 2 ;;
        --no-start) start=0; shift ;;
        -*) usage >&2; exit 2 ;;
        *) [[ -z "$source_spec" ]] || { usage >&2; exit 2; }; source_spec="$1"; shift ;;
    esac
done
if [[ -z "$source_spec" ]]; then
    usage >&2
    exit 2
fi
case "$runtime" in
    litert) extra="agent" ;;
    tflite) extra="tflite" ;;
    *) die "--runtime must be litert or tflite, not '$runtime'" ;;
esac

if [[ "$(id -u)" -ne 0 ]]; then
    die "must run as root (sudo $0 ...): it writes /opt, /etc and systemd units"
fi

scratch=()
trap 'rm -f "${scratch[@]}"' EXIT
if [[ "$password_file" == "-" ]]; then
    # Take the password off standard input first, before anything else could read from it.
    password_file="$(umask 077 && mktemp)"
    scratch+=("$password_file")
    cat > "$password_file"
fi

PREFIX="${EDGE_AGENT_PREFIX:-/opt/edge-agent}"
CONF_DIR="${EDGE_AGENT_CONF_DIR:-/etc/edge-agent}"
UNIT_DIR="${EDGE_AGENT_UNIT_DIR:-/etc/systemd/system}"
PYTHON="${EDGE_AGENT_PYTHON:-python3}"
SYSTEMCTL="${SYSTEMCTL:-systemctl}"
VENV="$PREFIX/venv"
SCRIPT_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
UNIT_SRC="$SCRIPT_DIR/edge-agent.service"
[[ -f "$UNIT_SRC" ]] || die "the unit file is missing: expected $UNIT_SRC beside this script"

# Everything created below is root's, readable where the service must read it.
umask 022

# -- Python and the virtual environment ---------------------------------------------------------
command -v "$PYTHON" >/dev/null || die "$PYTHON not found (Raspberry Pi OS ships python3)"
"$PYTHON" -c 'import sys; sys.exit(sys.version_info < (3, 11))' \
    || die "Python 3.11 or newer is needed ($("$PYTHON" -V 2>&1))"
machine="$(uname -m)"
if [[ "$machine" != "aarch64" && "$machine" != "x86_64" ]]; then
    echo "install.sh: warning: $machine: the LiteRT runtime has wheels for aarch64 (64-bit" \
         "Raspberry Pi OS) and x86_64 only; pip is likely to fail" >&2
fi
if ! "$PYTHON" -c 'import ensurepip, venv' 2>/dev/null; then
    command -v apt-get >/dev/null || die "$PYTHON has no venv/ensurepip module"
    say "installing python3-venv"
    DEBIAN_FRONTEND=noninteractive apt-get install -y python3-venv
fi

py_version() { "$1" -c 'import sys; print("%d.%d" % sys.version_info[:2])' 2>/dev/null || true; }
want="$(py_version "$PYTHON")"
have="$( [[ -x "$VENV/bin/python" ]] && py_version "$VENV/bin/python" || true)"
if [[ -n "$have" && "$have" != "$want" ]]; then
    # e.g. after an upgrade from bookworm (3.11) to trixie (3.13): compiled wheels no longer fit.
    say "rebuilding $VENV (Python $have -> $want)"
    rm -rf "$VENV"
    have=""
fi
if [[ -z "$have" ]]; then
    say "creating $VENV (Python $want)"
    mkdir -p "$PREFIX"
    "$PYTHON" -m venv "$VENV"
fi

# -- the program ----------------------------------------------------------------------------------
# pip needs an extra written onto the requirement itself: DIR[agent], file.whl[agent], name[agent].
if [[ -d "$source_spec" ]]; then
    target="$(cd "$source_spec" && pwd)[$extra]"
elif [[ -f "$source_spec" ]]; then
    target="$(cd "$(dirname "$source_spec")" && pwd)/$(basename "$source_spec")[$extra]"
elif [[ "$source_spec" == *"["* || "$source_spec" == *"://"* || "$source_spec" == *" @ "* ]]; then
    target="$source_spec"     # the caller wrote the extra (or a URL) themselves
elif [[ "$source_spec" =~ ^([A-Za-z0-9][A-Za-z0-9._-]*)(.*)$ ]]; then
    target="${BASH_REMATCH[1]}[$extra]${BASH_REMATCH[2]}"
else
    die "cannot tell what '$source_spec' is: give a directory, a wheel/sdist, or a pip requirement"
fi
say "installing $target into $VENV"
"$VENV/bin/python" -m pip install --disable-pip-version-check --upgrade \
    --upgrade-strategy only-if-needed "$target"
[[ -x "$VENV/bin/edge-agent" ]] || die "pip did not install the edge-agent command into $VENV/bin"

# -- configuration ----------------------------------------------------------------------------------
# /etc/edge-agent and agent.yaml are root's and world-readable: the service runs as a dynamic
# user that must read them (and nothing there is secret: the password is a credential).
install -d -m 0755 "$CONF_DIR"
if [[ -z "$config_file" ]]; then
    for candidate in "$source_spec/configs/agent.yaml" "$SCRIPT_DIR/../configs/agent.yaml"; do
        if [[ -f "$candidate" ]]; then config_file="$candidate"; break; fi
    done
fi
# The repository's config names the demo bundle relative to the checkout
# (bundle: ../edge_agent/demo_bundle), which means nothing under /etc. Installed, it names a copy
# of the demo bundle beside it instead, so the service starts as-is with a broker on this host.
demo_pattern='^bundle:[[:space:]]*\.\./edge_agent/demo_bundle'
render_config() {  # SRC DEST
    sed -E "s#${demo_pattern}#bundle: bundles/demo      #" "$1" > "$2"
}
if [[ -n "$config_file" ]]; then
    [[ -f "$config_file" ]] || die "config file not found: $config_file"
    rendered="$(mktemp)"
    scratch+=("$rendered")
    render_config "$config_file" "$rendered"
    if [[ ! -e "$CONF_DIR/agent.yaml" ]]; then
        say "installing $CONF_DIR/agent.yaml (edit it: broker, topics, bundle)"
        install -m 0644 "$rendered" "$CONF_DIR/agent.yaml"
    elif ! cmp -s "$rendered" "$CONF_DIR/agent.yaml"; then
        say "keeping your $CONF_DIR/agent.yaml; the shipped one is $CONF_DIR/agent.yaml.dist"
        install -m 0644 "$rendered" "$CONF_DIR/agent.yaml.dist"
    fi
elif [[ ! -e "$CONF_DIR/agent.yaml" ]]; then
    echo "install.sh: warning: no config found; write $CONF_DIR/agent.yaml before starting" >&2
fi
if [[ -f "$CONF_DIR/agent.yaml" ]] && grep -qE '^bundle:[[:space:]]*bundles/demo([[:space:]]|$)' "$CONF_DIR/agent.yaml" \
        && [[ ! -e "$CONF_DIR/bundles/demo" ]]; then
    demo="$("$VENV/bin/python" -I -c 'import edge_agent, pathlib
print(pathlib.Path(edge_agent.__file__).parent / "demo_bundle")' 2>/dev/null || true)"
    if [[ -n "$demo" && -d "$demo" ]]; then
        say "copying the demo bundle to $CONF_DIR/bundles/demo"
        install -d -m 0755 "$CONF_DIR/bundles"
        cp -R "$demo" "$CONF_DIR/bundles/demo"
        chmod -R u=rwX,go=rX "$CONF_DIR/bundles/demo"
    else
        echo "install.sh: warning: the config names bundles/demo, but the installed package has no demo bundle" >&2
    fi
fi

# The MQTT password: root-only; systemd hands a copy to the service (LoadCredential=).
secret="$CONF_DIR/mqtt-password"
if [[ -n "$password_file" ]]; then
    say "installing the MQTT password as $secret"
    tmp="$(mktemp "$CONF_DIR/.mqtt-password.XXXXXX")"
    chmod 0600 "$tmp"
    cat -- "$password_file" > "$tmp"
    mv -f "$tmp" "$secret"
elif [[ ! -e "$secret" ]]; then
    say "creating an empty $secret (no password); fill it with: sudo install.sh ... --mqtt-password-file FILE"
    (umask 077 && : > "$secret")
fi
chown root:root "$secret"
chmod 0600 "$secret"

# -- the unit ---------------------------------------------------------------------------------------
install -d -m 0755 "$UNIT_DIR"
install -m 0644 "$UNIT_SRC" "$UNIT_DIR/edge-agent.service"
"$SYSTEMCTL" daemon-reload
"$SYSTEMCTL" enable edge-agent.service

if [[ "$start" -eq 0 ]]; then
    say "installed and enabled; start it with: sudo systemctl start edge-agent"
    exit 0
fi

# The same check the unit runs before every start; the credential file already has the name the
# config refers to, so point CREDENTIALS_DIRECTORY at it for this one run.
if ! CREDENTIALS_DIRECTORY="$CONF_DIR" "$VENV/bin/edge-agent" check --config "$CONF_DIR/agent.yaml"; then
    die "the config or bundle does not check out (above); fix $CONF_DIR/agent.yaml, then: sudo systemctl restart edge-agent"
fi
if "$SYSTEMCTL" is-active --quiet edge-agent.service; then
    say "restarting edge-agent onto the new version"
    "$SYSTEMCTL" restart edge-agent.service
else
    "$SYSTEMCTL" enable --now edge-agent.service
fi
say "done: systemctl status edge-agent; journalctl -u edge-agent -f"
