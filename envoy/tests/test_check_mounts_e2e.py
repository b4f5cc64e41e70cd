"""`secretgate check-mounts` against a real OpenBao (dev server).

The store gets namespaces and mounts of every kind the check tells apart; the
real CLI (``cargo build -p secretgate-cli``, envoy/setup.sh) compares
plugin configurations with it. One line per difference, exit 1; the token is
read from the environment and never printed.
"""

from __future__ import annotations

import json
import subprocess
import time

import pytest

import stack as stack_module

# What the store below holds, as the filter must be configured for it.
MATCHING = {
    "namespaces": ["nsx", "team/a"],
    "mounts": {
        "secret": "kv-v2",  # the dev server's own
        "kv": "kv-v1",  # Stack.start_bao's
        "totp": "other",  # an engine Secretgate does not understand
        "auth/team/jwt": "auth",  # a nested auth path must be listed
        "nsx/secret": "kv-v2",
        "team/a/pki": "pki",
    },
    # Not read by the check: the rest of a real configuration.
    "identity": {"source": "header"},
}


@pytest.fixture(scope="module")
def bao(tmp_path_factory):
    """A private OpenBao with namespaces nsx, team and team/a, and mounts in several of them."""
    private = stack_module.Stack(tmp_path_factory.mktemp("check-mounts"))
    try:
        private.start_bao()
        for method, path, body in [
            ("POST", "sys/mounts/totp", {"type": "totp"}),
            ("POST", "sys/auth/team/jwt", {"type": "jwt"}),
            # One segment: the filter knows auth/userpass/ without a listing.
            ("POST", "sys/auth/userpass", {"type": "userpass"}),
            ("POST", "sys/namespaces/nsx", None),
            ("POST", "sys/namespaces/team", None),
            ("POST", "team/sys/namespaces/a", None),
            ("POST", "nsx/sys/mounts/secret", {"type": "kv", "options": {"version": "2"}}),
            ("POST", "nsx/sys/auth/approle", {"type": "approle"}),
            ("POST", "team/a/sys/mounts/pki", {"type": "pki"}),
        ]:
            status, reply = private.bao_request(method, path, body)
            assert status < 300, f"{method} {path}: {status} {reply}"
        yield private
    finally:
        private.stop_bao()


def check(bao: stack_module.Stack, tmp_path, config: dict | str, token: str | None = None, *extra: str):
    """Runs the real CLI; the token travels in BAO_TOKEN only, and appears in no output."""
    config_file = tmp_path / f"config-{time.monotonic_ns()}.json"
    config_file.write_text(config if isinstance(config, str) else json.dumps(config))
    env = stack_module._child_env(tmp_path)
    env["BAO_TOKEN"] = token if token is not None else bao.root_token
    argv = [str(stack_module.cli_path()), "check-mounts", "--addr", bao.bao_url, "--config", str(config_file), *extra]
    result = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=60)
    assert env["BAO_TOKEN"] not in result.stdout + result.stderr
    return result


def with_mounts(**changes) -> dict:
    """MATCHING with mounts changed (a value of None removes the mount)."""
    config = json.loads(json.dumps(MATCHING))
    for path, mount_type in changes.items():
        path = path.replace("__", "/")
        if mount_type is None:
            del config["mounts"][path]
        else:
            config["mounts"][path] = mount_type
    return config


def test_a_matching_configuration_passes(bao, tmp_path):
    result = check(bao, tmp_path, MATCHING)
    assert (result.returncode, result.stderr) == (0, "")
    # root, nsx, team and team/a: each namespace's built-ins and mounts were read.
    assert "in 4 namespaces" in result.stdout


def test_kv_v2_configured_as_kv_v1_is_named(bao, tmp_path):
    result = check(bao, tmp_path, with_mounts(secret="kv-v1"))
    assert result.returncode == 1
    assert result.stdout.splitlines() == [
        'mount "secret": configured as "kv-v1" but the store has engine kv version 2 there; configure it as "kv-v2"'
    ]


def test_the_same_mismatch_inside_a_namespace_is_named_with_its_prefix(bao, tmp_path):
    result = check(bao, tmp_path, with_mounts(nsx__secret="kv-v1"))
    assert result.returncode == 1
    assert result.stdout.splitlines() == [
        'mount "nsx/secret": configured as "kv-v1" but the store has engine kv version 2 there; configure it as "kv-v2"'
    ]


