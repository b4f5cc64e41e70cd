"""The classification table against the real OpenBao.

``plugin/tests/classification.rs`` proves that the filter classifies every
case of ``plugin/tests/classification_cases.json`` as the table says. This
file proves the other half: that the table says what OpenBao itself does.
Every non-mutating case is sent straight to a private OpenBao (no Envoy, root
token, path byte for byte) and whatever OpenBao *serves* is the ground truth:

* a table ``Secret::"X"`` may serve only X's values;
* a table ``Path::"P"`` may serve only values under P, and as a listing only
  P's own listing or (``SCAN``, ``?scan=true``) P's recursive listing;
* a table ``Endpoint`` may serve no secret value, no KV listing and no wrapped
  response, unless its action is ``unwrap``;
* a wrapped response may be served only where the table says ``unwrap``;
* a table refusal (400/405) accepts anything: the filter never forwards it.

The table's namespaces are real OpenBao namespaces: ``team`` hosts ``kv``
(KV v1) and ``secret`` (KV v2), so ``/v1/team/kv/app`` and
``X-Vault-Namespace: team`` + ``/v1/secret/data/app`` reach the secrets the
table names, and ``nsx`` hosts ``secret``, ``kv`` and ``transit`` like the
root namespace does.

Then the whole table runs a second time inside ``nsx``: every case of the
root namespace (no namespace header, no namespace in its path or resource) is
sent once with ``X-Vault-Namespace: nsx`` and once with ``nsx/`` prefixed to
its path, and judged against the table's expectation shifted into ``nsx``
(``Secret::"nsx/secret/ci/app"`` for ``Secret::"secret/ci/app"``; a refusal
stays a refusal). The secrets in ``nsx`` carry their own markers, so a
namespaced request that OpenBao answers from the root namespace is caught.
``classification.rs`` proves natively that the filter classifies both
spellings of the same cases that way.

What OpenBao served is recognised by unique markers: every secret is seeded
with values no other secret has, every folder is seeded so that no two
folders list the same keys, and every wrapped response is fresh. Mutating
cases (writes, deletes) are not sent; they are counted as not replayed.
"""

from __future__ import annotations

import base64
import json
import re
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import quote, unquote, urlsplit

import pytest

import stack as stack_module
from conftest import RawResponse, raw_request

TABLE_FILE = stack_module.REPO_ROOT / "plugin" / "tests" / "classification_cases.json"
REPORT_NAME = "differential-report.txt"

# The namespaces the private OpenBao creates; they must be the table's.
NAMESPACES = ("team", "nsx")
# The namespace the root cases are replayed in (the filter side: SHIFT_NAMESPACE
# in classification.rs).
SHIFT_NAMESPACE = "nsx"
# What the private OpenBao hosts, by mount path with its namespace prefix.
# `secret` (KV v2) comes with dev mode and `kv` (KV v1) with the stack; the
# others are enabled inside their namespace. database/aws/pki/ssh are not
# hosted: OpenBao answers their cases with 404, which the oracle accepts.
KV_MOUNTS = {
    "secret": "kv-v2",
    "kv": "kv-v1",
    "team/kv": "kv-v1",
    "team/secret": "kv-v2",
    f"{SHIFT_NAMESPACE}/secret": "kv-v2",
    f"{SHIFT_NAMESPACE}/kv": "kv-v1",
}
PRESET_MOUNTS = {"secret", "kv"}
TRANSIT_MOUNT = "transit"
TRANSIT_MOUNTS = (TRANSIT_MOUNT, f"{SHIFT_NAMESPACE}/{TRANSIT_MOUNT}")
TRANSIT_KEYS = ("app", "other")  # `other` is a decoy: a variant must not reach it under app's name

