"""TLS (libpq's sslmode and sslrootcert) and the PG* environment variables.

Against the local server (when it has ``ssl = on``) and against a cluster of
the test's own, listening on 127.0.0.1 with a CA and a server certificate
(for ``localhost`` only) that the test makes.
"""

from __future__ import annotations

import datetime
import ipaddress
import os
import socket
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

import asyncpg
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

import _cluster
import durable
from durable.errors import ConfigError, ConnectError

SECRET = "s3cret-pw"


def with_params(dsn: str, **params: str) -> str:
    """The URL with query parameters added (or replaced)."""
    parts = urlsplit(dsn)
    query = dict(parse_qsl(parts.query))
    query.update(params)
    return urlunsplit(parts._replace(query=urlencode(query)))


async def encryption(inspect_dsn: str, application_name: str) -> list[bool]:
    """Whether each session of that application name is encrypted (pg_stat_ssl)."""
    conn = await asyncpg.connect(inspect_dsn)
    try:
        rows = await conn.fetch(
            """SELECT s.ssl FROM pg_stat_activity a JOIN pg_stat_ssl s USING (pid)
               WHERE a.application_name = $1""",
            application_name,
        )
    finally:
        await conn.close()
    return [row["ssl"] for row in rows]


async def owner_encrypted(inspect_dsn: str, db: durable.Db) -> bool:
    """Whether the liveness session of ``db`` (registered by pid) is encrypted."""
    conn = await asyncpg.connect(inspect_dsn)
    try:
        encrypted: bool = await conn.fetchval(
            f"""SELECT s.ssl FROM {db.schema}.owner o JOIN pg_stat_ssl s ON s.pid = o.backend_pid
                WHERE o.id = $1""",
            db.owner_id,
        )
    finally:
        await conn.close()
    return encrypted


# --- the local server ---------------------------------------------------------


@pytest.fixture
async def local_ssl(dsn: str) -> AsyncIterator[None]:
    conn = await asyncpg.connect(dsn)  # asyncpg, like libpq, prefers TLS by default
    try:
        offered = await conn.fetchval("SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()")
    finally:
        await conn.close()
    if not offered:
        pytest.skip("the test server offers no TLS here (ssl = off, or a Unix socket); the TLS cluster tests still run")
    yield


@pytest.mark.parametrize("sslmode", ["require", "prefer", None])
async def test_require_and_prefer_encrypt_every_session(local_ssl: None, dsn: str, schema: str, sslmode: str | None) -> None:
    """prefer (also the default) encrypts when the server offers TLS, as libpq does."""
    app = f"durable_tls_{sslmode}_{schema[-6:]}"
    params = {"application_name": app} | ({"sslmode": sslmode} if sslmode else {})
    db = await durable.init(with_params(dsn, **params), schema=schema)
    try:
        sessions = await encryption(dsn, app)
        assert len(sessions) >= 3, "the pool's connections and the liveness session"
        assert all(sessions), sessions
        assert await owner_encrypted(dsn, db)
    finally:
        await db.close()


async def test_disable_does_not_encrypt(local_ssl: None, dsn: str, schema: str) -> None:
    app = f"durable_tls_disable_{schema[-6:]}"
    db = await durable.init(with_params(dsn, sslmode="disable", application_name=app), schema=schema)
    try:
        sessions = await encryption(dsn, app)
        assert len(sessions) >= 3 and not any(sessions), sessions
        assert not await owner_encrypted(dsn, db)
    finally:
        await db.close()


# Refused before connecting: nothing listens there.
NOWHERE = f"postgresql://postgres:{SECRET}@127.0.0.1:1/db"


async def test_an_unknown_sslmode_is_a_config_error(schema: str) -> None:
    with pytest.raises(ConfigError, match="not one of disable, prefer, require, verify-ca, verify-full") as caught:
        await durable.init(with_params(NOWHERE, sslmode="verify"), schema=schema)
    assert SECRET not in str(caught.value)


async def test_verify_full_without_a_root_file_names_the_file_and_the_fixes(
    schema: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("HOME", str(tmp_path))
    with pytest.raises(ConfigError) as caught:
        await durable.init(with_params(NOWHERE, sslmode="verify-full"), schema=schema)
    text = str(caught.value)
    assert str(tmp_path / ".postgresql" / "root.crt") in text, text
    assert "sslrootcert=system" in text and "require" in text, text
    assert SECRET not in text, text


# --- a cluster with certificates of the test's own ----------------------------


def _name(common_name: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])


