#!/usr/bin/env bash
# A short narrated tour of Secretgate: real OpenBao behind real Envoy with the
# secretgate filter and the GitHub Actions policy pack, and the approval
# service (approver/). Every request goes through Envoy on 127.0.0.1;
# everything started here is stopped by PID on exit, including Ctrl-C and
# failures. Neither the Vault token nor an approver's token is ever printed.
set -euo pipefail

ENVOY_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
REPO_ROOT="$(dirname "$ENVOY_DIR")"
RUN_DIR="${SECRETGATE_RUN_DIR:-$ENVOY_DIR/.run}"
PY="$REPO_ROOT/.venv/bin/python"
STACK=("$PY" "$ENVOY_DIR/stack.py")
# The operator CLI (secretgate hmac, secretgate report): the dev build that
# setup.sh makes for the stack's check-mounts, so the demo compiles nothing more
# for it (a release build is fat LTO over Cedar: minutes on a small machine).
SECRETGATE_CLI="${SECRETGATE_CLI:-$REPO_ROOT/target/debug/secretgate}"
APPROVER_BIN="$REPO_ROOT/target/debug/approver"
APPROVER_PID=""
HELD_PID=""

say() { printf '\n\033[1m== %s\033[0m\n' "$*"; }
note() { printf '   %s\n' "$*"; }

stop_stack() {
    # A second Ctrl-C must not interrupt the cleanup half-way (down ignores it too).
    trap '' INT TERM
    trap - EXIT
    say "Stopping the stack"
    if [[ -n "$HELD_PID" ]] && kill -0 "$HELD_PID" 2>/dev/null; then
        kill "$HELD_PID" 2>/dev/null || true  # a read still held in Envoy (step 8)
    fi
    "${STACK[@]}" down --run-dir "$RUN_DIR" || true
    stop_approver
}

# The approver runs in the background; its PID is also kept in approver.pid, so
# that a run killed before its trap could stop it is cleaned up by the next run.
# Only a process that still runs this approver binary is stopped.
stop_approver() {
    local pid exe
    pid="$(cat "$RUN_DIR/approver.pid" 2>/dev/null || true)"
    if [[ -n "$pid" ]] && exe="$(readlink "/proc/$pid/exe" 2>/dev/null)" && [[ "$exe" == "$APPROVER_BIN"* ]]; then
        kill -TERM "$pid" 2>/dev/null || true
        for _ in $(seq 1 50); do
            kill -0 "$pid" 2>/dev/null || break
            sleep 0.1
        done
        if kill -0 "$pid" 2>/dev/null; then
            kill -KILL "$pid" 2>/dev/null || true
        fi
        echo "stopped: approver (pid $pid)"
    fi
    rm -f "$RUN_DIR/approver.pid"
}

# Start the approval service on a port it picks itself (listen 127.0.0.1:0; it
# prints the address it bound) with a fresh database (an earlier run's grant
# would let step 8's read through at once) and one approver, alice@acme.test in
# group secops. The tokens are random per run, kept in 0600 files and handed
# over in files and the environment: never printed, never on a command line.
start_approver() {
    rm -f "$RUN_DIR/approver.db" "$RUN_DIR/approver.db-wal" "$RUN_DIR/approver.db-shm"
    (
        umask 077
        "$PY" -c 'import secrets; print("demo-callout-" + secrets.token_hex(16))' >"$RUN_DIR/callout.token"
        "$PY" -c 'import secrets; print("demo-alice-" + secrets.token_hex(16))' >"$RUN_DIR/alice.token"
        cat >"$RUN_DIR/approver.toml" <<EOF
listen = "127.0.0.1:0"
database = "$RUN_DIR/approver.db"
callout_token = "$(cat "$RUN_DIR/callout.token")"
max_wait_ms = 30000

[[approvers]]
id = "alice@acme.test"
token = "$(cat "$RUN_DIR/alice.token")"
groups = ["secops"]
EOF
    )
    : >"$RUN_DIR/approver.log"
    "$APPROVER_BIN" serve --config "$RUN_DIR/approver.toml" >>"$RUN_DIR/approver.log" 2>&1 &
    APPROVER_PID=$!
    echo "$APPROVER_PID" >"$RUN_DIR/approver.pid"
    APPROVER_URL=""
    for _ in $(seq 1 100); do
        APPROVER_URL="$(sed -n 's|^approver listening on \(http://127\.0\.0\.1:[0-9]*\)$|\1|p' "$RUN_DIR/approver.log")"
        [[ -n "$APPROVER_URL" ]] && break
        if ! kill -0 "$APPROVER_PID" 2>/dev/null; then
            echo "the approver exited; $RUN_DIR/approver.log:" >&2
            tail -n 20 "$RUN_DIR/approver.log" >&2
            return 1
        fi
        sleep 0.1
    done
    [[ -n "$APPROVER_URL" ]] || { echo "the approver did not start; see $RUN_DIR/approver.log" >&2; return 1; }
    APPROVER_PORT="${APPROVER_URL##*:}"
}

