//! Tokens sealed with XChaCha20-Poly1305 under the cluster key, and token fingerprints.
//!
//! Records carry the sealed token so that any processor holding the cluster key can act for
//! the bot, while the bus, the store and the logs never see it in clear (DESIGN invariant 5).
//! The bot id is the AEAD's associated data: a sealed token cannot be replayed under another
//! bot's key.

use crate::ids::BotId;
use crate::token::BotToken;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use chacha20poly1305::aead::{Aead, AeadCore, KeyInit, OsRng, Payload};
use chacha20poly1305::{XChaCha20Poly1305, XNonce};
use hmac::{Hmac, Mac};
use serde::{Deserialize, Serialize};
use sha2::Sha256;
use std::collections::HashMap;
use std::fmt;
use std::sync::{Arc, Mutex};

type HmacSha256 = Hmac<Sha256>;

#[derive(Debug, thiserror::Error)]
pub enum SealError {
    #[error("the seal key must be 32 bytes, given as 64 hex digits")]
    KeyFormat,
    #[error("the sealed token is malformed")]
    Malformed,
    #[error("the sealed token does not open under this key (another cluster key?)")]
    Open,
    #[error("the opened token has the wrong shape")]
    Token,
}

/// The cluster key. Never logged.
#[derive(Clone)]
pub struct SealKey([u8; 32]);

impl SealKey {
    pub fn generate() -> Self {
        let mut k = [0u8; 32];
        rand::RngCore::fill_bytes(&mut OsRng, &mut k);
        Self(k)
    }

    pub fn from_hex(s: &str) -> Result<Self, SealError> {
        let bytes = hex::decode(s.trim()).map_err(|_| SealError::KeyFormat)?;
        let k: [u8; 32] = bytes.try_into().map_err(|_| SealError::KeyFormat)?;
        Ok(Self(k))
    }

    pub fn to_hex(&self) -> String {
        hex::encode(self.0)
    }

    /// A key for one purpose, so that the AEAD key, the fingerprint key and later the storage
    /// link key are independent even though one secret is configured.
    pub fn derive(&self, purpose: &str) -> [u8; 32] {
        let mut mac = <HmacSha256 as Mac>::new_from_slice(&self.0).expect("hmac takes any key");
        mac.update(b"telepipe/");
        mac.update(purpose.as_bytes());
        mac.finalize().into_bytes().into()
    }
}

impl fmt::Debug for SealKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("SealKey(***)")
    }
}

/// `base64url(nonce ‖ ciphertext)`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct SealedToken(pub String);

/// A keyed hash of a token: tells two tokens of one bot apart in the audit log (a revoked
/// token vs the new one) without revealing either.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct TokenFingerprint(pub String);

impl fmt::Display for TokenFingerprint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

#[derive(Clone)]
pub struct Sealer {
    cipher: XChaCha20Poly1305,
    fingerprint_key: [u8; 32],
    storage_key: [u8; 32],
    hook_key: [u8; 32],
    mask_key: [u8; 32],
    /// A [`Purpose`]'s keys: sealed through ring ([`Sealer::seal_for`]), opened through the
    /// `chacha20poly1305` crate (a cipher made for each opening: they are rare).
    blob_key: [u8; 32],
    request_key: [u8; 32],
    memo: Arc<Mutex<Memo>>,
}

/// What a sealing is for: each purpose has its own key, so a sealing made for one can never
/// be opened as another (a sealed session passed off as a recorded request).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Purpose {
    /// A bot's MTProto session ([`Sealer::seal_bytes`]).
    Session,
    /// A call's original request, in its audit row.
    Request,
}

/// Tokens seen lately. Every call's token is fingerprinted and sealed by ingest and opened by a
/// processor: HMAC and AEAD work (and a nonce from the OS) on the hot path, for the few tokens
/// a gateway serves again and again. Bounded: forgotten all at once when full. It holds what
/// the process holds anyway while it serves a call, and is never printed.
#[derive(Default)]
struct Memo {
    /// Token → its fingerprint and sealing.
    admitted: HashMap<String, (TokenFingerprint, SealedToken)>,
    /// Sealing → its bot and the token (looked up by the sealing's text, with no key made).
    opened: HashMap<String, (i64, BotToken)>,
}

const MEMO_MAX: usize = 4096;