def _validity(builder: x509.CertificateBuilder) -> x509.CertificateBuilder:
    now = datetime.datetime.now(datetime.timezone.utc)
    return builder.not_valid_before(now - datetime.timedelta(days=1)).not_valid_after(now + datetime.timedelta(days=30))


def make_ca(common_name: str) -> tuple[ec.EllipticCurvePrivateKey, x509.Certificate]:
    key = ec.generate_private_key(ec.SECP256R1())
    cert = (
        _validity(x509.CertificateBuilder())
        .subject_name(_name(common_name))
        .issuer_name(_name(common_name))
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True, content_commitment=False, key_encipherment=False,
                data_encipherment=False, key_agreement=False, key_cert_sign=True, crl_sign=True,
                encipher_only=False, decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .sign(key, hashes.SHA256())
    )
    return key, cert


def make_server_cert(
    ca_key: ec.EllipticCurvePrivateKey, ca_cert: x509.Certificate, name: x509.GeneralName
) -> tuple[ec.EllipticCurvePrivateKey, x509.Certificate]:
    key = ec.generate_private_key(ec.SECP256R1())
    cert = (
        _validity(x509.CertificateBuilder())
        .subject_name(_name(str(name.value)))
        .issuer_name(ca_cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .add_extension(x509.SubjectAlternativeName([name]), critical=False)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.ExtendedKeyUsage([x509.oid.ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), critical=False
        )
        .sign(ca_key, hashes.SHA256())
    )
    return key, cert


def write_cert(path: Path, cert: x509.Certificate) -> Path:
    path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    return path


def install(server: _cluster.Tcp, key: ec.EllipticCurvePrivateKey, cert: x509.Certificate) -> None:
    """Makes key and cert the server's (read at its next start)."""
    key_file = server.pgdata / "server.key"
    key_file.write_bytes(
        key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    )
    key_file.chmod(0o600)
    server.own(key_file)  # the server reads only a key of its own, kept private
    server.own(write_cert(server.pgdata / "server.crt", cert))


@dataclass
class TlsCluster:
    server: _cluster.Tcp
    ca_key: ec.EllipticCurvePrivateKey
    ca_cert: x509.Certificate
    server_key: ec.EllipticCurvePrivateKey
    server_cert: x509.Certificate
    ca: Path  # the CA that signed the server's certificate
    other_ca: Path  # a CA that did not
    ssl_options: str

    def dsn(self, host: str, **params: str) -> str:
        return with_params(f"postgresql://postgres:{SECRET}@{host}:{self.server.port}/postgres", **params)

    @property
    def inspect_dsn(self) -> str:
        return self.server.socket_dsn


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


@pytest.fixture(scope="module")
def tls_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TlsCluster]:
    """A cluster on 127.0.0.1 with ssl = on and a certificate for ``localhost`` only."""
    certs = tmp_path_factory.mktemp("certs")
    ca_key, ca_cert = make_ca("durable test CA")
    _, other_cert = make_ca("durable other CA")
    server_key, server_cert = make_server_cert(ca_key, ca_cert, x509.DNSName("localhost"))
    ssl_options = "-c ssl=on"  # server.crt and server.key of the data directory, the defaults

    with _cluster.running_tcp(free_port(), ssl_options, lambda server: install(server, server_key, server_cert)) as server:
        yield TlsCluster(
            server=server,
            ca_key=ca_key,
            ca_cert=ca_cert,
            server_key=server_key,
            server_cert=server_cert,
            ca=write_cert(certs / "ca.pem", ca_cert),
            other_ca=write_cert(certs / "other-ca.pem", other_cert),
            ssl_options=ssl_options,
        )


async def connects_encrypted(cluster: TlsCluster, dsn: str, schema: str) -> None:
    """init succeeds, and every session of it is encrypted."""
    app = f"durable_tls_{schema[-6:]}"
    named = with_params(dsn, application_name=app) if "://" in dsn else f"{dsn} application_name={app}"
    db = await durable.init(named, schema=schema)
    try:
        sessions = await encryption(cluster.inspect_dsn, app)
        assert len(sessions) >= 3 and all(sessions), sessions
        assert await owner_encrypted(cluster.inspect_dsn, db)
    finally:
        await db.close()


async def refused(dsn: str, schema: str) -> str:
    """init fails with ConnectError; its message (never with the password)."""
    with pytest.raises(ConnectError) as caught:
        await durable.init(dsn, schema=schema)
    text = str(caught.value)
    assert SECRET not in text, text
    return text