# The approver CLI as alice: the URL and her token from the environment (--token would show in ps).
as_alice() {
    APPROVER_URL="$APPROVER_URL" APPROVER_TOKEN="$(cat "$RUN_DIR/alice.token")" \
        "$APPROVER_BIN" "$@" 2>>"$RUN_DIR/approver-cli.log"
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
# The value read stays in BAO_READ_VALUE: step 7 looks for its HMAC in the audit record.
BAO_READ_VALUE=""
show_bao_read() {
    local output
    if output="$(bao_via_envoy "$@" 2>&1)"; then
        BAO_READ_VALUE="$output"
        note "allowed, password = $output"
    else
        note "refused: $(printf '%s' "$output" | tr -s '\n' ' ' | head -c 300)"
    fi
}

# The audit record of the first request after line $2 of the access log $1 with
# method $3, path $4 and decision $5 (* for any): the JSON string in the line's
# `audit` field, printed as one line. Waits up to 5 s (Envoy flushes every 100ms).
audit_record() {
    "$PY" - "$@" <<'PYEOF'
import json, sys, time
log, skip, wanted = sys.argv[1], int(sys.argv[2]), tuple(sys.argv[3:6])
deadline = time.monotonic() + 5
while True:
    for line in open(log).readlines()[skip:]:
        audit = json.loads(line).get("audit")
        record = json.loads(audit) if audit else {}
        found = (record.get("method"), record.get("path"), record.get("decision"))
        if found == wanted or (wanted[2] == "*" and found[:2] == wanted[:2]):
            print(json.dumps(record))
            sys.exit(0)
    if time.monotonic() > deadline:
        sys.exit(f"no audit record of {' '.join(wanted)} in {log}")
    time.sleep(0.1)
PYEOF
}

say "Preparing (envoy/setup.sh --no-browser: venv, Envoy + OpenBao binaries, filter and CLI builds; the approver)"
bash "$ENVOY_DIR/setup.sh" --no-browser
printf '[setup] building the approval service (approver/)\n' >&2
(cd "$REPO_ROOT" && cargo build -q -p approver)
APPROVER_BIN="$(realpath "$APPROVER_BIN")"

say "Starting OpenBao (dev), Envoy + secretgate and the approval service on 127.0.0.1"
mkdir -p "$RUN_DIR"
# Leftovers of an interrupted run, by PID.
"${STACK[@]}" down --run-dir "$RUN_DIR" >/dev/null
stop_approver >/dev/null
trap stop_stack EXIT
trap 'exit 130' INT
trap 'exit 143' TERM
# The report (step 9) covers this run's records only: the run dir's access log keeps earlier runs' lines.
DEMO_SINCE="$(date -u +%Y-%m-%dT%H:%M:%SZ)"
start_approver
note "approver $APPROVER_URL (pid $APPROVER_PID, log $RUN_DIR/approver.log); one approver: alice@acme.test (secops)"
# The GitHub Actions policy pack reaches the filter as a live bundle, served by
# envoy/bundle_server.py from a copy the demo edits in step 6; the repository's
# own files stay as they are. Its config.json gives the mounts their path
# templates; the demo OpenBao also has the legacy kv mount, so it is listed too
# (the filter refuses requests under mounts it was not told about).
rm -rf "$RUN_DIR/policies"
cp -r "$REPO_ROOT/policies/packs/github-actions" "$RUN_DIR/policies"
"$PY" - "$RUN_DIR/policies/config.json" <<'PYEOF'
import json, sys
config = json.load(open(sys.argv[1]))
config["mounts"]["kv"] = "kv-v1"
json.dump(config, open(sys.argv[1], "w"), indent=1)
PYEOF
# Step 8's rule, in the served copy only: a production job reads acme/payments'
# production secrets only once someone in secops approves. The pack's own
# production rule does not permit such a read (the repositories differ), so this
# annotated permit alone does, and the filter holds the request for a decision.
APPROVAL_POLICY='@id("demo-payments-production-needs-secops")
@approval("secops")
@approval_mode("hold")
@approval_ttl("15m")
permit (
  principal is Workload,
  action == Action::"read",
  resource in Path::"secret/prod/acme/payments"
)
when { context.claims has environment && context.claims.environment == "production" };'
printf '\n// make demo, step 8: held until someone in secops approves.\n%s\n' "$APPROVAL_POLICY" \
    >>"$RUN_DIR/policies/policies.cedar"
# --approver-port gives Envoy the cluster "approver" and the filter's static
# configuration its `approval` section (the policies come from the bundle).
"${STACK[@]}" up --run-dir "$RUN_DIR" --bundle --policies "$RUN_DIR/policies" \
    --approver-port "$APPROVER_PORT" --approval-token-file "$RUN_DIR/callout.token"
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

say "7. Step 1's audit record, from $RUN_DIR/access.log: values and the token masked (hmac-sha256)"
# The record is the JSON string in the `audit` field of Envoy's access-log line.
STEP1_RECORD="$(audit_record "$RUN_DIR/access.log" "$LOG_LINES_BEFORE" GET /v1/secret/data/ci/acme/api/db allow)"
"$PY" -c 'import json, sys; print(json.dumps(json.loads(sys.argv[1]), indent=2))' "$STEP1_RECORD" | sed 's/^/     /'
# The stack's development audit key (DEV_AUDIT_KEY in envoy/stacklib/plugin_config.py), without a newline, 0600.
(
    umask 077
    "$PY" -c 'import sys; sys.path.insert(0, sys.argv[1]); from stacklib.plugin_config import DEV_AUDIT_KEY; sys.stdout.write(DEV_AUDIT_KEY)' \
        "$ENVOY_DIR" >"$RUN_DIR/audit.key"
)
note "an auditor with the audit key looks for the value the client read in step 1:"
note "\$ secretgate hmac --key-file $RUN_DIR/audit.key '$BAO_READ_VALUE'"
STEP1_HMAC="$("$SECRETGATE_CLI" hmac --key-file "$RUN_DIR/audit.key" "$BAO_READ_VALUE")"
note "$STEP1_HMAC"
"$PY" - "$STEP1_RECORD" "$STEP1_HMAC" <<'PYEOF'
import json, sys
record, wanted = json.loads(sys.argv[1]), sys.argv[2]
def places(value, at=""):
    if isinstance(value, dict):
        for key, inner in value.items():
            yield from places(inner, f"{at}.{key}" if at else key)
    elif isinstance(value, list):
        for index, inner in enumerate(value):
            yield from places(inner, f"{at}[{index}]")
    elif value == wanted:
        yield at
found = list(places(record))
print(f"   the same HMAC is in the record at {', '.join(found)} ✓" if found else "   not in the record ✗")
sys.exit(0 if found else 1)
PYEOF
note "lines of $RUN_DIR/access.log holding the value itself: $(grep -cF -- "$BAO_READ_VALUE" "$RUN_DIR/access.log" || true)"

HELD_PATH=/v1/secret/data/prod/acme/payments/stripe
say "8. A secret behind an approval: acme/api's production job reads acme/payments' secret/prod/acme/payments/stripe"
note "the served bundle has one more permit (added to the demo's copy of the pack):"
printf '%s\n' "$APPROVAL_POLICY" | sed 's/^/     /'
# Seeded straight into OpenBao (not through Envoy), the root token from the environment.
BAO_ADDR="$SECRETGATE_BAO_DIRECT_URL" "$BAO_BIN" kv put -mount=secret prod/acme/payments/stripe \
    api_key=FAKE-prod-acme-payments-stripe-key-6a2d >/dev/null
REASON="https://github.com/acme/api/actions/runs/4242424242"
note "the deploy job (environment production) asks, with X-Secretgate-Reason: $REASON"
rm -f "$RUN_DIR/last-response.json" "$RUN_DIR/held-status"
# In the background: the filter holds the request in Envoy until someone decides (hold mode).
curl --noproxy '*' -s --max-time 60 -o "$RUN_DIR/last-response.json" -w '%{http_code}' \
    -H "X-Vault-Token: $BAO_TOKEN" -H "x-secretgate-jwt: $PROD_JWT" -H "X-Secretgate-Reason: $REASON" \
    "$SECRETGATE_URL$HELD_PATH" >"$RUN_DIR/held-status" &
HELD_PID=$!
APPROVAL_ID=""
for _ in $(seq 1 100); do
    APPROVAL_ID="$(as_alice list --json | "$PY" -c '
import json, sys
for approval in json.load(sys.stdin)["approvals"]:
    if "secret/prod/acme/payments/stripe" in approval["resource"]:
        print(approval["id"])
        break
' || true)"
    [[ -n "$APPROVAL_ID" ]] && break
    sleep 0.1
done
[[ -n "$APPROVAL_ID" ]] || { echo "no pending approval appeared; see $RUN_DIR/approver.log" >&2; exit 1; }
note "the filter asked the approver, which notes a pending approval for secops (approver list):"
as_alice list | sed 's/^/     /'
note "approval page: $APPROVER_URL/#$APPROVAL_ID (the approval_url: sign in with an approver's token)"
sleep 1
if kill -0 "$HELD_PID" 2>/dev/null; then
    note "meanwhile the read is held in Envoy: the client is still waiting for its answer"
fi
note "alice (secops) approves from the command line: approver approve $APPROVAL_ID"
as_alice approve "$APPROVAL_ID" | sed 's/^/     /'
wait "$HELD_PID" || true
HELD_PID=""
show_result "$(cat "$RUN_DIR/held-status")" 200
note "the held read completed: api_key = $("$PY" -c 'import json,sys; print(json.load(sys.stdin)["data"]["data"]["api_key"])' <"$RUN_DIR/last-response.json")"
HELD_RECORD="$(audit_record "$RUN_DIR/access.log" "$LOG_LINES_BEFORE" GET "$HELD_PATH" '*')"
"$PY" - "$HELD_RECORD" <<'PYEOF'
import json, sys
record = json.loads(sys.argv[1])
print(f"   its audit record: decision {record['decision']}, policies {record['policies']}")
print(f"     approval: {json.dumps(record.get('approval'))}")
PYEOF
show_result "$(http_status GET "$HELD_PATH" -H "x-secretgate-jwt: $PROD_JWT")" 200
note "asked again: allowed at once under alice's grant (this job, read, this secret, for 15 minutes)"
rm -f "$RUN_DIR/last-response.json"  # it held the secret's value

say "What Envoy logged (method, path, status, details) — the decision records are in $RUN_DIR/access.log"
sleep 0.3  # Envoy flushes the access log every 100ms
"$PY" - "$RUN_DIR/access.log" "$LOG_LINES_BEFORE" <<'EOF'
import json, sys
for line in open(sys.argv[1]).readlines()[int(sys.argv[2]):]:
    entry = json.loads(line)
    print(f"   {entry['method']:5} {entry['path']:45} {entry['response_code']} {entry['response_code_details']}")
EOF

say "9. The access report of this run: secretgate report over $RUN_DIR/access.log"
"$SECRETGATE_CLI" report --log "$RUN_DIR/access.log" --since "$DEMO_SINCE" \
    --out "$RUN_DIR/report.html" --json "$RUN_DIR/report.json"
note "the HTML is self-contained (open it in any browser); the same figures as data in $RUN_DIR/report.json:"
"$PY" - "$RUN_DIR/report.json" <<'EOF'
import json, sys
report = json.load(open(sys.argv[1]))
summary, approvals = report["summary"], report["summary"]["approvals"]
print(f"   {summary['records']} records: {summary['allowed']} allowed, {summary['refused']} refused;"
      f" approvals: {approvals['requested']} requested, {approvals['approved']} approved")
for grant in report["approvals"]:
    print(f"   released after approval: {grant['resource']} to {grant['requester']},"
          f" approved by {grant['approver']} (reason given: {grant['request_reason']})")
for row in report["offboarding"]:
    print(f"   cut off: {row['principal']}: allowed from {row['first_allowed']}, refused from {row['first_refusal']}")
EOF
