"""Real CI tokens end to end: GitHub Actions and GitLab CI shaped tokens, verified
by Envoy's jwt_authn against a remote JWKS (envoy/jwks_server.py standing in for
the provider), in front of a real OpenBao.

Every bad token is refused by Envoy itself with 401 and OpenBao sees nothing.
Valid tokens of both CI systems read what the demo policies permit. The JWKS
is fetched, not configured: a new key is trusted, and a removed key distrusted,
once Envoy fetches the JWKS again (it does not refetch on an unknown kid).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import time

import pytest

import stack as stack_module
from conftest import RawClient, assert_no_secret_in_files

API_DB = "secret/ci/acme/api/db"
API_DB_PATH = "/v1/secret/data/ci/acme/api/db"
# jwt_authn's answer to a token whose kid (and alg) no key in the JWKS matches.
NO_KEY = "Jwks doesn't have key to match kid or alg from Jwt"

# Principals the demo entities do not list: GitHub's immutable subject, an
# environment subject whose value has a colon, and a GitLab subject. They join
# Group::"ci" like the demo's acme/api workload; what they may read is still
# decided by the demo policies and their claims.
GITHUB_IMMUTABLE = stack_module.github_actions_claims("acme/api", immutable_sub=True)
GITHUB_ENVIRONMENT = stack_module.github_actions_claims("acme/api", environment="ci:eu-1")
GITLAB = stack_module.gitlab_ci_claims("acme/api")
# The demo policies grant acme/api's folder by the GitHub claim `repository`;
# GitLab names the project `project_path`, so it gets the same grant by that claim.
GITLAB_POLICY = """
@id("gitlab-acme-api-reads-own-secrets")
permit (
  principal in Group::"ci",
  action in [Action::"read", Action::"list"],
  resource in Path::"secret/ci/acme/api"
)
when { context.claims has project_path && context.claims.project_path == "acme/api" };
"""


def ci_plugin_config() -> dict:
    config = stack_module.plugin_config(stack_module.POLICIES_DIR, stack_module.JWT_IDENTITY)
    for claims in (GITHUB_IMMUTABLE, GITHUB_ENVIRONMENT, GITLAB):
        config["entities"].append(
            {"uid": {"type": "Workload", "id": claims["sub"]}, "attrs": {}, "parents": [{"type": "Group", "id": "ci"}]}
        )
    config["policies"] += GITLAB_POLICY
    return config


@pytest.fixture(scope="module")
def ci_stack(tmp_path_factory):
    """A stack whose Envoy keeps the JWKS for 300 s: within a test, it fetches it only at start."""
    with stack_module.Stack(tmp_path_factory.mktemp("ci-tokens"), plugin_config=ci_plugin_config()) as running:
        yield running
    assert_no_secret_in_files(running)


ROTATION_CACHE_S = 3


@pytest.fixture(scope="module")
def rotating_stack(tmp_path_factory):
    """A stack whose Envoy fetches the JWKS every ROTATION_CACHE_S seconds."""
    config = stack_module.plugin_config(stack_module.POLICIES_DIR, stack_module.JWT_IDENTITY)
    run_dir = tmp_path_factory.mktemp("ci-rotation")
    with stack_module.Stack(run_dir, plugin_config=config, jwks_cache_s=ROTATION_CACHE_S) as running:
        yield running
    assert_no_secret_in_files(running)


def seeded_value(stack: stack_module.Stack, name: str) -> str:
    (data,) = [s["data"] for s in stack.seed() if f"{s['mount']}/{s['path']}" == name]
    (value,) = data.values()
    return value


def read_api_db(stack: stack_module.Stack, token: str):
    return RawClient(stack.envoy_url, vault_token=stack.root_token).get(API_DB_PATH, jwt=token)


def assert_refused_by_envoy(stack: stack_module.Stack, token: str, why: str) -> dict:
    """The read is answered 401 by jwt_authn with ``why`` as the body, and OpenBao receives
    no request at all. Returns the access-log entry."""
    mark = stack.bao_audit_mark()
    lines_before = len(stack.access_log_lines())
    response = read_api_db(stack, token)
    assert (response.status, response.text) == (401, why)
    assert seeded_value(stack, API_DB) not in response.text
    entry = stack.access_log_lines(at_least=lines_before + 1)[-1]
    assert entry["response_code_details"].startswith("jwt_authn_access_denied"), entry
    assert entry["upstream_host"] in (None, "-"), "nothing was forwarded"
    assert stack.bao_audit_entries(since=mark) == [], "OpenBao saw a request"
    return entry


def assert_reads_api_db(stack: stack_module.Stack, token: str, principal: str) -> None:
    lines_before = len(stack.access_log_lines())
    response = read_api_db(stack, token)
    assert response.status == 200, response.text
    assert response.json()["data"]["data"]["password"] == seeded_value(stack, API_DB)
    record = json.loads(stack.access_log_lines(at_least=lines_before + 1)[-1]["audit"])
    assert record["principal"] == {"type": "Workload", "id": principal}
    assert record["decision"] == "allow"


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def unsigned_parts(header: dict, claims: dict) -> str:
    return f"{b64url(json.dumps(header).encode())}.{b64url(json.dumps(claims).encode())}"


# ---------------------------------------------------------------- refused by Envoy


def test_a_valid_token_is_the_control(ci_stack):
    """The refusals below are about the token, not a broken JWKS: the demo token reads."""
    assert_reads_api_db(ci_stack, ci_stack.mint_jwt(), "repo:acme/api:ref:refs/heads/main")


def test_an_expired_token_is_401(ci_stack):
    now = int(time.time())
    # Envoy allows 60 s of clock skew by default; this one expired 5 minutes ago.
    claims = stack_module.github_actions_claims("acme/api", now=now - 900, ttl=600)
    assert_refused_by_envoy(ci_stack, ci_stack.signing_key.sign(claims), "Jwt is expired")


def test_a_token_not_yet_valid_is_401(ci_stack):
    claims = stack_module.github_actions_claims("acme/api")
    claims["nbf"] = claims["iat"] + 300
    assert_refused_by_envoy(ci_stack, ci_stack.signing_key.sign(claims), "Jwt not yet valid")


def test_a_token_of_another_issuer_is_401(ci_stack):
    # Signed by a trusted key, but issued (it says) by GitHub, which this provider does not name.
    claims = stack_module.github_actions_claims("acme/api", issuer="https://token.actions.githubusercontent.com")
    assert_refused_by_envoy(ci_stack, ci_stack.signing_key.sign(claims), "Jwt issuer is not configured")


def test_a_token_for_another_audience_is_401_not_403(ci_stack):
    # GitHub's default audience is the owner's URL: a token meant for another service.
    claims = stack_module.github_actions_claims("acme/api", audience="https://github.com/acme")
    # jwt_authn answers 403 here; the HCM's local_reply_config makes it 401.
    entry = assert_refused_by_envoy(ci_stack, ci_stack.signing_key.sign(claims), "Audiences in Jwt are not allowed")
    assert entry["response_code"] == 401


def test_the_filters_own_403_is_not_remapped(ci_stack):
    """The 403 -> 401 mapping is only for jwt_authn's reply: a policy denial stays 403."""
    token = ci_stack.mint_jwt({"repository": "acme/web"})
    response = read_api_db(ci_stack, token)
    assert response.status == 403
    assert response.json()["errors"] == ["permission denied"]