# Secrets seeded besides the ones the table names. Each is a near miss of a
# table secret, so a variant that OpenBao resolves "surprisingly" lands on a
# value the oracle can tell apart.
DECOY_SECRETS = (
    "secret/ci",  # a key named like the folder: `data/ci/app/..` reads it
    "secret/ci/App",  # case differs
    "secret/ci/\u0430pp",  # Cyrillic а
    "secret/ci/\u00e4pp",  # NFC ä; the NFD spelling must not reach it
    "secret/ci/app ",  # trailing space
    "secret/ci/app?",  # a literal question mark (sent as %3F)
    "secret/ci/x/app",  # `ci/x/../app` must not read this one
    "secret/ci/acme/api/other",  # a sibling of the table's db secret
    "secret/prod/app",  # same name in another folder
    "kv/ci/App",
    "kv/ci/app ",
    "kv/prod/app",
    "team/kv/other",
    "team/secret/other",
)

MUTATING_METHODS = {"POST", "PUT", "PATCH", "DELETE"}
REDIRECT_STATUSES = {301, 302, 307, 308}
MAX_REDIRECTS = 3
WRAP_TTL = "300"


# ---------------------------------------------------------------- the table


def load_table() -> dict:
    return json.loads(TABLE_FILE.read_text())


def parse_resource(text: str) -> tuple[str, str]:
    """`Secret::"a/b"` -> ("Secret", "a/b").

    The table holds the filter's Display form, whose id is Rust-Debug-quoted:
    combining and unprintable characters appear as `\\u{308}`.
    """
    kind, _, quoted = text.partition("::")
    assert quoted.startswith('"') and quoted.endswith('"'), text
    return kind, RUST_ESCAPE.sub(_unescape, quoted[1:-1])


RUST_ESCAPE = re.compile(r"\\(u\{([0-9a-fA-F]{1,6})\}|.)")
RUST_SIMPLE_ESCAPES = {"n": "\n", "r": "\r", "t": "\t", "0": "\0", "\\": "\\", '"': '"', "'": "'"}


def _unescape(match: re.Match) -> str:
    return chr(int(match.group(2), 16)) if match.group(2) else RUST_SIMPLE_ESCAPES[match.group(1)]


def case_label(case: dict) -> str:
    namespace = f" [ns {case['namespace']!r}]" if "namespace" in case else ""
    return f"{case['method']} {case['target']}{namespace}"


def table_says(case: dict) -> str:
    if "status" in case:
        return f"refused {case['status']}"
    return f"{case['action']} {case['resource']}"


def decoded_path(target: str) -> str:
    """The target's path as OpenBao reads it, for deciding what is safe to send (not for classifying)."""
    return unquote(target.split("?", 1)[0].split("#", 1)[0], errors="replace")


def namespace_of(resource_id: str) -> tuple[str, str]:
    """(namespace, id inside it) for an id, by the longest hosted namespace; "" is the root namespace."""
    for namespace in sorted(NAMESPACES, key=len, reverse=True):
        if resource_id == namespace or resource_id.startswith(namespace + "/"):
            return namespace, resource_id[len(namespace) + 1 :]
    return "", resource_id


def namespace_header(namespace: str) -> dict[str, str]:
    return {"X-Vault-Namespace": namespace} if namespace else {}


def kv_mount_of(resource_id: str) -> tuple[str, str] | None:
    """(mount, key) for an id under a hosted KV mount, longest mount first."""
    for mount in sorted(KV_MOUNTS, key=len, reverse=True):
        if resource_id == mount:
            return mount, ""
        if resource_id.startswith(mount + "/"):
            return mount, resource_id[len(mount) + 1 :]
    return None


def ancestors(resource_id: str) -> list[str]:
    """Every proper prefix: `a/b/c` -> [`a`, `a/b`]."""
    parts = resource_id.split("/")
    return ["/".join(parts[:i]) for i in range(1, len(parts))]


def encode(path: str) -> str:
    """Percent-encode a clean path so OpenBao decodes it back to exactly these characters."""
    return quote(path, safe="/")


# ---------------------------------------------------------------- the table shifted into a namespace


def is_root_case(case: dict) -> bool:
    """A case of the root namespace: no namespace header, no declared namespace as the
    first segment of its (decoded) path, no resource inside a namespace. The same
    choice as `is_root_case` in classification.rs."""
    if "namespace" in case:
        return False
    path = case["target"].split("?", 1)[0].split("#", 1)[0]
    if path.startswith("/v1/"):
        first = next((s for s in unquote(path[len("/v1/") :], errors="replace").split("/") if s), None)
        if first is not None and namespace_of(first)[0]:
            return False
    return "resource" not in case or not namespace_of(parse_resource(case["resource"])[1])[0]


