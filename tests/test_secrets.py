"""Secrets: what a task reads (§1.4, §1.10 of the cloaca reference) and the operator's secrets file.

A secret must never reach a context's JSON, a log or an error message.
"""

from __future__ import annotations

import logging
import os

import pytest

import cloaca
from cloaca.invoke import invoke_task
from cloaca.namespace import WorkflowContext, workflow_context
from cloaca.registry import REGISTRY
from cloaca.secrets import StaticSecrets, install_resolver
from supervisor.secrets import SecretsFileError, SecretStore

PASSWORD = "hunter2-do-not-leak"
SECRETS_FILE = f"""
# operator's secrets
[warehouse]
url = "postgresql://analytics@db/warehouse"
password = "{PASSWORD}"

[api_token]
value = "abc123"
"""

pytestmark = pytest.mark.usefixtures("clean_registry")


@pytest.fixture
def resolver():
    install_resolver(StaticSecrets(SecretStore.parse(SECRETS_FILE).for_names(["warehouse"]), declared=["warehouse"]))
    yield
    install_resolver(None)


def test_no_resolver_is_a_runtime_error():
    with pytest.raises(RuntimeError, match="no secret resolver is configured"):
        cloaca.Context().secret("warehouse")


def test_declared_secret_is_read_and_never_written_into_the_context(resolver):
    context = cloaca.Context({"day": "mon"})
    assert context.secret("warehouse") == {"url": "postgresql://analytics@db/warehouse", "password": PASSWORD}
    assert context.secret_field("warehouse", "password") == PASSWORD
    assert PASSWORD not in context.to_json() and PASSWORD not in repr(context)


def test_missing_field_undeclared_secret_and_alias(resolver):
    context = cloaca.Context({"__cloacina_secret_refs__": {"db": "warehouse"}})
    assert context.secret_field("db", "url").startswith("postgresql://")  # a declared local alias
    with pytest.raises(KeyError) as missing:
        context.secret_field("warehouse", "port")
    assert PASSWORD not in str(missing.value) and "has no field 'port'" in str(missing.value)
    with pytest.raises(PermissionError, match="declare it with @cloaca.workflow_secrets"):
        context.secret("api_token")


def test_a_task_failing_while_holding_a_secret_leaks_nothing_into_the_error(resolver):
    with workflow_context(WorkflowContext("public", "embedded", "wf")):
        @cloaca.workflow_secrets("warehouse")
        @cloaca.task(id="connects")
        def connects(context):
            password = context.secret_field("warehouse", "password")  # noqa: F841 - held, then failing
            context.secret_field("warehouse", "no_such_field")

    spec = REGISTRY.get_task(cloaca.TaskNamespace("public", "embedded", "wf", "connects"))
    from cloaca.errors import error_from_exception
    with pytest.raises(KeyError) as caught:
        invoke_task(spec, {})
    error = error_from_exception(caught.value)
    assert PASSWORD not in error.message and PASSWORD not in error.traceback
    assert spec.secrets == ["warehouse"]


def test_secrets_file_gives_only_the_declared_names_and_hides_values(tmp_path, caplog):
    path = tmp_path / "secrets.toml"
    path.write_text(SECRETS_FILE)
    os.chmod(path, 0o600)
    store = SecretStore.load(path)
    assert store.names() == ["api_token", "warehouse"]
    assert store.for_names(["api_token", "not_supplied"]) == {"api_token": {"value": "abc123"}}
    assert store.missing(["api_token", "not_supplied"]) == ["not_supplied"]
    with caplog.at_level(logging.DEBUG):
        logging.getLogger("test").info("store: %r", store)
    assert PASSWORD not in repr(store) and PASSWORD not in caplog.text


def test_secrets_file_refusals_name_the_place_never_the_value(tmp_path):
    loose = tmp_path / "open.toml"
    loose.write_text(SECRETS_FILE)
    os.chmod(loose, 0o644)
    with pytest.raises(SecretsFileError, match="chmod 600"):
        SecretStore.load(loose)
    with pytest.raises(SecretsFileError) as caught:
        SecretStore.parse(f'[warehouse]\npassword = "{PASSWORD}"\nport = 5432\n')
    assert "warehouse.port" in str(caught.value) and PASSWORD not in str(caught.value)
    with pytest.raises(SecretsFileError, match="not valid TOML"):
        SecretStore.parse("[warehouse")


# --- delivered to real sandboxes, one tenant's never to another ------------------------------

TENANT_SECRETS = f"""
[warehouse]
password = "default-{PASSWORD}"

[tenants.alpha.warehouse]
password = "alpha-{PASSWORD}"

[tenants.beta.warehouse]
password = "beta-{PASSWORD}"
"""

READS_SECRETS = '''
import os
import cloaca

@cloaca.workflow_secrets("warehouse")
@cloaca.task(id="connect")
def connect(context):
    password = context.secret_field("warehouse", "password")
    context.set("tenant", password.split("-")[0])
    context.set("in_environment", any(password in value for value in os.environ.values()))
    return context

@cloaca.task(id="peek")
def peek(context):
    context.secret("warehouse")  # declared by another task of this package: granted
    return context
'''


def test_each_tenant_gets_its_own_secrets_over_the_link_and_nothing_leaks(tmp_path, caplog):
    import json

    from supervisor.client import SupervisorClient
    from supervisor.edge.server import ServiceConfig
    from tests.projects import build
    from tests.servers import ServerThread

    secrets = tmp_path / "secrets.toml"
    secrets.write_text(TENANT_SECRETS)
    secrets.chmod(0o600)
    keys = tmp_path / "keys"
    keys.write_text("alpha alpha-key-0123456789abcdef\nbeta beta-key-0123456789abcdef0\n")
    archive = build(tmp_path, "reads-secrets", READS_SECRETS)
    server = ServerThread(ServiceConfig(listen="127.0.0.1:0", data_dir=tmp_path / "data", api_keys=keys,
                                        secrets=secrets))
    address = server.start()
    try:
        for tenant, key in (("alpha", "alpha-key-0123456789abcdef"), ("beta", "beta-key-0123456789abcdef0")):
            with SupervisorClient(address, key) as client:
                client.upload(archive)
                answer = client.call("reads-secrets", "connect")
                context = json.loads(answer.context_json)
                assert context == {"tenant": tenant, "in_environment": False}
                assert PASSWORD.encode() not in answer.context_json
                assert client.call("reads-secrets", "peek").error.type == ""
    finally:
        server.stop()
    assert PASSWORD not in caplog.text


def test_an_open_secrets_file_is_refused(tmp_path):
    from supervisor.config import SupervisorConfig
    from supervisor.facade import Supervisor

    secrets = tmp_path / "secrets.toml"
    secrets.write_text(TENANT_SECRETS)
    secrets.chmod(0o644)
    with pytest.raises(SecretsFileError, match="open to other users"):
        Supervisor(SupervisorConfig(secrets_file=secrets))