def test_an_unsigned_alg_none_token_is_401(ci_stack):
    claims = stack_module.github_actions_claims("acme/api")
    unsigned = unsigned_parts({"alg": "none", "typ": "JWT", "kid": ci_stack.signing_key.kid}, claims)
    # As RFC 7519 writes it (empty signature), and with some bytes where the signature goes.
    assert_refused_by_envoy(
        ci_stack, unsigned + ".", "Jwt is not in the form of Header.Payload.Signature with two dots and 3 sections"
    )
    assert_refused_by_envoy(ci_stack, unsigned + "." + b64url(b"not a signature"), "Jwt header [alg] is not supported")


def test_an_hs256_token_keyed_with_the_rsa_public_key_is_401(ci_stack):
    """Algorithm confusion: HMAC with the (public) RSA key as the secret. PyJWT refuses to
    make this token, so it is built by hand."""
    claims = stack_module.github_actions_claims("acme/api")
    signing_input = unsigned_parts({"alg": "HS256", "typ": "JWT", "kid": ci_stack.signing_key.kid}, claims)
    for secret in (ci_stack.signing_key.public_pem(), ci_stack.signing_key.public_pem().strip()):
        signature = hmac.new(secret, signing_input.encode(), hashlib.sha256).digest()
        assert_refused_by_envoy(ci_stack, f"{signing_input}.{b64url(signature)}", NO_KEY)


