//! What a media file is: its metadata, read by libmediainfo, and the Telegram kind it should be
//! sent as (ENHANCED.md, "Files: uploads": metadata filling and `sendFile`'s rules).
//!
//! The file is read through a caller's "open at offset" function, so it can live anywhere (a
//! blob folder, S3): the parser reads the start, jumps where it asks (an mp4 index at the end),
//! and stops once it knows enough, within a read budget — a 2 GB upload costs a few MB of reads.

mod ffi;
mod id3;
mod kind;
mod webp;

pub use kind::{detect, Kind};

use ffi::{Handle, Next, STREAM_AUDIO, STREAM_GENERAL, STREAM_IMAGE, STREAM_VIDEO};
use std::future::Future;
use std::io;
use tokio::io::{AsyncRead, AsyncReadExt};

// On the bus between the media and send stages, so they live in `schemas`.
pub use schemas::media::{Image, Metadata, Video};

#[derive(Debug, thiserror::Error)]
pub enum MediaError {
    #[error("libmediainfo could not make a handle")]
    Library,
    #[error("reading the file: {0}")]
    Io(#[from] io::Error),
}

/// At most this much of a file is read, however it is laid out.
const READ_BUDGET: u64 = 32 * 1024 * 1024;
const MAX_SEEKS: u32 = 16;
/// What is read at a time; the first piece is read whole, whatever the reader's own pieces.
const CHUNK: usize = 64 * 1024;
/// The first bytes, kept for what libmediainfo does not say (WebP sizes, Lottie).
const HEAD: usize = 4096;
/// Bytes given to libmediainfo before it has recognised a format, at most (past a small ID3v2
/// tag, which it reads before it says anything). It keeps a multiple of what it is given of a
/// file it cannot place: 2.4 times while reading (a 60 MB upload of random bytes cost 40 MB),
/// about 20 times when it has been given the whole file (1 MB of random bytes, 22 MB). Every
/// format it knows is recognised within the first kilobytes, but one:
const UNRECOGNISED: u64 = 256 * 1024;
/// MPEG-TS is recognised only once its first program table has come by, which may be half a
/// second of the stream in: a file that starts as one is given this much.
const UNRECOGNISED_TS: u64 = 4 * 1024 * 1024;
/// ID3v2 tags over this size are stepped over ([`id3`]).
const TAG_LIMIT: u64 = 256 * 1024;

/// Reads a file of `size` bytes whose bytes from an offset `open_at(offset)` gives.
pub async fn probe<R, F, Fut>(size: u64, mut open_at: F) -> Result<Metadata, MediaError>
where
    F: FnMut(u64) -> Fut,
    Fut: Future<Output = io::Result<R>>,
    R: AsyncRead + Unpin,
{
    let mut reader = open_at(0).await?;
    let mut buf = vec![0u8; CHUNK];
    let mut n = fill(&mut reader, &mut buf).await?;
    let head = buf[..n.min(HEAD)].to_vec();
    let tag = id3::read(&buf[..n]);
    // libmediainfo is shown the file from `base` on: past a tag too large to give it.
    let base = tag
        .as_ref()
        .filter(|t| t.end > TAG_LIMIT && t.end < size)
        .map_or(0, |t| t.end);
    let allowance = match &tag {
        Some(t) if t.end <= TAG_LIMIT => t.end + UNRECOGNISED,
        _ if is_transport_stream(&buf[..n]) => UNRECOGNISED_TS,
        _ => UNRECOGNISED,
    };
    let skipped = tag.filter(|_| base > 0);
    let mut handle = Handle::new(size - base).ok_or(MediaError::Library)?;
    let mut read = n as u64;
    if base > 0 {
        reader = open_at(base).await?;
        n = reader.read(&mut buf).await?;
        read += n as u64;
    }
    let (mut seeks, mut accepted, mut unplaced) = (0u32, false, 0u64);
    while n > 0 {
        let (next, recognised) = handle.feed(&buf[..n]);
        accepted |= recognised;
        if !accepted {
            unplaced += n as u64;
            if unplaced >= allowance {
                break;
            }
        }
        match next {
            Next::Done => break,
            Next::More => {}
            Next::Seek(to) => {
                seeks += 1;
                // The offset is the parser's, from the file's bytes: any value may come.
                if seeks > MAX_SEEKS || base.saturating_add(to) >= size {
                    break;
                }
                reader = open_at(base + to).await?;
                handle.init(size - base, to);
            }
        }
        if read >= READ_BUDGET {
            break;
        }
        n = reader.read(&mut buf).await?;
        read += n as u64;
    }
    handle.finish();
    let mut m = read_fields(&mut handle, &head, size);
    // Past the tag libmediainfo may still find an ID3v1 tag at the end: 30 Latin-1
    // characters at most, so the stepped-over tag's text comes first.
    if let Some(t) = skipped {
        m.title = t.title.or(m.title);
        m.performer = t.performer.or(m.performer);
    }
    Ok(m)
}

/// Reads until `buf` is full or the reader ends; how much was read.
async fn fill<R: AsyncRead + Unpin>(reader: &mut R, buf: &mut [u8]) -> io::Result<usize> {
    let mut n = 0;
    while n < buf.len() {
        match reader.read(&mut buf[n..]).await? {
            0 => break,
            k => n += k,
        }
    }
    Ok(n)
}

/// Eight MPEG-TS packets in a row (188 bytes; 192 with a timecode, 204 with error correction).
fn is_transport_stream(b: &[u8]) -> bool {
    [188usize, 192, 204].iter().any(|&packet| {
        (0..packet).any(|first| (0..8).all(|k| b.get(first + k * packet) == Some(&0x47)))
    })
}

/// Reads a file in memory (tests, small files).
pub async fn probe_bytes(bytes: &[u8]) -> Result<Metadata, MediaError> {
    probe(bytes.len() as u64, |at| {
        let rest = bytes.get(at as usize..).unwrap_or_default();
        std::future::ready(Ok(rest))
    })
    .await
}

fn read_fields(h: &mut Handle, head: &[u8], size: u64) -> Metadata {
    let num = |s: Option<String>| -> Option<f64> { s?.split(' ').next()?.parse::<f64>().ok() };
    let ms = |s: Option<String>| num(s).filter(|v| *v > 0.0).map(|v| v.round() as u64);
    let px = |s: Option<String>| num(s).map(|v| v as u32).unwrap_or(0);
    let mut m = Metadata {
        size,
        format: h.get(STREAM_GENERAL, "Format"),
        format_profile: h.get(STREAM_GENERAL, "Format_Profile"),
        duration_ms: ms(h.get(STREAM_GENERAL, "Duration")),
        title: h.get(STREAM_GENERAL, "Title"),
        performer: h.get(STREAM_GENERAL, "Performer"),
        streamable: h.get(STREAM_GENERAL, "IsStreamable").map(|v| v == "Yes"),
        ..Metadata::default()
    };
    if h.count(STREAM_VIDEO) > 0 {
        m.video = Some(Video {
            format: h.get(STREAM_VIDEO, "Format").unwrap_or_default(),
            width: px(h.get(STREAM_VIDEO, "Width")),
            height: px(h.get(STREAM_VIDEO, "Height")),
            duration_ms: ms(h.get(STREAM_VIDEO, "Duration")),
        });
    }
    if h.count(STREAM_AUDIO) > 0 {
        m.audio = Some(h.get(STREAM_AUDIO, "Format").unwrap_or_default());
    }
    if h.count(STREAM_IMAGE) > 0 {
        m.image = Some(Image {
            format: m.format.clone().unwrap_or_default(),
            width: px(h.get(STREAM_IMAGE, "Width")),
            height: px(h.get(STREAM_IMAGE, "Height")),
            alpha: false,
        });
    }
    // libmediainfo 23.04 names a WebP but not its size.
    if let Some(w) = webp::read(head) {
        m.format = Some("WebP".into());
        m.image = Some(Image {
            format: "WebP".into(),
            width: w.width,
            height: w.height,
            alpha: w.alpha,
        });
    }
    m.lottie = is_lottie(head);
    m
}

/// A `.tgs`: gzip whose content starts as Lottie JSON with Telegram's `"tgs"` marker.
fn is_lottie(head: &[u8]) -> bool {
    use std::io::Read;
    if !head.starts_with(&[0x1f, 0x8b]) {
        return false;
    }
    let mut out = [0u8; 256];
    let mut d = flate2::read::GzDecoder::new(head);
    let mut n = 0;
    while n < out.len() {
        match d.read(&mut out[n..]) {
            Ok(0) | Err(_) => break,
            Ok(k) => n += k,
        }
    }
    let text = String::from_utf8_lossy(&out[..n]);
    text.trim_start().starts_with('{') && text.contains("\"tgs\"")
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::pin::Pin;
    use std::sync::atomic::{AtomicU64, Ordering};
    use std::task::{Context, Poll};

    /// Bytes from memory in pieces of at most `piece`, counting what is read.
    struct Counted<'a> {
        rest: &'a [u8],
        piece: usize,
        read: &'a AtomicU64,
    }

