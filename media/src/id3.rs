//! A large ID3v2 tag at the start of a file: where it ends, and the title and performer it
//! holds in its first bytes.
//!
//! libmediainfo keeps about 30 times a tag's size while it reads one (a 1 MB cover picture
//! cost 37 MB, a 5 MB one 150 MB), so a tag over [`crate::TAG_LIMIT`] is stepped over and its
//! two text frames the Bot API wants are read here. Text frames come before pictures in the
//! files taggers write, so the first bytes of the tag are enough.

/// What the tag at the start of `head` says, when it is a tag worth stepping over.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Tag {
    /// The offset of the first byte after the tag (its footer included).
    pub end: u64,
    pub title: Option<String>,
    pub performer: Option<String>,
}

/// The tag `head` starts with; `None` without one. `head` is the first bytes of the file.
pub fn read(head: &[u8]) -> Option<Tag> {
    if head.len() < 10 || &head[..3] != b"ID3" {
        return None;
    }
    let (major, flags) = (head[3], head[5]);
    if !(2..=4).contains(&major) {
        return None;
    }
    let size = synchsafe(&head[6..10])?;
    let footer = if major == 4 && flags & 0x10 != 0 {
        10
    } else {
        0
    };
    let mut tag = Tag {
        end: 10 + size + footer,
        ..Tag::default()
    };
    // An unsynchronised tag (or, in v2.2, a compressed one) is stepped over without its text:
    // rare, and its frames are not where a plain walk expects them.
    let unreadable = flags & 0x80 != 0 || (major == 2 && flags & 0x40 != 0);
    let frames = head.get(10..head.len().min(10 + size as usize));
    if let (false, Some(frames)) = (unreadable, frames) {
        let frames = if major > 2 && flags & 0x40 != 0 {
            extended_header(major, frames).and_then(|skip| frames.get(skip..))
        } else {
            Some(frames)
        };
        if let Some(frames) = frames {
            walk(major, frames, &mut tag);
        }
    }
    Some(tag)
}

/// How long the extended header `frames` starts with is: in v2.3 its size does not count
/// itself, in v2.4 it does (and is synchsafe).
fn extended_header(major: u8, frames: &[u8]) -> Option<usize> {
    let bytes = frames.get(..4)?;
    let n = if major == 3 {
        u64::from(u32::from_be_bytes(bytes.try_into().ok()?)) + 4
    } else {
        synchsafe(bytes)?
    };
    usize::try_from(n).ok()
}

/// Whether a frame can start at `at` of `frames`: an ID of capitals and digits, padding, the
/// end, or past what is at hand (which cannot be told).
fn lands(frames: &[u8], at: usize, id_len: usize) -> bool {
    match frames.get(at..) {
        None | Some([]) | Some([0, ..]) => true,
        Some(rest) => rest
            .iter()
            .take(id_len)
            .all(|b| b.is_ascii_uppercase() || b.is_ascii_digit()),
    }
}

fn walk(major: u8, mut frames: &[u8], tag: &mut Tag) {
    let (id_len, header) = if major == 2 { (3, 6) } else { (4, 10) };
    while frames.len() >= header && frames[0] != 0 {
        let id = &frames[..id_len];
        let plain = |b: &[u8]| b.iter().fold(0usize, |acc, &x| acc << 8 | x as usize);
        let size = match major {
            2 => plain(&frames[3..6]),
            3 => plain(&frames[4..8]),
            // v2.4 sizes are synchsafe, but some taggers (iTunes) write plain ones: the reading
            // that lands on a next frame wins.
            _ => {
                let safe = synchsafe(&frames[4..8]).and_then(|s| usize::try_from(s).ok());
                let written = plain(&frames[4..8]);
                match safe {
                    Some(s) if lands(frames, header.saturating_add(s), id_len) => s,
                    _ if lands(frames, header.saturating_add(written), id_len) => written,
                    Some(s) => s,
                    None => return,
                }
            }
        };
        // Compressed, encrypted, grouped or unsynchronised frames are not plain text.
        let text_frame = match major {
            2 => true,
            3 => frames[9] & 0xe0 == 0,
            _ => frames[9] & 0x4f == 0,
        };
        let Some(body) = header
            .checked_add(size)
            .and_then(|end| frames.get(header..end))
        else {
            return;
        };
        if text_frame {
            match id {
                b"TIT2" | b"TT2" => tag.title = tag.title.take().or_else(|| text(body)),
                b"TPE1" | b"TP1" => tag.performer = tag.performer.take().or_else(|| text(body)),
                _ => {}
            }
        }
        frames = &frames[header + body.len()..];
    }
}

/// A text frame's first value, in its declared encoding.
fn text(body: &[u8]) -> Option<String> {
    let (&encoding, bytes) = body.split_first()?;
    let s = match encoding {
        0 => bytes
            .iter()
            .take_while(|&&b| b != 0)
            .map(|&b| b as char)
            .collect(),
        1 | 2 => {
            let mut units: Vec<u16> = bytes
                .chunks_exact(2)
                .map(|c| u16::from_be_bytes([c[0], c[1]]))
                .take_while(|&u| u != 0)
                .collect();
            // UTF-16 with a byte order mark (1), or big-endian without one (2).
            match units.first() {
                Some(0xfffe) => {
                    units.remove(0);
                    units.iter_mut().for_each(|u| *u = u.swap_bytes());
                }
                Some(0xfeff) => {
                    units.remove(0);
                }
                _ => {}
            }
            String::from_utf16_lossy(&units)
        }
        3 => {
            let end = bytes.iter().position(|&b| b == 0).unwrap_or(bytes.len());
            String::from_utf8_lossy(&bytes[..end]).into_owned()
        }
        _ => return None,
    };
    let s = s.trim();
    (!s.is_empty()).then(|| s.to_owned())
}