def test_a_token_with_an_unknown_kid_is_401_and_triggers_no_fetch(ci_stack):
    stranger = ci_stack.signing_key_named("never-published")
    fetches = ci_stack.jwks_server.fetches()
    assert_refused_by_envoy(ci_stack, stranger.sign(stack_module.github_actions_claims("acme/api")), NO_KEY)
    time.sleep(0.5)  # a fetch it started would be answered by now
    assert ci_stack.jwks_server.fetches() == fetches, "Envoy fetched the JWKS on an unknown kid"


# ---------------------------------------------------------------- valid CI tokens


@pytest.mark.parametrize(
    "claims",
    [
        stack_module.github_actions_claims("acme/api"),
        GITHUB_IMMUTABLE,
        GITHUB_ENVIRONMENT,
    ],
    ids=["ref-subject", "immutable-subject", "environment-subject-with-colon"],
)
def test_a_github_actions_token_reads_its_repositorys_secret(ci_stack, claims):
    assert_reads_api_db(ci_stack, ci_stack.signing_key.sign(claims), claims["sub"])


def test_github_subjects_are_shaped_as_github_sends_them():
    assert GITHUB_IMMUTABLE["sub"] == "repo:acme@1001/api@690001:ref:refs/heads/main"
    assert GITHUB_ENVIRONMENT["sub"] == "repo:acme/api:environment:ci%3Aeu-1"
    pull_request = stack_module.github_actions_claims("acme/api", event_name="pull_request", ref="refs/pull/7/merge")
    assert pull_request["sub"] == "repo:acme/api:pull_request"
    assert GITHUB_IMMUTABLE["ref_protected"] == "true" and GITHUB_IMMUTABLE["repository_id"] == "690001"


def test_a_github_token_from_an_unprotected_branch_is_403(ci_stack):
    # The same workload (its immutable sub is in Group::"ci"), on a branch that is not protected.
    claims = stack_module.github_actions_claims("acme/api", immutable_sub=True, ref_protected=False)
    assert claims["sub"] == GITHUB_IMMUTABLE["sub"]
    response = read_api_db(ci_stack, ci_stack.signing_key.sign(claims))
    assert response.status == 403
    assert response.json()["errors"] == ["permission denied"]


def test_a_gitlab_ci_token_reads_its_projects_secret(ci_stack):
    assert GITLAB["sub"] == "project_path:acme/api:ref_type:branch:ref:main"
    assert_reads_api_db(ci_stack, ci_stack.signing_key.sign(GITLAB), GITLAB["sub"])


def test_a_gitlab_ci_token_reads_nothing_of_another_project(ci_stack):
    # acme/web's folder is granted by the GitHub claim `repository`, which a GitLab token lacks.
    response = RawClient(ci_stack.envoy_url, vault_token=ci_stack.root_token).get(
        "/v1/secret/data/ci/acme/web/token", jwt=ci_stack.signing_key.sign(GITLAB)
    )
    assert response.status == 403


