//! The size of a WebP picture from its first chunk (RIFF container; VP8, VP8L or VP8X).

pub struct WebP {
    pub width: u32,
    pub height: u32,
    pub alpha: bool,
}

pub fn read(b: &[u8]) -> Option<WebP> {
    if b.len() < 30 || &b[0..4] != b"RIFF" || &b[8..12] != b"WEBP" {
        return None;
    }
    let d = &b[20..];
    let le16 = |i: usize| u32::from(u16::from_le_bytes([d[i], d[i + 1]]));
    let le24 = |i: usize| u32::from_le_bytes([d[i], d[i + 1], d[i + 2], 0]);
    match &b[12..16] {
        b"VP8 " if d[3..6] == [0x9d, 0x01, 0x2a] => Some(WebP {
            width: le16(6) & 0x3fff,
            height: le16(8) & 0x3fff,
            alpha: false,
        }),
        b"VP8L" if d[0] == 0x2f => {
            let bits = u32::from_le_bytes([d[1], d[2], d[3], d[4]]);
            Some(WebP {
                width: (bits & 0x3fff) + 1,
                height: ((bits >> 14) & 0x3fff) + 1,
                alpha: bits & (1 << 28) != 0,
            })
        }
        b"VP8X" => Some(WebP {
            width: le24(4) + 1,
            height: le24(7) + 1,
            alpha: d[0] & 0x10 != 0,
        }),
        _ => None,
    }
}
