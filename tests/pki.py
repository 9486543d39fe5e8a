"""A throwaway PKI for tests: root CA, intermediate CA, server and client certificates (ECDSA P-256, or RSA)."""

from __future__ import annotations

import datetime
import ipaddress
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import AuthorityInformationAccessOID, ExtendedKeyUsageOID, NameOID

LeafKey = ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey


@dataclass
class Issued:
    cert: x509.Certificate
    key: LeafKey
    cert_path: Path
    key_path: Path
    chain_path: Path  # leaf followed by the intermediates a server sends

    @property
    def subject_cn(self) -> str:
        return str(self.cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value)


def _name(cn: str) -> x509.Name:
    return x509.Name(
        [x509.NameAttribute(NameOID.ORGANIZATION_NAME, "pausetls tests"), x509.NameAttribute(NameOID.COMMON_NAME, cn)]
    )


def _write(path: Path, *items: object) -> Path:
    with path.open("wb") as f:
        for item in items:
            if isinstance(item, x509.Certificate):
                f.write(item.public_bytes(serialization.Encoding.PEM))
            else:
                f.write(
                    item.private_bytes(  # type: ignore[attr-defined]
                        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
                    )
                )
    return path


class PKI:
    """Issues certificates into *directory*."""

    def __init__(self, directory: Path, name: str = "pausetls test") -> None:
        self.directory = directory
        now = datetime.datetime.now(datetime.UTC)
        self._not_before = now - datetime.timedelta(days=1)
        self._not_after = now + datetime.timedelta(days=30)
        self.root = self._ca(f"{name} root", None)
        self.intermediate = self._ca(f"{name} intermediate", self.root)
        self.ca_path = self.root.cert_path

    def _builder(self, cn: str, key: LeafKey, issuer: Issued | None) -> x509.CertificateBuilder:
        return (
            x509.CertificateBuilder()
            .subject_name(_name(cn))
            .issuer_name(issuer.cert.subject if issuer else _name(cn))
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(self._not_before)
            .not_valid_after(self._not_after)
        )

    @staticmethod
    def _key_ids(builder: x509.CertificateBuilder, key: LeafKey, issuer: Issued | None) -> x509.CertificateBuilder:
        """Subject and authority key identifiers, which CA/B-profile verifiers (cryptography's) require."""
        builder = builder.add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        if issuer is None:
            return builder
        aki = x509.AuthorityKeyIdentifier.from_issuer_public_key(issuer.key.public_key())
        return builder.add_extension(aki, critical=False)

    @staticmethod
    def _aia(builder: x509.CertificateBuilder, ca_issuers: str | None) -> x509.CertificateBuilder:
        """An Authority Information Access extension whose caIssuers URL serves the issuer."""
        if ca_issuers is None:
            return builder
        access = x509.AccessDescription(
            AuthorityInformationAccessOID.CA_ISSUERS, x509.UniformResourceIdentifier(ca_issuers)
        )
        return builder.add_extension(x509.AuthorityInformationAccess([access]), critical=False)

    def _ca(self, cn: str, issuer: Issued | None, *, ca_issuers: str | None = None) -> Issued:
        key = ec.generate_private_key(ec.SECP256R1())
        builder = self._builder(cn, key, issuer).add_extension(
            x509.BasicConstraints(ca=True, path_length=None), critical=True
        )
        builder = builder.add_extension(
            x509.KeyUsage(False, False, False, False, False, True, True, False, False), critical=True
        )
        builder = self._aia(self._key_ids(builder, key, issuer), ca_issuers)
        cert = builder.sign(issuer.key if issuer else key, hashes.SHA256())
        return self._save(cn, cert, key, [] if issuer is None else [issuer.cert])

    def sub_ca(self, cn: str, issuer: Issued, *, ca_issuers: str | None = None) -> Issued:
        """Another CA below *issuer* (for longer chains); *ca_issuers* sets its AIA URL."""
        return self._ca(cn, issuer, ca_issuers=ca_issuers)

    def _save(self, cn: str, cert: x509.Certificate, key: LeafKey, chain: list[x509.Certificate]) -> Issued:
        stem = cn.replace(" ", "_").replace("*", "star")
        return Issued(
            cert,
            key,
            _write(self.directory / f"{stem}.crt", cert),
            _write(self.directory / f"{stem}.key", key),
            _write(self.directory / f"{stem}.chain.pem", cert, *chain),
        )

    def issue(
        self,
        cn: str,
        *,
        server: bool = True,
        names: tuple[str, ...] = ("localhost", "127.0.0.1", "::1"),
        issuer: Issued | None = None,
        ca_issuers: str | None = None,
        rsa_key: bool = False,
        curve: ec.EllipticCurve | None = None,
    ) -> Issued:
        """A leaf signed by *issuer* (the intermediate by default); its chain file carries the issuer.

        *ca_issuers* adds an Authority Information Access caIssuers URL; *rsa_key* gives the leaf an
        RSA 2048 key instead of ECDSA P-256 (static RSA key exchange needs one), *curve* another curve.
        """
        issuer = issuer or self.intermediate
        key: LeafKey = (
            rsa.generate_private_key(65537, 2048) if rsa_key else ec.generate_private_key(curve or ec.SECP256R1())
        )
        usage = ExtendedKeyUsageOID.SERVER_AUTH if server else ExtendedKeyUsageOID.CLIENT_AUTH
        builder = self._builder(cn, key, issuer).add_extension(x509.ExtendedKeyUsage([usage]), critical=False)
        builder = self._aia(self._key_ids(builder, key, issuer), ca_issuers)
        alt: list[x509.GeneralName] = []
        for name in names if server else ():
            try:
                alt.append(x509.IPAddress(ipaddress.ip_address(name)))
            except ValueError:
                alt.append(x509.DNSName(name))
        if alt:
            builder = builder.add_extension(x509.SubjectAlternativeName(alt), critical=False)
        cert = builder.sign(issuer.key, hashes.SHA256())
        return self._save(cn, cert, key, [issuer.cert])