async def test_verify_full_accepts_the_right_ca_and_host(tls_cluster: TlsCluster, schema: str) -> None:
    dsn = tls_cluster.dsn("localhost", sslmode="verify-full", sslrootcert=str(tls_cluster.ca))
    await connects_encrypted(tls_cluster, dsn, schema)


async def test_verify_full_refuses_a_wrong_host_name(tls_cluster: TlsCluster, schema: str) -> None:
    # The certificate is for localhost; 127.0.0.1 is the same server under another name.
    text = await refused(tls_cluster.dsn("127.0.0.1", sslmode="verify-full", sslrootcert=str(tls_cluster.ca)), schema)
    assert "not valid for host '127.0.0.1'" in text and "localhost" in text, text
    assert "verify-ca" in text, text  # the way out, when only the CA matters
    assert "not signed" not in text, text


async def test_verify_full_checks_host_not_hostaddr(tls_cluster: TlsCluster, schema: str) -> None:
    """With hostaddr, the connection goes there and the name checked is host's (as libpq)."""
    port = tls_cluster.server.port
    ca = tls_cluster.ca
    await connects_encrypted(
        tls_cluster,
        f"host=localhost hostaddr=127.0.0.1 port={port} user=postgres dbname=postgres sslmode=verify-full sslrootcert={ca}",
        schema,
    )
    text = await refused(
        f"host=127.0.0.1 hostaddr=127.0.0.1 port={port} user=postgres password={SECRET} dbname=postgres "
        f"sslmode=verify-full sslrootcert={ca}",
        schema,
    )
    assert "not valid for host '127.0.0.1'" in text, text


async def test_verify_full_checks_an_ip_host_against_the_ip_addresses_of_the_certificate(tls_cluster: TlsCluster, schema: str) -> None:
    server = tls_cluster.server
    key, cert = make_server_cert(
        tls_cluster.ca_key, tls_cluster.ca_cert, x509.IPAddress(ipaddress.ip_address("127.0.0.1"))
    )
    install(server, key, cert)
    server.pg_ctl("restart", tls_cluster.ssl_options)
    try:
        dsn = tls_cluster.dsn("127.0.0.1", sslmode="verify-full", sslrootcert=str(tls_cluster.ca))
        await connects_encrypted(tls_cluster, dsn, schema)
        text = await refused(tls_cluster.dsn("localhost", sslmode="verify-full", sslrootcert=str(tls_cluster.ca)), schema)
        assert "not valid for host 'localhost'" in text and "127.0.0.1" in text, text
    finally:
        install(server, tls_cluster.server_key, tls_cluster.server_cert)
        server.pg_ctl("restart", tls_cluster.ssl_options)


async def test_verify_full_refuses_an_unknown_ca(tls_cluster: TlsCluster, schema: str) -> None:
    dsn = tls_cluster.dsn("localhost", sslmode="verify-full", sslrootcert=str(tls_cluster.other_ca))
    text = await refused(dsn, schema)
    assert f"not signed by a CA in {tls_cluster.other_ca}" in text, text
    assert "not valid for host" not in text, text


async def test_verify_ca_accepts_a_wrong_host_name_but_not_an_unknown_ca(tls_cluster: TlsCluster, schema: str) -> None:
    await connects_encrypted(
        tls_cluster, tls_cluster.dsn("127.0.0.1", sslmode="verify-ca", sslrootcert=str(tls_cluster.ca)), schema
    )
    text = await refused(
        tls_cluster.dsn("127.0.0.1", sslmode="verify-ca", sslrootcert=str(tls_cluster.other_ca)), schema
    )
    assert f"not signed by a CA in {tls_cluster.other_ca}" in text, text