impl Memo {
    fn room<K, V>(map: &mut HashMap<K, V>) {
        if map.len() >= MEMO_MAX {
            map.clear();
        }
    }
}

impl Sealer {
    pub fn new(key: &SealKey) -> Self {
        let aead_key = key.derive("seal/v1");
        let (blob_key, request_key) = (key.derive("seal-bytes/v1"), key.derive("seal-request/v1"));
        Self {
            cipher: XChaCha20Poly1305::new((&aead_key).into()),
            fingerprint_key: key.derive("fingerprint/v1"),
            storage_key: key.derive("storage-name/v1"),
            hook_key: key.derive("hook/v1"),
            mask_key: key.derive("token-mask/v1"),
            blob_key,
            request_key,
            memo: Arc::default(),
        }
    }

    fn memo(&self) -> std::sync::MutexGuard<'_, Memo> {
        self.memo.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// What ingest needs of the token a client sent: its fingerprint, and, when it has a
    /// token's shape, the token and its sealing (the same sealing for the same token, while
    /// remembered).
    pub fn admit(&self, raw: &str) -> (TokenFingerprint, Option<(BotToken, SealedToken)>) {
        let Ok(token) = BotToken::parse(raw) else {
            return (self.fingerprint(raw), None);
        };
        if let Some((fp, sealed)) = self.memo().admitted.get(raw) {
            return (fp.clone(), Some((token, sealed.clone())));
        }
        let (fp, sealed) = (self.fingerprint(raw), self.seal(&token));
        let mut memo = self.memo();
        Memo::room(&mut memo.admitted);
        memo.admitted
            .insert(raw.to_owned(), (fp.clone(), sealed.clone()));
        (fp, Some((token, sealed)))
    }

    pub fn seal(&self, token: &BotToken) -> SealedToken {
        let nonce = XChaCha20Poly1305::generate_nonce(&mut OsRng);
        let aad = token.bot_id().0.to_be_bytes();
        let ct = self
            .cipher
            .encrypt(
                &nonce,
                Payload {
                    msg: token.expose().as_bytes(),
                    aad: &aad,
                },
            )
            .expect("xchacha20poly1305 encryption of a short message cannot fail");
        let mut out = nonce.to_vec();
        out.extend_from_slice(&ct);
        SealedToken(URL_SAFE_NO_PAD.encode(out))
    }

    /// Opens a sealed token of `bot_id` (remembered: see [`Sealer::admit`]).
    pub fn open(&self, bot_id: BotId, sealed: &SealedToken) -> Result<BotToken, SealError> {
        if let Some((_, t)) = self
            .memo()
            .opened
            .get(sealed.0.as_str())
            .filter(|(bot, _)| *bot == bot_id.0)
        {
            return Ok(t.clone());
        }
        let token = self.open_uncached(bot_id, sealed)?;
        let mut memo = self.memo();
        Memo::room(&mut memo.opened);
        memo.opened
            .insert(sealed.0.clone(), (bot_id.0, token.clone()));
        Ok(token)
    }

    fn open_uncached(&self, bot_id: BotId, sealed: &SealedToken) -> Result<BotToken, SealError> {
        let raw = URL_SAFE_NO_PAD
            .decode(sealed.0.as_bytes())
            .map_err(|_| SealError::Malformed)?;
        if raw.len() < 24 + 16 {
            return Err(SealError::Malformed);
        }
        let (nonce, ct) = raw.split_at(24);
        let aad = bot_id.0.to_be_bytes();
        let clear = self
            .cipher
            .decrypt(XNonce::from_slice(nonce), Payload { msg: ct, aad: &aad })
            .map_err(|_| SealError::Open)?;
        let s = String::from_utf8(clear).map_err(|_| SealError::Token)?;
        let token = BotToken::parse(&s).map_err(|_| SealError::Token)?;
        if token.bot_id() != bot_id {
            return Err(SealError::Token);
        }
        Ok(token)
    }

    /// The unguessable part of a token-free storage path: 128 bits of HMAC-SHA256 over the
    /// bot and the file, as 32 hex digits. The same file of the same bot always gets the same
    /// name, so a link handed out once stays valid.
    pub fn storage_name(&self, bot_id: BotId, file_unique_id: &str) -> String {
        let mut mac =
            <HmacSha256 as Mac>::new_from_slice(&self.storage_key).expect("hmac takes any key");
        mac.update(&bot_id.0.to_be_bytes());
        mac.update(file_unique_id.as_bytes());
        hex::encode(&mac.finalize().into_bytes()[..16])
    }

