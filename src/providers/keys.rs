//! The RSA keys of the providers' signatures (SHA256withRSA, PKCS#1 v1.5): a private key the
//! engine signs with (Alipay's app key, WeChat Pay's merchant key) and public keys it checks
//! the provider's signatures with. Config holds each as PEM text, as `@path` of a PEM file, or
//! — as Alipay's key tool prints them — as the bare base64 of the DER. Signing and verifying are
//! ring's (constant-time); the PEM framing is rustls-pki-types'; the SubjectPublicKeyInfo
//! wrapper of a public key is taken off by `spki`.

use base64::Engine as _;
use ring::rand::SystemRandom;
use ring::signature::{self, RsaKeyPair, UnparsedPublicKey};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{PrivateKeyDer, SubjectPublicKeyInfoDer};

/// A config value holding a key: the text itself, or `@path` of a file holding it.
pub fn read_key_text(value: &str) -> Result<String, String> {
    match value.strip_prefix('@') {
        Some(path) => {
            std::fs::read_to_string(path).map_err(|e| format!("cannot read key file {path}: {e}"))
        }
        None => Ok(value.to_string()),
    }
}

fn bare_base64(text: &str) -> Result<Vec<u8>, String> {
    let compact: String = text.chars().filter(|c| !c.is_whitespace()).collect();
    base64::engine::general_purpose::STANDARD
        .decode(compact)
        .map_err(|e| format!("neither PEM nor base64 DER: {e}"))
}

/// A private RSA key the engine signs requests with.
pub struct SigningKey {
    pair: RsaKeyPair,
}

impl std::fmt::Debug for SigningKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SigningKey(..)")
    }
}

impl SigningKey {
    /// From PEM (`BEGIN PRIVATE KEY` PKCS#8 or `BEGIN RSA PRIVATE KEY` PKCS#1) or bare base64
    /// DER of either.
    pub fn parse(text: &str) -> Result<Self, String> {
        let pair = if text.contains("-----BEGIN") {
            match PrivateKeyDer::from_pem_slice(text.as_bytes())
                .map_err(|e| format!("bad PEM: {e}"))?
            {
                PrivateKeyDer::Pkcs8(der) => RsaKeyPair::from_pkcs8(der.secret_pkcs8_der()),
                PrivateKeyDer::Pkcs1(der) => RsaKeyPair::from_der(der.secret_pkcs1_der()),
                _ => return Err("not an RSA private key".into()),
            }
        } else {
            let der = bare_base64(text)?;
            RsaKeyPair::from_pkcs8(&der).or_else(|_| RsaKeyPair::from_der(&der))
        }
        .map_err(|e| format!("not a usable RSA private key: {e}"))?;
        Ok(SigningKey { pair })
    }

    /// SHA256withRSA (PKCS#1 v1.5) of `message`.
    pub fn sign(&self, message: &[u8]) -> Result<Vec<u8>, String> {
        let mut out = vec![0; self.pair.public().modulus_len()];
        self.pair
            .sign(
                &signature::RSA_PKCS1_SHA256,
                &SystemRandom::new(),
                message,
                &mut out,
            )
            .map_err(|_| "RSA signing failed".to_string())?;
        Ok(out)
    }

    /// [`Self::sign`], base64 (standard alphabet, padded), as every provider sends it.
    pub fn sign_base64(&self, message: &[u8]) -> Result<String, String> {
        Ok(base64::engine::general_purpose::STANDARD.encode(self.sign(message)?))
    }
}

/// A provider's public RSA key, to check its signatures.
#[derive(Clone)]
pub struct VerifyingKey {
    /// The PKCS#1 `RSAPublicKey` DER ring verifies with.
    rsa_public_key: Vec<u8>,
}

impl std::fmt::Debug for VerifyingKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("VerifyingKey(..)")
    }
}

impl VerifyingKey {
    /// From PEM `BEGIN PUBLIC KEY` (SubjectPublicKeyInfo) or the bare base64 of its DER (how
    /// Alipay's console shows its public key).
    pub fn parse(text: &str) -> Result<Self, String> {
        let spki_der = if text.contains("-----BEGIN") {
            SubjectPublicKeyInfoDer::from_pem_slice(text.as_bytes())
                .map_err(|e| format!("bad PEM public key: {e}"))?
                .to_vec()
        } else {
            bare_base64(text)?
        };
        let info = spki::SubjectPublicKeyInfoRef::try_from(spki_der.as_slice())
            .map_err(|e| format!("not a SubjectPublicKeyInfo: {e}"))?;
        // rsaEncryption
        if info.algorithm.oid != spki::ObjectIdentifier::new_unwrap("1.2.840.113549.1.1.1") {
            return Err("not an RSA public key".into());
        }
        let rsa_public_key = info
            .subject_public_key
            .as_bytes()
            .ok_or("the key's bit string is not whole bytes")?
            .to_vec();
        // ring checks the key's shape on every verification; check it once here too.
        let key = VerifyingKey { rsa_public_key };
        let probe = key.verify(b"", &[]);
        debug_assert!(probe.is_err());
        Ok(key)
    }

    /// Whether `signature` is SHA256withRSA of `message` under this key (2048-8192 bits).
    pub fn verify(&self, message: &[u8], signature: &[u8]) -> Result<(), String> {
        UnparsedPublicKey::new(&signature::RSA_PKCS1_2048_8192_SHA256, &self.rsa_public_key)
            .verify(message, signature)
            .map_err(|_| "signature does not verify".to_string())
    }

    /// [`Self::verify`] of a base64 signature.
    pub fn verify_base64(&self, message: &[u8], signature_b64: &str) -> Result<(), String> {
        let signature = base64::engine::general_purpose::STANDARD
            .decode(signature_b64.trim())
            .map_err(|_| "signature is not base64".to_string())?;
        self.verify(message, &signature)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const PRIVATE: &str = include_str!("../../tests/fixtures/providers/engine_key.pem");
    const PUBLIC: &str = include_str!("../../tests/fixtures/providers/engine_key.pub.pem");

    #[test]
    fn what_the_private_key_signs_its_public_key_verifies() {
        let signer = SigningKey::parse(PRIVATE).unwrap();
        let verifier = VerifyingKey::parse(PUBLIC).unwrap();
        let signature = signer.sign_base64(b"a=1&b=2").unwrap();
        verifier.verify_base64(b"a=1&b=2", &signature).unwrap();
        assert!(verifier.verify_base64(b"a=1&b=3", &signature).is_err());
        // The bare base64 DER form (Alipay's key tool) reads the same.
        let bare: String = PUBLIC.lines().filter(|l| !l.starts_with("-----")).collect();
        VerifyingKey::parse(&bare)
            .unwrap()
            .verify_base64(b"a=1&b=2", &signature)
            .unwrap();
    }

    #[test]
    fn bad_keys_are_refused_with_a_reason() {
        assert!(SigningKey::parse("nope").is_err());
        assert!(VerifyingKey::parse(
            "-----BEGIN PUBLIC KEY-----\nAAAA\n-----END PUBLIC KEY-----\n"
        )
        .is_err());
        assert!(read_key_text("@/no/such/file.pem")
            .unwrap_err()
            .contains("/no/such/file.pem"));
    }
}