def test_a_store_mount_missing_from_the_configuration_is_named(bao, tmp_path):
    result = check(bao, tmp_path, with_mounts(totp=None, auth__team__jwt=None))
    assert result.returncode == 1
    assert result.stdout.splitlines() == [
        'mount "auth/team/jwt": the store has auth method jwt there but the configuration does not list it; '
        'add "auth/team/jwt": "auth" (only a one-segment auth/<name> is known without listing)',
        'mount "totp": the store has engine totp there but the configuration does not list it; add "totp": "other"',
    ]


def test_a_configured_mount_the_store_lacks_is_named(bao, tmp_path):
    result = check(bao, tmp_path, with_mounts(transit="transit", team__a__kv="kv-v1"))
    assert result.returncode == 1
    assert result.stdout.splitlines() == [
        'mount "team/a/kv": configured as "kv-v1" but the store has no mount there',
        'mount "transit": configured as "transit" but the store has no mount there',
    ]


def test_namespaces_are_compared_both_ways(bao, tmp_path):
    config = with_mounts(team__a__pki=None)
    config["namespaces"] = ["nsx", "gone"]
    result = check(bao, tmp_path, config)
    assert result.returncode == 1
    assert result.stdout.splitlines() == [
        'namespace "team": in the store but not declared in "namespaces" (the filter refuses its requests)',
        'namespace "team/a": in the store but not declared in "namespaces" (the filter refuses its requests)',
        'namespace "gone": declared in "namespaces" but not in the store',
    ]


def test_a_token_that_cannot_read_the_mounts_is_an_error_not_a_pass(bao, tmp_path):
    result = check(bao, tmp_path, MATCHING, token="s.not-a-token")
    assert (result.returncode, result.stdout) == (2, "")
    assert "403: permission denied" in result.stderr


def test_a_configuration_the_filter_refuses_is_exit_3(bao, tmp_path):
    result = check(bao, tmp_path, with_mounts(secret="kv-v3"))
    assert (result.returncode, result.stdout) == (3, "")
    assert 'unknown type "kv-v3"' in result.stderr


def test_https_with_the_stores_ca(tmp_path):
    """A dev server with its own TLS CA: refused without --ca-cert, compared with it."""
    (port,) = stack_module.free_ports(1)
    token = "dev-root-check-mounts-tls"
    env = stack_module._child_env(tmp_path)
    env["BAO_DEV_ROOT_TOKEN_ID"] = token
    argv = [stack_module.bao_binary(), "server", "-dev", "-dev-tls", f"-dev-tls-cert-dir={tmp_path}",
            f"-dev-listen-address={stack_module.LOOPBACK}:{port}", "-dev-no-store-token"]  # fmt: skip
    process = stack_module._spawn(argv, tmp_path / "bao.log", env)
    try:
        deadline = time.monotonic() + stack_module.STARTUP_TIMEOUT_S
        while not ((tmp_path / "vault-ca.pem").is_file() and stack_module.port_accepts(port)):
            assert process.poll() is None and time.monotonic() < deadline, (tmp_path / "bao.log").read_text()
            time.sleep(0.1)
        store = _Addr(f"https://{stack_module.LOOPBACK}:{port}", token)

        def run(config, *extra):
            return check(store, tmp_path, config, None, *extra)

        untrusted = run({"mounts": {"secret": "kv-v2"}})
        assert untrusted.returncode == 2
        assert "UnknownIssuer" in untrusted.stderr
        trusted = run({"mounts": {"secret": "kv-v2"}}, "--ca-cert", str(tmp_path / "vault-ca.pem"))
        assert (trusted.returncode, trusted.stderr) == (0, "")
        differs = run({"mounts": {"secret": "kv-v1"}}, "--ca-cert", str(tmp_path / "vault-ca.pem"))
        assert differs.returncode == 1
        assert differs.stdout.startswith('mount "secret": configured as "kv-v1"')
    finally:
        stack_module.stop_process(process.pid, stack_module.bao_binary(), process)


class _Addr:
    """What ``check`` reads of a stack: its OpenBao URL and root token."""

    def __init__(self, bao_url: str, root_token: str):
        self.bao_url = bao_url
        self.root_token = root_token


def test_a_stack_whose_configuration_differs_from_openbao_does_not_start(make_stack):
    config = stack_module.default_plugin_config()
    config["mounts"] = {"secret": "kv-v1", "kv": "kv-v1"}
    private = make_stack(plugin_config=config)
    with pytest.raises(stack_module.MountMismatchError) as refused:
        private.start()
    assert 'mount "secret": configured as "kv-v1"' in str(refused.value)
    assert not private.envoy_running()
