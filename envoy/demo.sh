#!/usr/bin/env bash
# A short narrated tour of Secretgate: real OpenBao behind real Envoy with the
# secretgate filter and the policies in policies/. Every request goes through
# Envoy on 127.0.0.1; everything started here is stopped by PID on exit,
# including Ctrl-C and failures.
set -euo pipefail

ENVOY_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
REPO_ROOT="$(dirname "$ENVOY_DIR")"
RUN_DIR="${SECRETGATE_RUN_DIR:-$ENVOY_DIR/.run}"
PY="$REPO_ROOT/.venv/bin/python"
STACK=("$PY" "$ENVOY_DIR/stack.py")

say() { printf '\n\033[1m== %s\033[0m\n' "$*"; }
note() { printf '   %s\n' "$*"; }

stop_stack() {
    # A second Ctrl-C must not interrupt the cleanup half-way (down ignores it too).
    trap '' INT TERM
    trap - EXIT
    say "Stopping the stack"
    "${STACK[@]}" down --run-dir "$RUN_DIR" || true
}

# curl through Envoy, printing only the status line and OpenBao's error text (never a token).
# Proxies are bypassed: the demo never talks to anything but loopback.
http_status() {
    local method=$1 path=$2
    shift 2
    curl --noproxy '*' -s -o "$RUN_DIR/last-response.json" -w '%{http_code}' -X "$method" \
        -H "X-Vault-Token: $BAO_TOKEN" "$@" "$SECRETGATE_URL$path"
}

show_result() {
    local code=$1 expected=$2
    note "HTTP $code (expected $expected)$( [[ "$code" == "$expected" ]] && echo ' ✓' || echo ' ✗')"
    if [[ -s "$RUN_DIR/last-response.json" && "$code" != 200 ]]; then
        note "body: $(head -c 200 "$RUN_DIR/last-response.json")"
    fi
}

# The bao CLI, talking to Envoy, with the CI token as an extra header. Flags are
# only accepted after the (sub)command words, so -header goes right after them.
bao_via_envoy() {
    local words=()
    while [[ $# -gt 0 && "$1" != -* ]]; do
        words+=("$1")
        shift
    done
    "$BAO_BIN" "${words[@]}" "-header=x-secretgate-jwt=$JWT" "$@"
}

# Run a bao read and summarise it in one line: the value if allowed, the error if not.
show_bao_read() {
    local output
    if output="$(bao_via_envoy "$@" 2>&1)"; then
        note "allowed, password = $output"
    else
        note "refused: $(printf '%s' "$output" | tr -s '\n' ' ' | head -c 300)"
    fi
}

say "Preparing (envoy/setup.sh: venv, Envoy + OpenBao binaries, filter build)"
bash "$ENVOY_DIR/setup.sh"

say "Starting OpenBao (dev) and Envoy + secretgate on 127.0.0.1"
"${STACK[@]}" down --run-dir "$RUN_DIR" >/dev/null  # leftovers of an interrupted run, by PID
trap stop_stack EXIT
trap 'exit 130' INT
trap 'exit 143' TERM
# The GitHub Actions policy pack reaches the filter as a live bundle, served by
# envoy/bundle_server.py from a copy the demo edits in step 6; the repository's
# own files stay as they are. Its config.json gives the mounts their path
# templates; the demo OpenBao also has the legacy kv mount, so it is listed too
# (the filter refuses requests under mounts it was not told about).
mkdir -p "$RUN_DIR"
rm -rf "$RUN_DIR/policies"
cp -r "$REPO_ROOT/policies/packs/github-actions" "$RUN_DIR/policies"
"$PY" - "$RUN_DIR/policies/config.json" <<'PYEOF'
import json, sys
config = json.load(open(sys.argv[1]))
config["mounts"]["kv"] = "kv-v1"
json.dump(config, open(sys.argv[1], "w"), indent=1)
PYEOF
"${STACK[@]}" up --run-dir "$RUN_DIR" --bundle --policies "$RUN_DIR/policies"
# BAO_ADDR points at Envoy; BAO_TOKEN is the dev root token (not printed).
eval "$("${STACK[@]}" env --run-dir "$RUN_DIR")"
JWT="$("${STACK[@]}" mint-jwt --run-dir "$RUN_DIR" --github --claim repository=acme/api)"
LOG_LINES_BEFORE=$(wc -l <"$RUN_DIR/access.log")  # the run dir may hold earlier runs' lines
note "minted a GitHub-Actions-shaped token for acme/api on refs/heads/main (sent as x-secretgate-jwt):"
"$PY" - "$JWT" <<'PY'
import base64, json, sys
payload = sys.argv[1].split(".")[1]
claims = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
for name in ("sub", "repository", "repository_id", "ref", "ref_protected", "job_workflow_ref"):
    print(f"     {name}: {claims.get(name)}")
PY
note "policies: the GitHub Actions pack (policies/packs/github-actions). One rule,"
note "gha-repository-reads-own-folder, serves every repository: the path template"
note "ci/{repository=*/*}/** gives each secret its repository, which the rule compares with the claim"

say "1. acme/api (main) reads its own CI secret with the bao CLI: secret/ci/acme/api/db (KV v2)"
show_bao_read kv get -mount=secret -field=password ci/acme/api/db
note "(bao kv first asks GET /v1/sys/internal/ui/mounts/secret which engine version the mount is)"

say "2. acme/api tries another repository's secret: secret/ci/acme/web/token"
show_result "$(http_status GET /v1/secret/data/ci/acme/web/token -H "x-secretgate-jwt: $JWT")" 403

say "3. A request with no CI token at all"
show_result "$(http_status GET /v1/secret/data/ci/acme/api/db)" 401

say "4. Production secrets only from the production environment: secret/prod/acme/api/db"
show_result "$(http_status GET /v1/secret/data/prod/acme/api/db -H "x-secretgate-jwt: $JWT")" 403
note "refused by gha-production-only-from-production-environment: this job runs in no environment"
PROD_JWT="$("${STACK[@]}" mint-jwt --run-dir "$RUN_DIR" --github --claim repository=acme/api --claim environment=production)"
show_result "$(http_status GET /v1/secret/data/prod/acme/api/db -H "x-secretgate-jwt: $PROD_JWT")" 200
note "the same repository's deploy job in its production environment (sub $("$PY" - "$PROD_JWT" <<'PY'
import base64, json, sys
payload = sys.argv[1].split(".")[1]
print(json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))["sub"])
PY
))"

