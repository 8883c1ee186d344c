"""Settings for a managed Kafka (TLS, SASL PLAIN/SCRAM) become the aiokafka options they mean.

No TLS or SASL broker runs here (the embedded Tansu serves plaintext), so this checks the mapping
and that aiokafka accepts it, not a handshake.
"""

from __future__ import annotations

import datetime
import ssl
from pathlib import Path

import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from worker.kafka import client_options
from worker.settings import Settings


def _self_signed(tmp_path: Path) -> tuple[Path, Path]:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "kafka.test")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now)
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    cert_file, key_file = tmp_path / "cert.pem", tmp_path / "key.pem"
    cert_file.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_file.write_bytes(
        key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    )
    return cert_file, key_file


def _settings(**values: object) -> Settings:
    return Settings.model_validate({"database_url": "sqlite:///unused.sqlite3", **values})


def test_plaintext_is_just_the_bootstrap_servers() -> None:
    assert client_options(_settings(), "k1:9092,k2:9092") == {
        "bootstrap_servers": "k1:9092,k2:9092",
        "security_protocol": "PLAINTEXT",
    }


async def test_sasl_ssl_with_scram_and_a_client_certificate(tmp_path: Path) -> None:
    cert, key = _self_signed(tmp_path)
    settings = _settings(
        kafka_security_protocol="SASL_SSL",
        kafka_sasl_mechanism="SCRAM-SHA-512",
        kafka_sasl_username="worker",
        kafka_sasl_password="s3cret-password",
        kafka_ssl_cafile=str(cert),
        kafka_ssl_certfile=str(cert),
        kafka_ssl_keyfile=str(key),
    )
    options = client_options(settings, "broker.test:9094")

    context = options.pop("ssl_context")
    assert isinstance(context, ssl.SSLContext)
    assert context.verify_mode == ssl.CERT_REQUIRED and context.check_hostname
    assert [c["subject"] for c in context.get_ca_certs()] == [((("commonName", "kafka.test"),),)]
    assert options == {
        "bootstrap_servers": "broker.test:9094",
        "security_protocol": "SASL_SSL",
        "sasl_mechanism": "SCRAM-SHA-512",
        "sasl_plain_username": "worker",
        "sasl_plain_password": "s3cret-password",
    }
    # aiokafka validates protocol, mechanism and context when a client is built
    AIOKafkaProducer(**client_options(settings, "broker.test:9094"))
    AIOKafkaConsumer(**client_options(settings, "broker.test:9094"), group_id="g")
    assert "s3cret-password" not in repr(settings) and "s3cret-password" not in str(settings.model_dump())


async def test_sasl_plaintext_defaults_to_plain() -> None:
    settings = _settings(kafka_security_protocol="SASL_PLAINTEXT", kafka_sasl_username="u", kafka_sasl_password="p")
    options = client_options(settings, "b:9092")
    assert "ssl_context" not in options
    assert (options["sasl_mechanism"], options["sasl_plain_username"], options["sasl_plain_password"]) == (
        "PLAIN",
        "u",
        "p",
    )
    AIOKafkaProducer(**options)


def test_an_unknown_mechanism_is_refused_at_start_up() -> None:
    with pytest.raises(ValueError, match="kafka_sasl_mechanism"):
        _settings(kafka_security_protocol="SASL_SSL", kafka_sasl_mechanism="GSSAPI")