def prefixed_target(target: str, namespace: str) -> str:
    """The namespace written as a path prefix: after `/v1/`, or after the first
    segment of a target that does not start with `/v1/` (`prefixed_target` in
    classification.rs)."""
    if target.startswith("/v1/"):
        return f"/v1/{namespace}/{target[len('/v1/') :]}"
    first, slash, rest = target[1:].partition("/")
    return f"/{first}/{namespace}/{rest}" if slash else f"{target}/{namespace}"


def shifted_expectation(case: dict, namespace: str) -> dict:
    """What the table says of the same request inside `namespace`: the resource id
    gains the namespace as a prefix, a refusal stays a refusal."""
    if "status" in case:
        return {"status": case["status"]}
    kind, _, quoted = case["resource"].partition("::")
    return {"action": case["action"], "resource": f'{kind}::"{namespace}/{quoted[1:]}'}


def shifted_cases(table: dict, namespace: str = SHIFT_NAMESPACE) -> list[dict]:
    """Every root case, in the header spelling and in the path-prefix spelling of `namespace`."""
    shifted = []
    for case in table["cases"]:
        if not is_root_case(case):
            continue
        common = {"method": case["method"], "origin": case_label(case)} | shifted_expectation(case, namespace)
        shifted.append(common | {"target": case["target"], "namespace": namespace, "spelling": "header"})
        shifted.append(common | {"target": prefixed_target(case["target"], namespace), "spelling": "prefix"})
    return shifted


# ---------------------------------------------------------------- OpenBao, seeded with markers