    /// The secret of a bot's `/hook/<bot_id>/<secret>` path, which Telegram also sends as
    /// `X-Telegram-Bot-Api-Secret-Token`: 128 bits of HMAC over the bot id, 32 hex digits.
    pub fn hook_secret(&self, bot_id: BotId) -> String {
        let mut mac =
            <HmacSha256 as Mac>::new_from_slice(&self.hook_key).expect("hmac takes any key");
        mac.update(&bot_id.0.to_be_bytes());
        hex::encode(&mac.finalize().into_bytes()[..16])
    }

    /// What stands for the bot's token secret in one call's records on the bus
    /// ([`crate::mask`]): `tpmask` and 128 bits of HMAC over the call id. Every role holding
    /// the key derives the same mark for a call; no client can forge it, so no text a client
    /// sends turns into the token when the mark is put back.
    pub fn token_mark(&self, call_id: crate::ids::CallId) -> String {
        let mut mac =
            <HmacSha256 as Mac>::new_from_slice(&self.mask_key).expect("hmac takes any key");
        mac.update(call_id.0.as_bytes());
        format!(
            "{}{}",
            crate::mask::MARK_PREFIX,
            hex::encode(&mac.finalize().into_bytes()[..16])
        )
    }

    /// Seals any secret (an MTProto session) for `bot_id`: it opens only with the same bot id.
    pub fn seal_bytes(&self, bot_id: BotId, clear: &[u8]) -> String {
        self.seal_for(Purpose::Session, bot_id, clear)
    }

    pub fn open_bytes(&self, bot_id: BotId, sealed: &str) -> Result<Vec<u8>, SealError> {
        self.open_for(Purpose::Session, bot_id, sealed)
    }

    fn purpose_key(&self, purpose: Purpose) -> &[u8; 32] {
        match purpose {
            Purpose::Session => &self.blob_key,
            Purpose::Request => &self.request_key,
        }
    }

    /// Seals `clear` for `bot_id` and one purpose: `base64url(nonce ‖ ciphertext ‖ tag)`,
    /// XChaCha20-Poly1305 ([`Sealer::open_for`] opens it). Made for every call, so the nonce
    /// comes from the thread's CSPRNG (seeded by the OS), not a system call each time.
    ///
    /// XChaCha20-Poly1305 is ChaCha20-Poly1305 under the subkey HChaCha20 makes of the key and
    /// the nonce's first 16 bytes, with its last 8 as the nonce: sealed that way through
    /// ring's assembly, a request of a few hundred bytes costs a third of what the
    /// `chacha20poly1305` crate's AVX2 code spends on it (set up for long messages), and the
    /// bytes are the same.
    pub fn seal_for(&self, purpose: Purpose, bot_id: BotId, clear: &[u8]) -> String {
        use ring::aead::{Aad, LessSafeKey, Nonce, UnboundKey, CHACHA20_POLY1305};
        let mut out = Vec::with_capacity(24 + clear.len() + 16);
        out.resize(24, 0);
        rand::RngCore::fill_bytes(&mut rand::thread_rng(), &mut out);
        let key = self.purpose_key(purpose);
        let mut subkey: [u8; 32] = chacha20::hchacha::<chacha20::cipher::consts::U10>(
            key.into(),
            chacha20::cipher::generic_array::GenericArray::from_slice(&out[..16]),
        )
        .into();
        let mut nonce = [0u8; 12];
        nonce[4..].copy_from_slice(&out[16..24]);
        out.extend_from_slice(clear);
        let key = LessSafeKey::new(
            UnboundKey::new(&CHACHA20_POLY1305, &subkey).expect("a ChaCha20 key is 32 bytes"),
        );
        // As the crate's cipher does when dropped (ring's key is not wiped: it lives no
        // longer than this call).
        zeroize::Zeroize::zeroize(&mut subkey);
        let tag = key
            .seal_in_place_separate_tag(
                Nonce::assume_unique_for_key(nonce),
                Aad::from(bot_id.0.to_be_bytes()),
                &mut out[24..],
            )
            .expect("sealing in memory cannot fail");
        out.extend_from_slice(tag.as_ref());
        URL_SAFE_NO_PAD.encode(out)
    }

