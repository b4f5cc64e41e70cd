"""Generated path variants of real secrets, sent straight to OpenBao and
through Envoy with Secretgate: whatever secret OpenBao resolves a variant to,
Secretgate never serves a secret the policy denies.

For each variant the test records (variant, the secret OpenBao served, the
status and secret Secretgate let through) and writes the table to the stack's
run directory (``path-variants.tsv``). Secrets are recognised by their
seeded values; the table names secrets, never values.
"""

from __future__ import annotations

from dataclasses import dataclass
from urllib.parse import quote

import pytest

from conftest import RawClient

# What acme/api's main-branch CI job (environment "ci") may read under the demo policies.
ALLOWED = {"secret/ci/acme/api/db", "kv/ci/acme/api/legacy"}
DENIED = {"secret/ci/acme/web/token", "secret/prod/acme/api/db", "secret/ci/acme/vendor-sync/key"}
MIN_VARIANTS = 500


@dataclass(frozen=True)
class Variant:
    label: str
    method: str
    path: str
    headers: tuple[tuple[str, str], ...] = ()


def api_path(secret: str) -> str:
    """The canonical read path of a seeded secret (KV v2 `data/`, KV v1 as is)."""
    mount, rest = secret.split("/", 1)
    return f"/v1/{mount}/data/{rest}" if mount == "secret" else f"/v1/{mount}/{rest}"


def variants_of(secret: str) -> list[Variant]:
    path = api_path(secret)
    tail = path[len("/v1/") :]
    out = [Variant("canonical", "GET", path)]

    def at(label: str, new_tail: str, method: str = "GET", headers=()):
        out.append(Variant(label, method, "/v1/" + new_tail, tuple(headers)))

    for i, char in enumerate(tail):
        encoded = "%{:02X}".format(ord(char))
        at(f"pct[{i}]", tail[:i] + encoded + tail[i + 1 :])
        if char.isalpha():
            at(f"pct-lower[{i}]", tail[:i] + encoded.lower() + tail[i + 1 :])
        at(f"double-pct[{i}]", tail[:i] + quote(encoded, safe="") + tail[i + 1 :])
    slashes = [i for i, char in enumerate(tail) if char == "/"]
    for i in slashes:
        at(f"//[{i}]", tail[:i] + "//" + tail[i + 1 :])
        at(f"/./[{i}]", tail[:i] + "/./" + tail[i + 1 :])
        at(f"/x/../[{i}]", tail[:i] + "/x/../" + tail[i + 1 :])
        at(f"%2F[{i}]", tail[:i] + "%2F" + tail[i + 1 :])
    mount, rest = tail.split("/", 1)
    out += [
        Variant("trailing /", "GET", path + "/"),
        Variant("trailing /.", "GET", path + "/."),
        Variant("trailing //", "GET", path + "//"),
        Variant("leading //", "GET", "/" + path),
        Variant("/V1", "GET", "/V1/" + tail),
        Variant("mount upper", "GET", f"/v1/{mount.upper()}/{rest}"),
        Variant("mount title", "GET", f"/v1/{mount.title()}/{rest}"),
        Variant("last upper", "GET", path[: path.rindex("/") + 1] + path[path.rindex("/") + 1 :].upper()),
        Variant("cyrillic a", "GET", path.replace("a", quote("\u0430"), 1)),
        Variant("fullwidth /", "GET", path.replace("/", quote("\uff0f"), 5)),
        Variant("?list=true", "GET", path + "?list=true"),
        Variant("?version=1", "GET", path + "?version=1"),
        Variant("?a=b&list=true", "GET", path + "?a=b&list=true"),
        Variant("#fragment", "GET", path + "#x"),
        Variant("LIST", "LIST", path),
        Variant("HEAD", "HEAD", path),
        Variant("lower-case get", "get", path),
        # Only safe methods are sent: a POST straight to OpenBao would write a new version.
        Variant("override LIST", "GET", path, (("X-HTTP-Method-Override", "LIST"),)),
        Variant("override DELETE", "GET", path, (("X-HTTP-Method-Override", "DELETE"),)),
        Variant("ns root", "GET", path, (("X-Vault-Namespace", "root"),)),
        Variant("ns root/", "GET", path, (("X-Vault-Namespace", "root/"),)),
        Variant("ns /", "GET", path, (("X-Vault-Namespace", "/"),)),
        Variant("ns empty", "GET", path, (("X-Vault-Namespace", ""),)),
        Variant("path ns root", "GET", "/v1/root/" + tail),
        Variant("ns ..", "GET", path, (("X-Vault-Namespace", ".."),)),
    ]
    if mount == "secret":
        out.append(Variant("metadata", "GET", path.replace("/data/", "/metadata/", 1)))
        out.append(Variant("subkeys", "GET", path.replace("/data/", "/subkeys/", 1)))
        out.append(Variant("data twice", "GET", path.replace("/data/", "/data/data/", 1)))
    return out