class SeededBao:
    """The private OpenBao plus everything needed to recognise what it served."""

    def __init__(self, stack: stack_module.Stack):
        self.stack = stack
        self.markers: dict[str, str] = {}  # marker -> resource id it belongs to ("nsx/transit/keys/app", ...)
        self.wrap_markers: set[str] = set()  # markers inside wrapped responses
        self.ciphertexts: dict[str, str] = {}  # transit key id -> ciphertext of one of its markers
        self.listings: dict[str, tuple[str, ...]] = {}  # folder id -> canonical LIST keys

    # -- raw access
    def send(
        self,
        method: str,
        target: str,
        *,
        token: str | None = None,
        body: dict | None = None,
        headers: dict | None = None,
    ) -> RawResponse:
        all_headers = {"X-Vault-Token": token or self.stack.root_token}
        all_headers.update(headers or {})
        data = None
        if body is not None:
            data = json.dumps(body)
            all_headers["Content-Type"] = "application/json"
        return raw_request(self.stack.bao_url, method, target, all_headers, data)

    def must(
        self, method: str, target: str, body: dict | None = None, headers: dict | None = None, namespace: str = ""
    ) -> dict:
        headers = {**namespace_header(namespace), **(headers or {})}
        response = self.send(method, target, body=body, headers=headers)
        assert response.status < 300, f"setup {method} {target} in {namespace!r}: {response.status} {response.text}"
        return response.json() if response.body.strip() else {}

    def new_marker(self, owner: str) -> str:
        marker = f"MARK-{uuid.uuid4().hex}"
        self.markers[marker] = owner
        return marker

    # -- setup
    def seed(self, table: dict) -> None:
        for namespace in NAMESPACES:
            self.must("POST", f"/v1/sys/namespaces/{namespace}")
        for mount, kind in KV_MOUNTS.items():
            if mount not in PRESET_MOUNTS:
                namespace, local = namespace_of(mount)
                body = {"type": "kv", "options": {"version": kind.removeprefix("kv-v")}}
                self.must("POST", f"/v1/sys/mounts/{local}", body, namespace=namespace)
        # The stack seeded seed.json before us: its values are markers of their secrets
        # too, and its secrets are reseeded below so that their folders get tagged.
        stack_seeded = set()
        for item in self.stack.seed():
            stack_seeded.add(f"{item['mount']}/{item['path']}")
            for value in item["data"].values():
                self.markers[value] = f"{item['mount']}/{item['path']}"
        table_secrets = {rid for rid in self.table_secrets(table) if kv_mount_of(rid)}
        secrets = table_secrets | set(DECOY_SECRETS) | stack_seeded
        # The namespace the table is replayed in holds its own copy of every root secret.
        secrets |= {f"{SHIFT_NAMESPACE}/{rid}" for rid in secrets if not namespace_of(rid)[0]}
        secrets = {rid for rid in secrets if kv_mount_of(rid)}
        folders = set(KV_MOUNTS) | {parent for rid in secrets for parent in ancestors(rid) if kv_mount_of(parent)}
        # One uniquely named secret per folder makes every folder's listing unique.
        secrets |= {f"{folder}/folder-{uuid.uuid4().hex[:8]}" for folder in folders}
        for rid in sorted(secrets):
            self.seed_secret(rid)
        for mount in TRANSIT_MOUNTS:
            self.seed_transit(mount)
        self.record_listings(folders)

    @staticmethod
    def table_secrets(table: dict) -> set[str]:
        found = set()
        for case in table["cases"]:
            if "resource" in case:
                kind, rid = parse_resource(case["resource"])
                if kind == "Secret":
                    found.add(rid)
        return found

    def seed_secret(self, rid: str) -> None:
        mount, key = kv_mount_of(rid)
        assert key, f"{rid} names a mount, not a secret"
        # Written through the namespace: the header names it, the path is inside it.
        namespace, local = namespace_of(mount)
        if KV_MOUNTS[mount] == "kv-v1":
            body = {"marker": self.new_marker(rid)}
            self.must("POST", f"/v1/{encode(local)}/{encode(key)}", body, namespace=namespace)
            return
        # Two versions, so `?version=1` and `?version=2` both serve this secret; the
        # marker is also a key name (subkeys/ shows it) and custom metadata (metadata/ shows it).
        for _ in range(2):
            marker = self.new_marker(rid)
            body = {"data": {"marker": marker, marker: "key"}}
            self.must_kv2(namespace, f"/v1/{encode(local)}/data/{encode(key)}", body)
        body = {"custom_metadata": {"marker": self.new_marker(rid)}}
        self.must_kv2(namespace, f"/v1/{encode(local)}/metadata/{encode(key)}", body)

    def must_kv2(self, namespace: str, target: str, body: dict) -> None:
        # A freshly enabled KV v2 mount refuses writes until its setup finishes (a second or so).
        for _ in range(50):
            response = self.send("POST", target, body=body, headers=namespace_header(namespace))
            if response.status < 300:
                return
            if "upgrad" not in response.text.lower():
                break
            time.sleep(0.1)
        raise AssertionError(f"setup POST {target} in {namespace!r}: {response.status} {response.text}")

    def seed_transit(self, mount: str) -> None:
        namespace, local = namespace_of(mount)
        self.must("POST", f"/v1/sys/mounts/{local}", {"type": "transit"}, namespace=namespace)
        for key in TRANSIT_KEYS:
            owner = f"{mount}/keys/{key}"
            self.must("POST", f"/v1/{local}/keys/{key}", {"exportable": True}, namespace=namespace)
            # The exported key material is the secret itself: it marks an export served.
            exported = self.must("GET", f"/v1/{local}/export/encryption-key/{key}", namespace=namespace)
            for material in exported["data"]["keys"].values():
                self.markers[material] = owner
            # A decrypt serves the base64 plaintext; that string marks it.
            plaintext = base64.b64encode(self.new_marker(owner).encode()).decode()
            self.markers[plaintext] = owner
            encrypted = self.must("POST", f"/v1/{local}/encrypt/{key}", {"plaintext": plaintext}, namespace=namespace)
            self.ciphertexts[owner] = encrypted["data"]["ciphertext"]

    def record_listings(self, folders: set[str]) -> None:
        for folder in sorted(folders):
            self.listings[folder] = self.canonical_listing(folder)
        # The oracle names a listing by its keys, so no two folders may list the same ones.
        by_keys: dict[tuple[str, ...], str] = {}
        for folder, keys in self.listings.items():
            assert keys is not None, f"folder {folder} lists nothing"
            assert keys not in by_keys, f"folders {by_keys.get(keys)} and {folder} list the same keys {keys}"
            by_keys[keys] = folder

    def canonical_listing(self, folder: str) -> tuple[str, ...] | None:
        """Keys of a canonical LIST of folder P (KV v2 under metadata/), None if OpenBao lists nothing."""
        located = kv_mount_of(folder)
        if located and KV_MOUNTS[located[0]] == "kv-v2":
            mount, rest = located
            namespace, local = namespace_of(mount)
            target = f"/v1/{encode(local)}/metadata/{encode(rest)}"
        else:
            namespace, local = namespace_of(folder)
            target = f"/v1/{encode(local)}"
        response = self.send("LIST", target.rstrip("/") + "/", headers=namespace_header(namespace))
        return listing_keys(response)

    def listing_of(self, folder: str) -> tuple[str, ...] | None:
        if folder not in self.listings:
            self.listings[folder] = self.canonical_listing(folder)
        return self.listings[folder]

    def recursive_listing_of(self, folder: str) -> tuple[str, ...] | None:
        """What a recursive LIST (SCAN) of P lists: every secret under P, relative to P."""
        listed = self.listing_of(folder)
        if listed is None:
            return None
        keys = []
        for key in listed:
            if key.endswith("/"):
                keys += [key + sub for sub in self.recursive_listing_of(f"{folder}/{key[:-1]}") or ()]
            else:
                keys.append(key)
        return tuple(sorted(keys))

    def folder_listing(self, keys: tuple[str, ...]) -> str | None:
        """Which seeded folder lists exactly these keys."""
        return next((folder for folder, listed in self.listings.items() if listed == keys), None)

    def wrap(self, namespace: str = "") -> str:
        """A fresh response-wrapping token, made in `namespace`, around a fresh marker."""
        marker = f"WRAP-{uuid.uuid4().hex}"
        self.wrap_markers.add(marker)
        reply = self.must(
            "POST", "/v1/sys/wrapping/wrap", {"marker": marker}, {"X-Vault-Wrap-TTL": WRAP_TTL}, namespace=namespace
        )
        return reply["wrap_info"]["token"]