    impl AsyncRead for Counted<'_> {
        fn poll_read(
            mut self: Pin<&mut Self>,
            _: &mut Context<'_>,
            buf: &mut tokio::io::ReadBuf<'_>,
        ) -> Poll<io::Result<()>> {
            let k = buf.remaining().min(self.rest.len()).min(self.piece);
            buf.put_slice(&self.rest[..k]);
            self.rest = &self.rest[k..];
            self.read.fetch_add(k as u64, Ordering::Relaxed);
            Poll::Ready(Ok(()))
        }
    }

    /// The metadata of `bytes` read in pieces of at most `piece`, and how many were read.
    async fn probe_counted(bytes: &[u8], piece: usize) -> (Metadata, u64) {
        let read = AtomicU64::new(0);
        let m = probe(bytes.len() as u64, |at| {
            let rest = bytes.get(at as usize..).unwrap_or_default();
            std::future::ready(Ok(Counted {
                rest,
                piece,
                read: &read,
            }))
        })
        .await
        .unwrap();
        (m, read.into_inner())
    }

    fn random(len: usize) -> Vec<u8> {
        let mut state: u64 = 0x9e3779b97f4a7c15;
        (0..len.div_ceil(8))
            .flat_map(|_| {
                state ^= state << 13;
                state ^= state >> 7;
                state ^= state << 17;
                state.to_le_bytes()
            })
            .take(len)
            .collect()
    }

    /// What libmediainfo cannot place it is given no more than a quarter megabyte of: it keeps
    /// a multiple of what it is given. A tag header that claims more changes nothing.
    #[tokio::test]
    async fn an_unrecognised_file_is_given_up_after_a_quarter_megabyte() {
        let bytes = random(8 << 20);
        let mut claimed = b"ID3\x04\0\0\x7f\x7f\x7f\x7f".to_vec();
        claimed.extend_from_slice(&bytes);
        for bytes in [bytes, claimed] {
            let (m, read) = probe_counted(&bytes, usize::MAX).await;
            assert_eq!(detect(&m), Kind::Document);
            assert!(read <= (256 + 64) * 1024, "{read} bytes read");
        }
    }

    /// The sound of `testdata/audio.mp3` without its tag and without its first frame, which
    /// is LAME's Info header: plain CBR frames (MPEG-1 layer III, 32 kbit/s, 44.1 kHz), whose
    /// duration libmediainfo works out from the stream's size.
    fn plain_frames() -> Vec<u8> {
        let path = format!("{}/testdata/audio.mp3", env!("CARGO_MANIFEST_DIR"));
        let song = std::fs::read(path).unwrap();
        let sound = &song[id3::read(&song).unwrap().end as usize..];
        assert_eq!(&sound[..2], &[0xff, 0xfb], "MPEG-1 layer III");
        let bitrate = [
            0, 32, 40, 48, 56, 64, 80, 96, 112, 128, 160, 192, 224, 256, 320,
        ][(sound[2] >> 4) as usize];
        let first = 144 * bitrate * 1000 / 44100 + ((sound[2] >> 1) & 1) as usize;
        assert!(sound[..first].windows(4).any(|w| w == b"Info"));
        sound[first..].to_vec()
    }

    /// A song with a 1 MB cover: the tag is stepped over, its title and performer kept over an
    /// ID3v1 tag's, and the sound read as without the cover (its duration from the sound's
    /// size, not the file's), however the reader splits the file.
    #[tokio::test]
    async fn a_large_id3_tag_is_stepped_over_and_its_text_kept() {
        let sound = plain_frames();
        let frames: [(&[u8], Vec<u8>); 2] = [
            (b"TIT2", b"\x03Big Cover".to_vec()),
            (b"TPE1", b"\x03The Band".to_vec()),
        ];
        let mut v1 = b"TAG".to_vec();
        // Title, artist and album, 30 bytes each; then the year; comment and genre left 0.
        for field in [&b"Big Co"[..], b"The B", b""] {
            let mut f = field.to_vec();
            f.resize(30, 0);
            v1.extend(f);
        }
        v1.extend_from_slice(b"2026");
        v1.resize(128, 0);
        let with = |picture| {
            [
                id3::tests::tag(3, &frames, picture),
                sound.clone(),
                v1.clone(),
            ]
            .concat()
        };
        let (small, _) = probe_counted(&with(100), usize::MAX).await;
        assert!(small.duration_ms.is_some_and(|d| d > 1000), "{small:?}");
        // Under the limit, libmediainfo reads the tag itself.
        let (kept, _) = probe_counted(&with(250 * 1024), usize::MAX).await;
        // (its estimate of a CBR stream's duration differs by a frame or so with what it read)
        assert_eq!(kept.title, small.title);
        let (k, s) = (kept.duration_ms.unwrap(), small.duration_ms.unwrap());
        assert!(k.abs_diff(s) * 20 < s, "{k} ms against {s} ms");
        for piece in [usize::MAX, 1000, 7] {
            let (large, read) = probe_counted(&with(1024 * 1024), piece).await;
            assert_eq!(
                large.title.as_deref(),
                Some("Big Cover"),
                "pieces of {piece}"
            );
            assert_eq!(large.performer.as_deref(), Some("The Band"));
            assert_eq!(detect(&large), Kind::Audio);
            assert_eq!(large.duration_ms, small.duration_ms, "pieces of {piece}");
            assert!(read < 200 * 1024, "{read} bytes read");
        }
    }
}
