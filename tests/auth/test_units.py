"""The principals file, tokens and the role/tenant/agent checks, without a server."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from proctor.server.auth import (
    ANONYMOUS_ADMIN,
    Authenticator,
    AuthFailed,
    Denied,
    PrincipalsError,
    PrincipalsHolder,
    allows,
    authorize,
    load_principals,
)
from proctor.server.auth.principals import parse_principals
from proctor.server.auth.tokens import hash_token
from proctor.server.settings import SettingsError

from ..server.test_units import _settings

GOOD = f"""
principals:
  - id: bot
    roles: [agent]
    tenants: [acme]
    agents: ["planner", "research-*"]
    tokens: ["{hash_token('secret')}"]
  - id: dana
    roles: [reviewer]
    tenants: [acme, globex]
    groups: [gov]
    identities: ["spiffe://acme.example/dana"]
"""


def test_a_good_file_is_indexed_by_token_and_identity() -> None:
    ps = parse_principals(GOOD)
    assert [p.id for p in ps.principals] == ["bot", "dana"]
    assert ps.by_identity["spiffe://acme.example/dana"].id == "dana"
    auth = Authenticator(_holder(GOOD))
    p = auth.bearer("Bearer secret")
    assert (p.id, p.method) == ("bot", "token")
    with pytest.raises(AuthFailed) as e:
        auth.bearer("Bearer secreT")
    assert e.value.reason == "bad_token"
    with pytest.raises(AuthFailed):
        auth.bearer("Basic c2VjcmV0")
    assert auth.certificate({"x509_common_name": [b"nobody"],
                             "peer_spiffe_id": [b"spiffe://acme.example/dana"]}).id == "dana"


@pytest.mark.parametrize(("text", "message"), [
    ("principals: [{id: a, roles: [agent], tenants: [t], agents: [x], tokens: [plain]}]",
     "never in clear"),
    ("principals: [{id: a, roles: [agent], tenants: [t]}]", "needs `agents`"),
    ("principals: [{id: a, roles: [boss], tenants: [t]}]", "unknown role 'boss'"),
    ("principals: [{id: a, roles: [reviewer]}]", "tenants"),
    ("principals: [{id: a, roles: [admin]}, {id: a, roles: [admin]}]", "listed twice"),
    ("principals: [{id: a, roles: [admin], colour: red}]", "unknown field 'colour'"),
    ("principals: {id: a}", "must be a list"),
    ("people: []", "unknown key"),
    ("principals: [{id: a, roles: admin}]", "a list of strings"),
    ("a: &a [x, x, x, x, x, x, x, x, x, x]\nb: &b [*a, *a, *a, *a, *a, *a, *a, *a, *a]\n"
     "c: &c [*b, *b, *b, *b, *b, *b, *b, *b, *b]\nd: &d [*c, *c, *c, *c, *c, *c, *c, *c]\n"
     "e: &e [*d, *d, *d, *d, *d, *d, *d, *d, *d]\nf: &f [*e, *e, *e, *e, *e, *e, *e, *e]\n"
     "g: [*f, *f, *f, *f, *f, *f, *f, *f, *f, *f, *f, *f, *f, *f, *f, *f, *f, *f, *f]",
     "alias"),
    ("principals: [", "YAML syntax"),
])
def test_bad_files_are_refused_with_a_line(text: str, message: str) -> None:
    with pytest.raises(PrincipalsError) as e:
        parse_principals(text, source="p.yaml")
    assert message in str(e.value)
    assert str(e.value).startswith("p.yaml")


def test_only_regular_files_within_the_limit(tmp_path: Path) -> None:
    with pytest.raises(PrincipalsError, match="not a regular file"):
        load_principals(str(tmp_path))
    big = tmp_path / "big.yaml"
    big.write_text("#" * (5 * 1024 * 1024))
    with pytest.raises(PrincipalsError, match="larger than the limit"):
        load_principals(str(big))


def test_a_bad_reload_keeps_the_principals(tmp_path: Path) -> None:
    f = tmp_path / "p.yaml"
    f.write_text(GOOD)

    async def scenario() -> None:
        holder = PrincipalsHolder.load(str(f))
        f.write_text("principals: [")
        assert not await holder.reload("test")
        assert "YAML syntax" in holder.last_error
        assert [p.id for p in holder.current.principals] == ["bot", "dana"]
        f.write_text(GOOD.replace("id: dana", "id: erin"))
        assert await holder.reload("test")
        assert [p.id for p in holder.current.principals] == ["bot", "erin"]

    asyncio.run(scenario())


def test_authorize_names_what_is_missing() -> None:
    bot, dana = parse_principals(GOOD).principals
    assert authorize(bot, "", ("root", "planner")) == "acme"  # the only tenant, filled in
    assert authorize(bot, "acme", ("research-2",)) == "acme"
    with pytest.raises(Denied, match="tenant 'globex'"):
        authorize(bot, "globex", ("planner",))
    with pytest.raises(Denied, match="agent 'mailer'"):
        authorize(bot, "acme", ("planner", "mailer"))
    with pytest.raises(Denied, match="no tenant named"):
        authorize(dana, "", ("x",))
    assert authorize(ANONYMOUS_ADMIN, "", ()) == ""
    assert allows(dana, "reviewer", "globex") and not allows(dana, "agent")
    assert not allows(dana, "reviewer", "initech")


def test_development_mode_is_the_anonymous_admin() -> None:
    auth = Authenticator()
    assert auth.development and auth.authenticate((), None) is ANONYMOUS_ADMIN
    with pytest.raises(AuthFailed, match="no credential"):
        Authenticator(_holder(GOOD)).authenticate((), None)


@pytest.mark.parametrize(("argv", "message"), [
    (["--listen", "0.0.0.0:50051"], "--principals FILE"),
    (["--listen", "0.0.0.0:50051", "--principals", "{p}"], "need TLS"),
    (["--jwt-jwks", "http://keys.example/jwks.json"], "https"),
    (["--jwt-jwks", "{p}"], "--jwt-issuer and --jwt-audience"),
    (["--jwt-issuer", "x"], "go with --jwt-jwks"),
])
def test_settings_refuse_open_or_clear_text_listens(tmp_path: Path, argv: list[str],
                                                    message: str) -> None:
    f = tmp_path / "p.yaml"
    f.write_text(GOOD)
    with pytest.raises(SettingsError) as e:
        _settings(*[a.format(p=f) for a in argv]).validate()
    assert message in str(e.value)


def _holder(text: str) -> PrincipalsHolder:
    return PrincipalsHolder("<test>", parse_principals(text))