def listing_keys(response: RawResponse) -> tuple[str, ...] | None:
    if response.status != 200:
        return None
    try:
        keys = (response.json().get("data") or {}).get("keys")
    except (ValueError, AttributeError):
        return None
    return tuple(sorted(keys)) if isinstance(keys, list) else None


# ---------------------------------------------------------------- replaying a case


@dataclass
class Probe:
    """One way of sending a case: which token, which body."""

    name: str
    token: str | None = None  # None: the root token
    body: dict | None = None


@dataclass
class Served:
    """What OpenBao did with one probe, after following redirects."""

    probe: str
    statuses: list[int]
    secrets: set[str] = field(default_factory=set)  # resource ids whose markers appeared
    unwrapped: bool = False
    listing: tuple[str, ...] | None = None

    def summary(self) -> str:
        parts = ["\u2192".join(map(str, self.statuses))]
        parts += [f'Secret::"{rid}"' for rid in sorted(self.secrets)]
        if self.unwrapped:
            parts.append("wrapped response")
        if self.listing is not None:
            parts.append(f"keys {list(self.listing)}")
        return f"{self.probe}: {' '.join(parts)}"


def is_replayed(case: dict) -> bool:
    """Only requests that change nothing are sent; unwrapping a token made for the case changes nothing else."""
    if case["method"] not in MUTATING_METHODS:
        return True
    path = decoded_path(case["target"]).lower()
    return "wrapping" in path or any(f"{TRANSIT_MOUNT}/{verb}/" in path for verb in ("decrypt", "encrypt", "datakey"))


