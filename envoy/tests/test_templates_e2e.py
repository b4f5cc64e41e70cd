"""Path templates with real Envoy and OpenBao: the GitHub Actions pack's one
templated rule serves 100 repositories' CI tokens, and every token reads
exactly its own repository's secret and none of the 99 others', however the
path is spelled."""

from __future__ import annotations

import json
import secrets
from concurrent.futures import ThreadPoolExecutor

import pytest

import stack as stack_module
from conftest import RawClient, assert_no_secret_in_files

PACK = stack_module.REPO_ROOT / "policies" / "packs" / "github-actions"
REPOSITORIES = [f"acme/repo-{i:03d}" for i in range(100)]
RULE = "gha-repository-reads-own-folder"


def pack_plugin_config() -> dict:
    """The pack as shipped (schema, rules, config.json's templated mounts and
    identity), plus the stack's kv-v1 mount so the mount check agrees with
    OpenBao."""
    pack_config = json.loads((PACK / "config.json").read_text())
    mounts = dict(pack_config["mounts"])
    mounts["kv"] = "kv-v1"
    assert pack_config["identity"]["payload_in_metadata"] == stack_module.CLAIMS_METADATA_KEY
    return {
        "schema": (PACK / "schema.cedarschema").read_text(),
        "policies": (PACK / "policies.cedar").read_text(),
        "entities": json.loads((PACK / "entities.json").read_text()),
        "mounts": mounts,
        "identity": pack_config["identity"],
        "audit": dict(stack_module.DEV_AUDIT),
    }


@pytest.fixture(scope="module")
def pack_stack(tmp_path_factory):
    with stack_module.Stack(tmp_path_factory.mktemp("templates"), plugin_config=pack_plugin_config()) as running:
        values = {}
        for repository in REPOSITORIES:
            values[repository] = f"FAKE-template-{repository.split('/')[1]}-{secrets.token_hex(6)}"
            status, reply = running.bao_request(
                "POST", f"secret/data/ci/{repository}/db", {"data": {"password": values[repository]}}
            )
            assert status == 200, reply
        running.template_values = values
        yield running
        assert_no_secret_in_files(running, extra=list(values.values()))


def token_for(running, repository: str) -> str:
    # GitHub-shaped: sub, repository_owner and job_workflow_ref follow the repository.
    return running.mint_jwt({"repository": repository, "repository_id": str(700000 + REPOSITORIES.index(repository))})


def test_one_rule_serves_every_repository_exactly_its_own_secret(pack_stack):
    values = pack_stack.template_values
    tokens = {repository: token_for(pack_stack, repository) for repository in REPOSITORIES}

    def read_all(own: str) -> list[tuple[str, str, int, str]]:
        client = RawClient(pack_stack.envoy_url, vault_token=pack_stack.root_token)
        outcomes = []
        for target in REPOSITORIES:
            response = client.get(f"/v1/secret/data/ci/{target}/db", jwt=tokens[own])
            outcomes.append((own, target, response.status, response.text))
        return outcomes

    with ThreadPoolExecutor(4) as pool:
        outcomes = [outcome for batch in pool.map(read_all, REPOSITORIES) for outcome in batch]
    assert len(outcomes) == 100 * 100
    wrong = [(own, target, status) for own, target, status, _ in outcomes if (status == 200) != (own == target)]
    assert not wrong, f"{len(wrong)} wrong decisions, e.g. {wrong[:5]}"
    for own, target, status, text in outcomes:
        if own == target:
            assert json.loads(text)["data"]["data"]["password"] == values[own]
        else:
            assert status == 403, (own, target, status)
            assert values[target] not in text

    records = [json.loads(line["audit"]) for line in pack_stack.access_log_lines(at_least=100 * 100) if line.get("audit")]
    decided = [record for record in records if "/ci/acme/repo-" in record["path"]]
    allowed = [record for record in decided if record["decision"] == "allow"]
    assert len(allowed) == 100, len(allowed)
    assert all(record["policies"] == [RULE] for record in allowed), allowed[:2]
    assert sum(record["decision"] == "deny" for record in decided) == 100 * 99


@pytest.mark.parametrize(
    "path, expected",
    [
        # An encoded slash is refused before any rule, whoever asks.
        ("/v1/secret/data/ci/acme%2Frepo-001/db", 400),
        ("/v1/secret/data/ci/acme/repo-000/../repo-001/db", 403),
        ("/v1/secret/data/ci/acme/./repo-001/db", 403),
        ("/v1/secret/data//ci/acme/repo-001/db", 403),
        ("/v1/secret/data/ci/acme/%72epo-001/db", 403),
        ("/v1/secret/data/ci/acme/repo-000/%2E%2E/repo-001/db", 403),
        ("/v1/secret/metadata/ci/acme/repo-001/db", 403),
        ("/v1/secret/data/ci/acme/repo-001/db/", 403),
    ],
)
def test_encoded_and_dot_segment_spellings_of_another_repository_are_refused(pack_stack, path, expected):
    client = RawClient(pack_stack.envoy_url, vault_token=pack_stack.root_token)
    response = client.get(path, jwt=token_for(pack_stack, "acme/repo-000"))
    assert response.status == expected, response.text
    assert "errors" in response.json()
    assert pack_stack.template_values["acme/repo-001"] not in response.text
    # What OpenBao itself makes of the spelling: repo-001's secret (or a
    # refusal), never repo-000's. The decision above was about the right one.
    direct = RawClient(pack_stack.bao_url, vault_token=pack_stack.root_token).get(path)
    assert pack_stack.template_values["acme/repo-000"] not in direct.text


def test_a_repository_lists_its_own_folder_and_no_one_above_it(pack_stack):
    client = RawClient(pack_stack.envoy_url, vault_token=pack_stack.root_token)
    token = token_for(pack_stack, "acme/repo-007")
    own = client.list("/v1/secret/metadata/ci/acme/repo-007", jwt=token)
    assert own.status == 200, own.text
    assert own.json()["data"]["keys"] == ["db"]
    assert client.list("/v1/secret/metadata/ci/acme/repo-008", jwt=token).status == 403
    assert client.list("/v1/secret/metadata/ci/acme", jwt=token).status == 403
    # From an unprotected ref, not even its own folder.
    feature = pack_stack.mint_jwt({"repository": "acme/repo-007", "ref": "refs/heads/feature-x", "ref_protected": "false"})
    assert client.get("/v1/secret/data/ci/acme/repo-007/db", jwt=feature).status == 403