def served(body: bytes, values: dict[str, list[str]]) -> set[str]:
    """Which seeded secrets a response body carries a value of."""
    text = body.decode(errors="replace")
    return {secret for secret, secret_values in values.items() if any(v in text for v in secret_values)}


@pytest.fixture(scope="module")
def table(stack, seeded):
    values = {secret: list(data.values()) for secret, data in seeded.items()}
    jwt = stack.mint_jwt({})
    bao = RawClient(stack.bao_url, vault_token=stack.root_token)
    envoy = RawClient(stack.envoy_url, vault_token=stack.root_token)
    rows = []
    for secret in sorted(ALLOWED | DENIED):
        for variant in variants_of(secret):
            headers = dict(variant.headers)
            assert variant.method.upper() in ("GET", "LIST", "HEAD"), "never mutate the shared stack's secrets"
            direct = bao.request(variant.method, variant.path, headers=headers)
            through = envoy.request(variant.method, variant.path, jwt=jwt, headers=headers)
            rows.append(
                {
                    "secret": secret,
                    "variant": variant,
                    "bao_status": direct.status,
                    "bao_served": served(direct.body, values),
                    "gate_status": through.status,
                    "gate_served": served(through.body, values),
                }
            )
    with open(stack.path("path-variants.tsv"), "w") as report:
        report.write("secret\tvariant\tmethod\tpath\tbao_status\tbao_served\tsecretgate_status\tsecretgate_served\n")
        for row in rows:
            v = row["variant"]
            report.write(
                f"{row['secret']}\t{v.label}\t{v.method}\t{v.path}\t{row['bao_status']}\t"
                f"{','.join(sorted(row['bao_served'])) or '-'}\t{row['gate_status']}\t"
                f"{','.join(sorted(row['gate_served'])) or '-'}\n"
            )
    return rows


def test_at_least_500_variants_were_tried(table):
    assert len(table) >= MIN_VARIANTS, len(table)


def test_secretgate_never_serves_a_denied_secret(table):
    leaks = [
        (row["variant"].label, row["variant"].method, row["variant"].path, sorted(row["gate_served"] - ALLOWED))
        for row in table
        if row["gate_served"] - ALLOWED
    ]
    assert not leaks, leaks


def test_every_variant_openbao_resolves_to_a_denied_secret_is_denied(table):
    resolved_to_denied = [row for row in table if row["bao_served"] & DENIED]
    # The oracle must have teeth: many spellings do reach the denied secrets in OpenBao.
    assert len(resolved_to_denied) >= 50, len(resolved_to_denied)
    not_denied = [
        (row["variant"].label, row["variant"].path, row["gate_status"])
        for row in resolved_to_denied
        if row["gate_status"] < 400
    ]
    assert not not_denied, not_denied


def test_allowed_secrets_are_still_served_in_canonical_spellings(table):
    canonical = [row for row in table if row["variant"].label == "canonical" and row["secret"] in ALLOWED]
    assert canonical and all(row["gate_status"] == 200 and row["gate_served"] == {row["secret"]} for row in canonical)