def probes_for(case: dict, bao: SeededBao) -> list[Probe]:
    # Every case is also sent with a wrapping token as the Vault token: whatever
    # route hands that token's response out is an unwrap, whatever the table calls
    # it. The tokens are made in the root namespace and in nsx.
    wrap_in = {"root": "", SHIFT_NAMESPACE: SHIFT_NAMESPACE}
    probes = [Probe("root")]
    probes += [Probe(f"wrap-token-{name}", token=bao.wrap(namespace)) for name, namespace in wrap_in.items()]
    path = decoded_path(case["target"]).lower()
    if "wrapping" in path:
        probes += [Probe(f"wrap-body-{name}", body={"token": bao.wrap(ns)}) for name, ns in wrap_in.items()]
    if f"{TRANSIT_MOUNT}/" in path and case["method"] in MUTATING_METHODS:
        # Transit routes need a body: a plaintext for encrypt, and for decrypt the
        # ciphertext of each key's marker, in every namespace (only the right key
        # of the right namespace can decrypt its own).
        probes[0] = Probe("root", body={"plaintext": base64.b64encode(b"secretgate").decode()})
        probes += [Probe(f"ciphertext-of-{key}", body={"ciphertext": ct}) for key, ct in bao.ciphertexts.items()]
    return probes


def replay(case: dict, probe: Probe, bao: SeededBao) -> Served:
    headers = {"X-Vault-Namespace": case["namespace"]} if "namespace" in case else {}
    target = case["target"]
    statuses = []
    for _ in range(MAX_REDIRECTS + 1):
        # Same method, same body, same headers, Location sent verbatim: what Vault clients do on a 307.
        response = bao.send(case["method"], target, token=probe.token, body=probe.body, headers=headers)
        statuses.append(response.status)
        if response.status not in REDIRECT_STATUSES:
            break
        location = urlsplit(response.headers["location"])
        assert location.hostname in (None, "127.0.0.1"), f"redirect off loopback: {location}"
        target = location.path + (f"?{location.query}" if location.query else "")
    text = response.text
    return Served(
        probe=probe.name,
        statuses=statuses,
        secrets={owner for marker, owner in bao.markers.items() if marker in text},
        unwrapped=any(marker in text for marker in bao.wrap_markers),
        listing=listing_keys(response),
    )


def judge(case: dict, served: list[Served], bao: SeededBao) -> list[str]:
    """Why OpenBao's behaviour contradicts the table; empty if it does not."""
    if "status" in case:
        return []  # the filter refuses it: nothing OpenBao would do matters
    kind, rid = parse_resource(case["resource"])
    action = case["action"]
    problems = []
    for result in served:
        where = f"{result.probe}: "
        if result.unwrapped and action != "unwrap":
            problems.append(where + f"OpenBao unwrapped a response-wrapping token; the table says {action}")
        if kind == "Secret":
            stray = result.secrets - {rid}
            if stray:
                problems.append(where + f"OpenBao served {sorted(stray)}, the table names {rid}")
        elif kind == "Path":
            foreign = {s for s in result.secrets if not s.startswith(rid + "/")}
            if foreign:
                problems.append(where + f"OpenBao served {sorted(foreign)} outside {rid}")
        elif result.secrets:
            problems.append(where + f"OpenBao served {sorted(result.secrets)} for an Endpoint")
        if result.listing is not None:
            if kind == "Path":
                # P's own listing (LIST, detailed-metadata) or its recursive one (SCAN), nothing else.
                own = (bao.listing_of(rid), bao.recursive_listing_of(rid))
                if result.listing not in own:
                    problems.append(where + f"OpenBao listed {list(result.listing)}, {rid} lists {own[0]}")
            else:
                folder = bao.folder_listing(result.listing)
                if folder is not None:
                    problems.append(where + f"OpenBao listed folder {folder}; the table says {action}")
    return problems


@dataclass
class Row:
    """One replayed case (a table case, or one spelling of a root case inside nsx) in the report."""

    case: dict
    served: list[Served] | None  # None: not replayed
    problems: list[str] = field(default_factory=list)

    @property
    def verdict(self) -> str:
        if self.served is None:
            return "NOT-REPLAYED"
        if self.problems:
            return "MISMATCH"
        return "REFUSED-BY-FILTER" if "status" in self.case else "OK"

    def openbao(self) -> str:
        if self.served is None:
            return "not sent (mutating)"
        return "; ".join(result.summary() for result in self.served)