# ---------------------------------------------------------------- key rotation


def fetched_just_now(stack: stack_module.Stack) -> None:
    """Returns right after Envoy's next JWKS fetch, so a whole cache period lies ahead."""
    stack.wait_jwks_fetched(stack.jwks_server.fetches(), timeout=ROTATION_CACHE_S + 10)
    time.sleep(0.2)  # Envoy hands the fetched set to its workers right after the answer


def test_a_new_key_is_trusted_after_the_next_fetch_not_before(rotating_stack):
    current, new = rotating_stack.signing_key, rotating_stack.signing_key_named("rotation-next")
    rotating_stack.publish_jwks([current])
    fetched_just_now(rotating_stack)
    fetches = rotating_stack.jwks_server.fetches()

    rotating_stack.publish_jwks([current, new])
    published = time.monotonic()
    new_token = new.sign(stack_module.github_actions_claims("acme/api"))
    assert_refused_by_envoy(rotating_stack, new_token, NO_KEY)
    assert rotating_stack.jwks_server.fetches() == fetches, "the refusal came before any fetch of the new set"

    rotating_stack.wait_jwks_fetched(fetches, timeout=ROTATION_CACHE_S + 10)
    time.sleep(0.2)
    assert time.monotonic() - published <= ROTATION_CACHE_S + 3  # one cache period, plus a loaded machine
    assert_reads_api_db(rotating_stack, new_token, "repo:acme/api:ref:refs/heads/main")
    # The old key is still published: its tokens keep working through the rotation.
    assert_reads_api_db(rotating_stack, rotating_stack.mint_jwt(), "repo:acme/api:ref:refs/heads/main")


def test_a_removed_key_is_distrusted_after_the_next_fetch(rotating_stack):
    retired, new = rotating_stack.signing_key, rotating_stack.signing_key_named("rotation-next")
    rotating_stack.publish_jwks([retired, new])
    fetched_just_now(rotating_stack)
    retired_token = rotating_stack.mint_jwt()
    assert_reads_api_db(rotating_stack, retired_token, "repo:acme/api:ref:refs/heads/main")

    rotating_stack.publish_jwks([new])
    # Until Envoy fetches again, the removed key still verifies (it is cached).
    assert_reads_api_db(rotating_stack, retired_token, "repo:acme/api:ref:refs/heads/main")
    fetched_just_now(rotating_stack)

    assert_refused_by_envoy(rotating_stack, retired_token, NO_KEY)
    assert_reads_api_db(rotating_stack, new.sign(stack_module.github_actions_claims("acme/api")),
                        "repo:acme/api:ref:refs/heads/main")  # fmt: skip
    rotating_stack.publish_jwks([retired])  # as the stack started, for whatever runs next


def test_while_the_jwks_url_is_down_the_last_keys_keep_verifying(rotating_stack):
    rotating_stack.publish_jwks([rotating_stack.signing_key])
    fetched_just_now(rotating_stack)
    token = rotating_stack.mint_jwt()
    failed_before = sum(rotating_stack.counters("jwt_authn.jwks_fetch_failed").values())
    rotating_stack.stop_jwks_server()
    try:
        # Two whole cache periods without a JWKS: the last fetched set still verifies.
        rotating_stack.wait_stat("jwt_authn.jwks_fetch_failed", lambda failed: failed > failed_before,
                                 "a JWKS fetch failed", timeout=ROTATION_CACHE_S + 10)  # fmt: skip
        time.sleep(2 * ROTATION_CACHE_S)
        assert_reads_api_db(rotating_stack, token, "repo:acme/api:ref:refs/heads/main")
    finally:
        rotating_stack.start_jwks_server()
    fetched_just_now(rotating_stack)
    assert_reads_api_db(rotating_stack, token, "repo:acme/api:ref:refs/heads/main")
