//! AES-256-IGE, as MTProto 2.0 uses it, over one cipher backend per buffer.
//!
//! grammers-crypto's IGE asks the cipher for one block at a time, and on CPUs with vector AES
//! the `aes` crate then sets up its wide backend (all round keys) for every 16 bytes: 6–10 ms a
//! MiB, the sandbox's largest cost per uploaded byte. Taking the backend once per buffer gives
//! the same bytes at about a tenth of that, so the sandbox is not what limits an upload.

use aes::cipher::consts::U16;
use aes::cipher::{
    Array, BlockCipherDecBackend, BlockCipherDecClosure, BlockCipherDecrypt, BlockCipherEncBackend,
    BlockCipherEncClosure, BlockCipherEncrypt, BlockSizeUser, KeyInit,
};

type Block = Array<u8, U16>;

fn halves(iv: &[u8; 32]) -> ([u8; 16], [u8; 16]) {
    let mut a = [0u8; 16];
    let mut b = [0u8; 16];
    a.copy_from_slice(&iv[..16]);
    b.copy_from_slice(&iv[16..]);
    (a, b)
}

fn xor(a: &[u8], b: &[u8; 16]) -> Block {
    let mut out = Block::default();
    for (o, (x, y)) in out.iter_mut().zip(a.iter().zip(b)) {
        *o = x ^ y;
    }
    out
}

/// Encrypts `buf` in place (its length a multiple of 16).
pub fn encrypt(buf: &mut [u8], key: &[u8; 32], iv: &[u8; 32]) {
    assert_eq!(buf.len() % 16, 0, "IGE works on whole blocks");
    aes::Aes256Enc::new(key.into()).encrypt_with_backend(Encrypt { buf, iv });
}

/// Decrypts `buf` in place (its length a multiple of 16).
pub fn decrypt(buf: &mut [u8], key: &[u8; 32], iv: &[u8; 32]) {
    assert_eq!(buf.len() % 16, 0, "IGE works on whole blocks");
    aes::Aes256Dec::new(key.into()).decrypt_with_backend(Decrypt { buf, iv });
}

struct Encrypt<'a> {
    buf: &'a mut [u8],
    iv: &'a [u8; 32],
}

impl BlockSizeUser for Encrypt<'_> {
    type BlockSize = U16;
}

impl BlockCipherEncClosure for Encrypt<'_> {
    fn call<B: BlockCipherEncBackend<BlockSize = U16>>(self, backend: &B) {
        // IGE: c = E(p ^ c_prev) ^ p_prev, starting from the IV's two halves.
        let (mut c_prev, mut p_prev) = halves(self.iv);
        for chunk in self.buf.chunks_exact_mut(16) {
            let mut p = [0u8; 16];
            p.copy_from_slice(chunk);
            let mut block = xor(&p, &c_prev);
            backend.encrypt_block((&mut block).into());
            let c = xor(&block, &p_prev);
            chunk.copy_from_slice(&c);
            c_prev.copy_from_slice(&c);
            p_prev = p;
        }
    }
}

struct Decrypt<'a> {
    buf: &'a mut [u8],
    iv: &'a [u8; 32],
}

impl BlockSizeUser for Decrypt<'_> {
    type BlockSize = U16;
}

impl BlockCipherDecClosure for Decrypt<'_> {
    fn call<B: BlockCipherDecBackend<BlockSize = U16>>(self, backend: &B) {
        // IGE inverted: p = D(c ^ p_prev) ^ c_prev.
        let (mut c_prev, mut p_prev) = halves(self.iv);
        for chunk in self.buf.chunks_exact_mut(16) {
            let mut c = [0u8; 16];
            c.copy_from_slice(chunk);
            let mut block = xor(&c, &p_prev);
            backend.decrypt_block((&mut block).into());
            let p = xor(&block, &c_prev);
            chunk.copy_from_slice(&p);
            p_prev.copy_from_slice(&p);
            c_prev = c;
        }
    }
}

#[cfg(test)]
mod tests {
    /// The same bytes as grammers' IGE (what the client runs), both ways, on buffers of a
    /// block, a few blocks and a whole upload part.
    #[test]
    fn matches_grammers() {
        let key: [u8; 32] = std::array::from_fn(|i| (i * 7 + 1) as u8);
        let iv: [u8; 32] = std::array::from_fn(|i| (i * 13 + 5) as u8);
        for len in [16, 48, 512 * 1024] {
            let mut x = 0x9E37_79B9_7F4A_7C15u64 ^ len as u64;
            let plain: Vec<u8> = (0..len)
                .map(|_| {
                    x ^= x << 13;
                    x ^= x >> 7;
                    x ^= x << 17;
                    x as u8
                })
                .collect();
            let mut theirs = plain.clone();
            grammers_crypto::aes::ige_encrypt(&mut theirs, &key, &iv);
            let mut ours = plain.clone();
            super::encrypt(&mut ours, &key, &iv);
            assert_eq!(ours, theirs, "encrypting {len} bytes");
            super::decrypt(&mut ours, &key, &iv);
            assert_eq!(ours, plain, "decrypting {len} bytes");
        }
    }
}