def check_case(case: dict, bao: SeededBao) -> Row:
    if not is_replayed(case):
        return Row(case, None)
    served = [replay(case, probe, bao) for probe in probes_for(case, bao)]
    return Row(case, served, judge(case, served, bao))


def totals(rows: list[Row]) -> str:
    counts: dict[str, int] = {}
    for row in rows:
        counts[row.verdict] = counts.get(row.verdict, 0) + 1
    return ", ".join(f"{verdict} {count}" for verdict, count in sorted(counts.items()))


def render_rows(rows: list[Row]) -> list[str]:
    lines = []
    for row in rows:
        lines.append(f"[{row.verdict}] {case_label(row.case)}")
        if "origin" in row.case:
            lines.append(f"    spelling: {row.case['spelling']} of root case {row.case['origin']}")
        lines.append(f"    table:   {table_says(row.case)}")
        lines.append(f"    openbao: {row.openbao()}")
        lines += [f"    !! {problem}" for problem in row.problems]
    return lines


def render_report(rows: list[Row], namespaced: list[Row]) -> str:
    roots = len(namespaced) // 2
    lines = [f"Differential test: {len(rows)} table cases against OpenBao: {totals(rows)}"]
    lines.append(
        f"Inside namespace {SHIFT_NAMESPACE}: {roots} root cases x 2 spellings (header, path prefix) = "
        f"{len(namespaced)} requests: {totals(namespaced)}"
    )
    lines += ["", "== The table", ""] + render_rows(rows)
    lines += ["", f"== The root cases inside namespace {SHIFT_NAMESPACE}", ""] + render_rows(namespaced)
    return "\n".join(lines) + "\n"


def mismatch_lines(rows: list[Row]) -> list[str]:
    lines = []
    for row in rows:
        if row.verdict == "MISMATCH":
            origin = f" ({row.case['spelling']} spelling of {row.case['origin']})" if "origin" in row.case else ""
            lines.append(f"{case_label(row.case)}{origin} (table: {table_says(row.case)}): {'; '.join(row.problems)}")
    return lines


# ---------------------------------------------------------------- fixtures and tests


@pytest.fixture(scope="module")
def table() -> dict:
    table = load_table()
    assert set(table["namespaces"]) == set(NAMESPACES), "host every namespace the table declares"
    return table


@pytest.fixture(scope="module")
def bao(tmp_path_factory, table) -> SeededBao:
    """A private OpenBao (no Envoy), seeded with markers for every secret the table names."""
    private = stack_module.Stack(tmp_path_factory.mktemp("differential"))
    try:
        private.start_bao()
        seeded = SeededBao(private)
        seeded.seed(table)
        yield seeded
    finally:
        private.stop_bao()


def test_the_oracle_sees_what_openbao_serves(bao):
    """The markers work: without this, an OpenBao that served nothing would pass everything."""
    read = replay({"method": "GET", "target": "/v1/secret/data/ci/app"}, Probe("root"), bao)
    assert read.secrets == {"secret/ci/app"}
    listed = replay({"method": "LIST", "target": "/v1/kv/ci"}, Probe("root"), bao)
    assert listed.listing == bao.listing_of("kv/ci") and bao.folder_listing(listed.listing) == "kv/ci"
    unwrap = {"method": "POST", "target": "/v1/sys/wrapping/unwrap"}
    assert replay(unwrap, Probe("wrap-token", token=bao.wrap()), bao).unwrapped
    decrypted = replay(
        {"method": "POST", "target": "/v1/transit/decrypt/app"},
        Probe("ciphertext", body={"ciphertext": bao.ciphertexts["transit/keys/app"]}),
        bao,
    )
    assert decrypted.secrets == {"transit/keys/app"}
    assert len(set(bao.listings.values())) == len(bao.listings)