async def test_require_checks_nothing_without_a_root_file(
    tls_cluster: TlsCluster, schema: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("HOME", str(tmp_path))  # no ~/.postgresql/root.crt
    await connects_encrypted(tls_cluster, tls_cluster.dsn("127.0.0.1", sslmode="require"), schema)


async def test_require_checks_the_ca_when_the_default_root_file_exists(
    tls_cluster: TlsCluster, schema: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """As libpq: with ~/.postgresql/root.crt, require behaves as verify-ca."""
    monkeypatch.setenv("HOME", str(tmp_path))
    root = tmp_path / ".postgresql" / "root.crt"
    root.parent.mkdir()
    root.write_bytes(tls_cluster.other_ca.read_bytes())
    text = await refused(tls_cluster.dsn("127.0.0.1", sslmode="require"), schema)
    assert f"not signed by a CA in {root}" in text, text
    root.write_bytes(tls_cluster.ca.read_bytes())
    await connects_encrypted(tls_cluster, tls_cluster.dsn("127.0.0.1", sslmode="require"), schema)


async def test_system_roots_refuse_the_test_ca(tls_cluster: TlsCluster, schema: str) -> None:
    text = await refused(tls_cluster.dsn("localhost", sslrootcert="system"), schema)  # verify-full by default
    assert "not signed by a CA in the operating system's trusted roots" in text, text


async def test_system_roots_refuse_weaker_modes(tls_cluster: TlsCluster, schema: str) -> None:
    with pytest.raises(ConfigError, match="sslrootcert=system needs sslmode=verify-full"):
        await durable.init(tls_cluster.dsn("localhost", sslmode="require", sslrootcert="system"), schema=schema)


async def test_require_refuses_a_server_without_tls_and_prefer_falls_back(
    tls_cluster: TlsCluster, schema: str
) -> None:
    server = tls_cluster.server
    server.pg_ctl("restart", f"{tls_cluster.ssl_options} -c ssl=off")
    try:
        for mode in ("require", "verify-full"):
            text = await refused(tls_cluster.dsn("localhost", sslmode=mode, sslrootcert=str(tls_cluster.ca)), schema)
            assert "the server does not accept TLS" in text, text
        app = f"durable_tls_fallback_{schema[-6:]}"
        db = await durable.init(tls_cluster.dsn("localhost", sslmode="prefer", application_name=app), schema=schema)
        try:
            sessions = await encryption(tls_cluster.inspect_dsn, app)
            assert len(sessions) >= 3 and not any(sessions), sessions
        finally:
            await db.close()
    finally:
        server.pg_ctl("restart", tls_cluster.ssl_options)


# --- the PG* environment variables ---------------------------------------------


@pytest.fixture
def pg_env(tls_cluster: TlsCluster, monkeypatch: pytest.MonkeyPatch) -> pytest.MonkeyPatch:
    """The environment pointing at the TLS cluster, verify-full, nothing else set."""
    for name in list(os.environ):
        if name.startswith("PG") or name == "DURABLE_DATABASE_URL":
            monkeypatch.delenv(name)
    monkeypatch.setenv("PGHOST", "localhost")
    monkeypatch.setenv("PGPORT", str(tls_cluster.server.port))
    monkeypatch.setenv("PGUSER", "postgres")
    monkeypatch.setenv("PGPASSWORD", SECRET)
    monkeypatch.setenv("PGDATABASE", "postgres")
    monkeypatch.setenv("PGSSLMODE", "verify-full")
    monkeypatch.setenv("PGSSLROOTCERT", str(tls_cluster.ca))
    return monkeypatch


async def test_init_without_a_dsn_connects_with_the_pg_environment(
    tls_cluster: TlsCluster, schema: str, pg_env: pytest.MonkeyPatch
) -> None:
    db = await durable.init(schema=schema)
    try:
        assert await owner_encrypted(tls_cluster.inspect_dsn, db)
    finally:
        await db.close()
    # A partial URL: the environment fills the rest, TLS settings included.
    await connects_encrypted(tls_cluster, "dbname=postgres", schema)
    # PGSSLMODE and PGSSLROOTCERT apply: the wrong host name is refused.
    pg_env.setenv("PGHOST", "127.0.0.1")
    text = await refused("postgresql://", schema)
    assert "not valid for host '127.0.0.1'" in text, text


async def test_the_dsn_wins_over_the_pg_environment(
    tls_cluster: TlsCluster, schema: str, pg_env: pytest.MonkeyPatch
) -> None:
    pg_env.setenv("PGPORT", "1")  # nothing listens there
    app = f"durable_tls_wins_{schema[-6:]}"
    dsn = f"postgresql://postgres@127.0.0.1:{tls_cluster.server.port}/postgres?sslmode=disable&application_name={app}"
    db = await durable.init(dsn, schema=schema)
    try:
        sessions = await encryption(tls_cluster.inspect_dsn, app)
        assert len(sessions) >= 3 and not any(sessions), sessions
    finally:
        await db.close()


async def test_no_host_anywhere_names_pghost(schema: str, monkeypatch: pytest.MonkeyPatch) -> None:
    for name in list(os.environ):
        if name.startswith("PG"):
            monkeypatch.delenv(name)
    monkeypatch.setenv("PGDATABASE", "app")
    monkeypatch.delenv("DURABLE_DATABASE_URL", raising=False)
    with pytest.raises(ConfigError, match="no host given.*PGHOST"):
        await durable.init(schema=schema)