/// A 28-bit size written 7 bits a byte; `None` when a byte has its top bit set.
fn synchsafe(b: &[u8]) -> Option<u64> {
    b.iter()
        .try_fold(0u64, |acc, &x| (x < 0x80).then_some(acc << 7 | x as u64))
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    fn frame(major: u8, id: &[u8], body: &[u8]) -> Vec<u8> {
        let mut f = id.to_vec();
        let n = body.len() as u32;
        match major {
            2 => f.extend_from_slice(&n.to_be_bytes()[1..]),
            3 => f.extend_from_slice(&n.to_be_bytes()),
            _ => f.extend_from_slice(&synchsafe_bytes(body.len())),
        }
        if major > 2 {
            f.extend_from_slice(&[0, 0]);
        }
        f.extend_from_slice(body);
        f
    }

    /// An ID3v2 tag: the given frames, then a picture frame of `picture` bytes.
    pub(crate) fn tag(major: u8, frames: &[(&[u8], Vec<u8>)], picture: usize) -> Vec<u8> {
        let mut body = Vec::new();
        for (id, b) in frames {
            body.extend(frame(major, id, b));
        }
        let pic_id: &[u8] = if major == 2 { b"PIC" } else { b"APIC" };
        body.extend(frame(major, pic_id, &vec![0x55; picture]));
        around(major, 0, &body)
    }

    /// `n` written 7 bits a byte.
    fn synchsafe_bytes(n: usize) -> [u8; 4] {
        [21, 14, 7, 0].map(|shift| (n >> shift) as u8 & 0x7f)
    }

    #[test]
    fn text_frames_in_every_version_and_encoding() {
        let utf16: Vec<u8> = std::iter::once(1u8)
            .chain([0xff, 0xfe])
            .chain("Ünïcode".encode_utf16().flat_map(u16::to_le_bytes))
            .collect();
        for major in [2u8, 3, 4] {
            let (t, p): (&[u8], &[u8]) = if major == 2 {
                (b"TT2", b"TP1")
            } else {
                (b"TIT2", b"TPE1")
            };
            let bytes = tag(
                major,
                &[(t, b"\x03Titl\xc3\xa9\0".to_vec()), (p, utf16.clone())],
                100,
            );
            let got = read(&bytes).unwrap();
            assert_eq!(got.end, bytes.len() as u64, "v2.{major}");
            assert_eq!(got.title.as_deref(), Some("Titlé"), "v2.{major}");
            assert_eq!(got.performer.as_deref(), Some("Ünïcode"), "v2.{major}");
        }
        let latin1 = tag(3, &[(b"TIT2", b"\x00Caf\xe9".to_vec())], 0);
        assert_eq!(read(&latin1).unwrap().title.as_deref(), Some("Café"));
        let be = tag(4, &[(b"TPE1", b"\x02\x00A\x00B".to_vec())], 0);
        assert_eq!(read(&be).unwrap().performer.as_deref(), Some("AB"));
    }

    /// A tag header (`flags`) around `body`.
    fn around(major: u8, flags: u8, body: &[u8]) -> Vec<u8> {
        let mut t = vec![b'I', b'D', b'3', major, 0, flags];
        t.extend_from_slice(&synchsafe_bytes(body.len()));
        t.extend_from_slice(body);
        t
    }

    #[test]
    fn extended_headers_are_stepped_over() {
        let title = frame(3, b"TIT2", b"\x03Song");
        // v2.3: a size (6) that does not count itself, flags, the padding size.
        let v3 = around(
            3,
            0x40,
            &[&[0, 0, 0, 6, 0, 0, 0, 0, 0, 0][..], &title].concat(),
        );
        assert_eq!(read(&v3).unwrap().title.as_deref(), Some("Song"));
        // v2.4: a synchsafe size (6) that counts itself, one flag byte, no flags.
        let title = frame(4, b"TIT2", b"\x03Song");
        let v4 = around(4, 0x40, &[&[0, 0, 0, 6, 1, 0][..], &title].concat());
        assert_eq!(read(&v4).unwrap().title.as_deref(), Some("Song"));
    }

    /// iTunes writes v2.4 frame sizes as plain integers: read either way, the one that lands on
    /// the next frame is taken.
    #[test]
    fn plain_sizes_in_a_v24_tag_are_understood() {
        let mut other = b"TXXX".to_vec();
        other.extend_from_slice(&300u32.to_be_bytes());
        other.extend_from_slice(&[0, 0]);
        other.extend_from_slice(&[b'x'; 300]);
        let body = [other, frame(4, b"TIT2", b"\x03Song")].concat();
        assert_eq!(
            read(&around(4, 0, &body)).unwrap().title.as_deref(),
            Some("Song")
        );
    }

    #[test]
    fn anything_else_is_not_a_tag_and_nothing_panics() {
        assert_eq!(read(b"RIFF....WAVE"), None);
        assert_eq!(read(b"ID3\x05\0\0\0\0\0\x10"), None);
        assert_eq!(read(b"ID3\x03\0\0\x80\0\0\0"), None);
        // Cut anywhere, or with frame sizes past the end: an end, perhaps no text.
        let bytes = tag(3, &[(b"TIT2", b"\x03Song".to_vec())], 50);
        for cut in 0..bytes.len() {
            let _ = read(&bytes[..cut]);
        }
        let mut lying = bytes.clone();
        lying[14..18].copy_from_slice(&u32::MAX.to_be_bytes());
        assert_eq!(read(&lying).unwrap().title, None);
    }
}