def test_the_oracle_tells_the_namespaces_apart(bao, table):
    """The namespaces are real and their secrets have their own markers, so a request
    inside nsx that OpenBao answered from the root namespace would be caught."""
    for header, target in ((SHIFT_NAMESPACE, "/v1/secret/data/ci/app"), (None, "/v1/nsx/secret/data/ci/app")):
        case = {"method": "GET", "target": target} | ({"namespace": header} if header else {})
        assert replay(case, Probe("root"), bao).secrets == {"nsx/secret/ci/app"}
    in_team = {"method": "GET", "target": "/v1/secret/data/app", "namespace": "team"}
    assert replay(in_team, Probe("root"), bao).secrets == {"team/secret/app"}
    assert replay({"method": "GET", "target": "/v1/team/kv/app"}, Probe("root"), bao).secrets == {"team/kv/app"}
    listed = replay({"method": "LIST", "target": "/v1/kv/ci", "namespace": SHIFT_NAMESPACE}, Probe("root"), bao)
    assert bao.folder_listing(listed.listing) == "nsx/kv/ci"
    decrypted = replay(
        {"method": "POST", "target": "/v1/nsx/transit/decrypt/app"},
        Probe("ciphertext", body={"ciphertext": bao.ciphertexts["nsx/transit/keys/app"]}),
        bao,
    )
    assert decrypted.secrets == {"nsx/transit/keys/app"}
    # The judge flags the root secret, the root listing and a root key served inside nsx.
    shifted = {(c["origin"], c["spelling"]): c for c in shifted_cases(table)}
    read_case = shifted["GET /v1/secret/data/ci/app?version=2", "header"]
    assert judge(read_case, [Served("root", [200], secrets={"secret/ci/app"})], bao)
    assert not judge(read_case, [Served("root", [200], secrets={"nsx/secret/ci/app"})], bao)
    list_case = shifted["LIST /v1/kv/ci", "prefix"]
    assert judge(list_case, [Served("root", [200], listing=bao.listing_of("kv/ci"))], bao)
    assert not judge(list_case, [Served("root", [200], listing=bao.listing_of("nsx/kv/ci"))], bao)
    decrypt_case = shifted["POST /v1/transit/decrypt/app", "header"]
    assert judge(decrypt_case, [Served("root", [200], secrets={"transit/keys/app"})], bao)
    assert not judge(decrypt_case, [Served("root", [200], secrets={"nsx/transit/keys/app"})], bao)


def test_the_table_names_what_openbao_serves(bao, table):
    rows = [check_case(case, bao) for case in table["cases"]]
    namespaced = [check_case(case, bao) for case in shifted_cases(table)]

    report = render_report(rows, namespaced)
    report_file = Path(bao.stack.run_dir) / REPORT_NAME
    report_file.write_text(report)
    print(report)

    mismatches = mismatch_lines(rows + namespaced)
    if mismatches:
        pytest.fail(
            f"{len(mismatches)} case(s) contradict OpenBao (report: {report_file}):\n" + "\n".join(mismatches),
            pytrace=False,
        )
    # The comparison must have had something to compare: OpenBao really served
    # secrets, listings and wrapped responses to the replayed cases, in the root
    # namespace and inside nsx, in both spellings.
    served = [result for row in rows if row.served for result in row.served]
    assert sum(row.served is not None for row in rows) >= 60
    assert sum(bool(result.secrets) for result in served) >= 15
    assert sum(result.listing is not None for result in served) >= 5
    assert sum(result.unwrapped for result in served) >= 3
    assert sum(bool(result.secrets & {"team/kv/app", "team/secret/app", "team/kv/x"}) for result in served) >= 3
    for spelling in ("header", "prefix"):
        rows_of = [row for row in namespaced if row.case["spelling"] == spelling and row.served]
        served_in = [result for row in rows_of for result in row.served]
        assert len(rows_of) >= 100, spelling
        assert sum(any(s.startswith(f"{SHIFT_NAMESPACE}/") for s in r.secrets) for r in served_in) >= 15, spelling
        assert sum(r.listing is not None for r in served_in) >= 5, spelling
        assert sum(r.unwrapped for r in served_in) >= 3, spelling