say "5. LIST secret/metadata/ci/acme/api (the raw LIST method, which Envoy must let through)"
code="$(http_status LIST /v1/secret/metadata/ci/acme/api -H "x-secretgate-jwt: $JWT")"
show_result "$code" 200
if [[ "$code" == 200 ]]; then
    note "keys: $("$PY" -c 'import json,sys; print(", ".join(json.load(sys.stdin)["data"]["keys"]))' <"$RUN_DIR/last-response.json")"
fi
note "(the bao CLI itself lists with GET ...?list=true, not with the LIST method)"

say "6. A contractor leaves: acme/vendor-sync's job identity goes into Group::\"offboarded\" in the served entities.json"
VENDOR_JWT="$("${STACK[@]}" mint-jwt --run-dir "$RUN_DIR" --github --claim repository=acme/vendor-sync)"
show_result "$(http_status GET /v1/secret/data/ci/acme/vendor-sync/key -H "x-secretgate-jwt: $VENDOR_JWT")" 200
"$PY" - "$RUN_DIR/policies/entities.json" <<'PYEOF'
import json, sys
entities = json.load(open(sys.argv[1]))
entities += [
    {"uid": {"type": "Group", "id": "offboarded"}, "attrs": {}, "parents": []},
    {"uid": {"type": "Workload", "id": "repo:acme/vendor-sync:ref:refs/heads/main"}, "attrs": {},
     "parents": [{"type": "Group", "id": "offboarded"}]},
]
json.dump(entities, open(sys.argv[1], "w"), indent=1)
PYEOF
note "entities.json edited; the filter fetches the bundle every 5 s, Envoy keeps running"
for _ in $(seq 1 12); do
    code="$(http_status GET /v1/secret/data/ci/acme/vendor-sync/key -H "x-secretgate-jwt: $VENDOR_JWT")"
    [[ "$code" == 403 ]] && break
    sleep 1
done
show_result "$code" 403

say "What Envoy logged (method, path, status, details) — the decision records are in $RUN_DIR/access.log"
sleep 0.3  # Envoy flushes the access log every 100ms
"$PY" - "$RUN_DIR/access.log" "$LOG_LINES_BEFORE" <<'EOF'
import json, sys
for line in open(sys.argv[1]).readlines()[int(sys.argv[2]):]:
    entry = json.loads(line)
    print(f"   {entry['method']:5} {entry['path']:45} {entry['response_code']} {entry['response_code_details']}")
EOF