    pub fn open_for(
        &self,
        purpose: Purpose,
        bot_id: BotId,
        sealed: &str,
    ) -> Result<Vec<u8>, SealError> {
        let raw = URL_SAFE_NO_PAD
            .decode(sealed.as_bytes())
            .map_err(|_| SealError::Malformed)?;
        if raw.len() < 24 + 16 {
            return Err(SealError::Malformed);
        }
        let (nonce, ct) = raw.split_at(24);
        let aad = bot_id.0.to_be_bytes();
        XChaCha20Poly1305::new(self.purpose_key(purpose).into())
            .decrypt(XNonce::from_slice(nonce), Payload { msg: ct, aad: &aad })
            .map_err(|_| SealError::Open)
    }

    /// 96 bits of HMAC-SHA256 over whatever the client sent as a token, shaped or not.
    pub fn fingerprint(&self, token: &str) -> TokenFingerprint {
        let mut mac =
            <HmacSha256 as Mac>::new_from_slice(&self.fingerprint_key).expect("hmac takes any key");
        mac.update(token.as_bytes());
        TokenFingerprint(hex::encode(&mac.finalize().into_bytes()[..12]))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const T: &str = "123456789:AAHdqTcvCH1vGWJxfSeofSAs0K5PALDsaw";

    /// What `seal_for` makes through ring is XChaCha20-Poly1305 as the `chacha20poly1305`
    /// crate makes and opens it (records sealed before, and after, open alike): the crate
    /// opens it at every length, with the same bytes under the same nonce, and refuses it
    /// changed anywhere.
    #[test]
    fn sealings_are_xchacha20_poly1305() {
        let key = SealKey::generate();
        let sealer = Sealer::new(&key);
        let crate_cipher = XChaCha20Poly1305::new((&key.derive("seal-request/v1")).into());
        for len in [0, 1, 15, 16, 17, 63, 64, 65, 255, 300, 1000, 4097] {
            let clear: Vec<u8> = (0..len).map(|i| (i * 7 + len) as u8).collect();
            let sealed = sealer.seal_for(Purpose::Request, BotId(42), &clear);
            let raw = URL_SAFE_NO_PAD.decode(&sealed).unwrap();
            assert_eq!(raw.len(), 24 + len + 16);
            let (nonce, ct) = raw.split_at(24);
            let aad = 42i64.to_be_bytes();
            let opened = crate_cipher
                .decrypt(XNonce::from_slice(nonce), Payload { msg: ct, aad: &aad })
                .expect("the crate opens it");
            assert_eq!(opened, clear);
            let again = crate_cipher
                .encrypt(
                    XNonce::from_slice(nonce),
                    Payload {
                        msg: &clear,
                        aad: &aad,
                    },
                )
                .unwrap();
            assert_eq!(again, ct, "the same bytes as the crate's sealing");
            for at in [0, 23, 24, raw.len() - 1] {
                let mut bad = raw.clone();
                bad[at] ^= 1;
                assert!(sealer
                    .open_for(Purpose::Request, BotId(42), &URL_SAFE_NO_PAD.encode(&bad))
                    .is_err());
            }
        }
        // A session sealing likewise, under its own key.
        let session = sealer.seal_bytes(BotId(1), b"auth key");
        assert_eq!(sealer.open_bytes(BotId(1), &session).unwrap(), b"auth key");
    }

    /// A sealing opens only for its bot and its purpose, and never shows the clear text.
    #[test]
    fn purpose_sealings_open_only_for_their_bot_and_purpose() {
        let sealer = Sealer::new(&SealKey::generate());
        let sealed = sealer.seal_for(Purpose::Request, BotId(7), b"secret_token=abc");
        assert!(!sealed.contains("abc"));
        assert_eq!(
            sealer
                .open_for(Purpose::Request, BotId(7), &sealed)
                .unwrap(),
            b"secret_token=abc"
        );
        assert!(matches!(
            sealer.open_for(Purpose::Request, BotId(8), &sealed),
            Err(SealError::Open)
        ));
        // The session key is another key: a request sealing is no session, and back.
        assert!(sealer.open_bytes(BotId(7), &sealed).is_err());
        let session = sealer.seal_bytes(BotId(7), b"session");
        assert!(sealer
            .open_for(Purpose::Request, BotId(7), &session)
            .is_err());
        assert!(matches!(
            sealer.open_for(Purpose::Request, BotId(7), "!!"),
            Err(SealError::Malformed)
        ));
    }

    #[test]
    fn storage_names_are_stable_and_distinct() {
        let s = Sealer::new(&SealKey::generate());
        let a = s.storage_name(BotId(1), "AgADdAwAAueoWEg");
        assert_eq!(a, s.storage_name(BotId(1), "AgADdAwAAueoWEg"));
        assert_eq!(a.len(), 32);
        assert_ne!(a, s.storage_name(BotId(2), "AgADdAwAAueoWEg"));
        assert_ne!(a, s.storage_name(BotId(1), "AgADdAwAAueoWEh"));
        let other = Sealer::new(&SealKey::generate());
        assert_ne!(a, other.storage_name(BotId(1), "AgADdAwAAueoWEg"));
    }

    #[test]
    fn sealed_bytes_open_only_for_their_bot() {
        let s = Sealer::new(&SealKey::generate());
        let sealed = s.seal_bytes(BotId(7), b"auth key bytes");
        assert_eq!(s.open_bytes(BotId(7), &sealed).unwrap(), b"auth key bytes");
        assert!(s.open_bytes(BotId(8), &sealed).is_err());
        assert!(s.open_bytes(BotId(7), "garbage").is_err());
    }

    #[test]
    fn seals_and_opens_without_leaking() {
        let s = Sealer::new(&SealKey::generate());
        let t = BotToken::parse(T).unwrap();
        let sealed = s.seal(&t);
        assert!(!sealed.0.contains("AAHdq"));
        assert_eq!(s.open(t.bot_id(), &sealed).unwrap().expose(), T);
    }

    #[test]
    fn refuses_other_key_and_other_bot() {
        let t = BotToken::parse(T).unwrap();
        let sealed = Sealer::new(&SealKey::generate()).seal(&t);
        let other = Sealer::new(&SealKey::generate());
        assert!(matches!(
            other.open(t.bot_id(), &sealed),
            Err(SealError::Open)
        ));
        let s = Sealer::new(&SealKey::from_hex(&"11".repeat(32)).unwrap());
        let sealed = s.seal(&t);
        assert!(s.open(BotId(42), &sealed).is_err());
        assert!(s.open(t.bot_id(), &SealedToken("!!".into())).is_err());
    }

    /// A token admitted twice is sealed once (the same sealing), and opens to itself; a
    /// sealing under another bot id does not open, remembered or not.
    #[test]
    fn admitted_tokens_are_remembered_and_still_bound_to_their_bot() {
        let s = Sealer::new(&SealKey::generate());
        let (fp, Some((token, sealed))) = s.admit(T) else {
            panic!("a well-formed token is admitted");
        };
        assert_eq!(fp, s.fingerprint(T));
        let (fp2, again) = s.admit(T);
        assert_eq!(fp2, fp);
        assert_eq!(again.map(|(_, s)| s), Some(sealed.clone()));
        assert_eq!(s.open(token.bot_id(), &sealed).unwrap().expose(), T);
        assert_eq!(s.open(token.bot_id(), &sealed).unwrap().expose(), T);
        assert!(s.open(BotId(token.bot_id().0 + 1), &sealed).is_err());
        let (bad_fp, none) = s.admit("not-a-token");
        assert!(none.is_none());
        assert_eq!(bad_fp, s.fingerprint("not-a-token"));
    }

    #[test]
    fn fingerprint_is_stable_per_key() {
        let k = SealKey::from_hex(&"22".repeat(32)).unwrap();
        let a = Sealer::new(&k).fingerprint(T);
        assert_eq!(a, Sealer::new(&k).fingerprint(T));
        assert_eq!(a.0.len(), 24);
        assert_ne!(a, Sealer::new(&SealKey::generate()).fingerprint(T));
    }

    #[test]
    fn key_parsing() {
        assert!(SealKey::from_hex("abcd").is_err());
        let k = SealKey::generate();
        assert_eq!(SealKey::from_hex(&k.to_hex()).unwrap().to_hex(), k.to_hex());
        assert_eq!(format!("{k:?}"), "SealKey(***)");
    }
}
