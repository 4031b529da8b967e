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
/// The first bytes, kept for what libmediainfo does not say (WebP sizes, Lottie).
const HEAD: usize = 4096;
/// Bytes given to libmediainfo before it has recognised a format, at most (past a small ID3v2
/// tag, which it reads before it says anything). It keeps a multiple of what it is given of a
/// file it cannot place: 2.4 times while reading (a 60 MB upload of random bytes cost 40 MB),
/// about 20 times when it has been given the whole file (1 MB of random bytes, 22 MB). Every
/// format it knows is recognised within the first kilobytes.
const UNRECOGNISED: u64 = 256 * 1024;
/// ID3v2 tags over this size are stepped over ([`id3`]).
const TAG_LIMIT: u64 = 256 * 1024;

/// Reads a file of `size` bytes whose bytes from an offset `open_at(offset)` gives.
pub async fn probe<R, F, Fut>(size: u64, mut open_at: F) -> Result<Metadata, MediaError>
where
    F: FnMut(u64) -> Fut,
    Fut: Future<Output = io::Result<R>>,
    R: AsyncRead + Unpin,
{
    let mut handle = Handle::new(size).ok_or(MediaError::Library)?;
    let mut reader = open_at(0).await?;
    let mut head = Vec::with_capacity(HEAD);
    let mut buf = vec![0u8; 64 * 1024];
    let mut tag = None;
    let (mut pos, mut read, mut seeks) = (0u64, 0u64, 0u32);
    let (mut accepted, mut unplaced, mut allowance) = (false, 0u64, UNRECOGNISED);
    loop {
        let n = reader.read(&mut buf).await?;
        if n == 0 {
            break;
        }
        if pos == head.len() as u64 && head.len() < HEAD {
            head.extend_from_slice(&buf[..n.min(HEAD - head.len())]);
        }
        if pos == 0 && tag.is_none() {
            match id3::read(&buf[..n]) {
                Some(t) if t.end > TAG_LIMIT && t.end < size => {
                    read += n as u64;
                    reader = open_at(t.end).await?;
                    handle.init(size, t.end);
                    pos = t.end;
                    tag = Some(t);
                    continue;
                }
                Some(t) => allowance = allowance.max(t.end + UNRECOGNISED),
                None => {}
            }
        }
        pos += n as u64;
        read += n as u64;
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
                if seeks > MAX_SEEKS || to >= size {
                    break;
                }
                reader = open_at(to).await?;
                handle.init(size, to);
                pos = to;
            }
        }
        if read >= READ_BUDGET {
            break;
        }
    }
    handle.finish();
    let mut m = read_fields(&mut handle, &head, size);
    if let Some(t) = tag {
        m.title = m.title.or(t.title);
        m.performer = m.performer.or(t.performer);
    }
    Ok(m)
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

    /// Bytes from memory, counting what is read.
    struct Counted<'a> {
        rest: &'a [u8],
        read: &'a AtomicU64,
    }

    impl AsyncRead for Counted<'_> {
        fn poll_read(
            mut self: Pin<&mut Self>,
            _: &mut Context<'_>,
            buf: &mut tokio::io::ReadBuf<'_>,
        ) -> Poll<io::Result<()>> {
            let k = buf.remaining().min(self.rest.len());
            buf.put_slice(&self.rest[..k]);
            self.rest = &self.rest[k..];
            self.read.fetch_add(k as u64, Ordering::Relaxed);
            Poll::Ready(Ok(()))
        }
    }

    /// The metadata of `bytes`, and how many of them were read.
    async fn probe_counted(bytes: &[u8]) -> (Metadata, u64) {
        let read = AtomicU64::new(0);
        let m = probe(bytes.len() as u64, |at| {
            let rest = bytes.get(at as usize..).unwrap_or_default();
            std::future::ready(Ok(Counted { rest, read: &read }))
        })
        .await
        .unwrap();
        (m, read.into_inner())
    }

    /// What libmediainfo cannot place it is given no more than a quarter megabyte of: it keeps
    /// a multiple of what it is given.
    #[tokio::test]
    async fn an_unrecognised_file_is_given_up_after_a_quarter_megabyte() {
        let mut state: u64 = 0x9e3779b97f4a7c15;
        let bytes: Vec<u8> = (0..1024 * 1024)
            .flat_map(|_| {
                state ^= state << 13;
                state ^= state >> 7;
                state ^= state << 17;
                state.to_le_bytes()
            })
            .collect();
        let (m, read) = probe_counted(&bytes).await;
        assert_eq!(detect(&m), Kind::Document);
        assert!(
            read <= (256 + 64) * 1024,
            "{read} of {} bytes read",
            bytes.len()
        );
    }

    /// A song with a 1 MB cover: the tag is stepped over, its title and performer kept, and
    /// the sound read as without the cover.
    #[tokio::test]
    async fn a_large_id3_tag_is_stepped_over_and_its_text_kept() {
        let path = format!("{}/testdata/audio.mp3", env!("CARGO_MANIFEST_DIR"));
        let song = std::fs::read(path).unwrap();
        let sound = &song[id3::read(&song).unwrap().end as usize..];
        let frames: [(&[u8], Vec<u8>); 2] = [
            (b"TIT2", b"\x03Big Cover".to_vec()),
            (b"TPE1", b"\x03The Band".to_vec()),
        ];
        let with = |picture| [id3::tests::tag(3, &frames, picture), sound.to_vec()].concat();
        let (small, _) = probe_counted(&with(100)).await;
        // Under the limit, libmediainfo reads the tag itself, however long it takes to say
        // what follows it.
        let (kept, _) = probe_counted(&with(250 * 1024)).await;
        assert_eq!(
            (&kept.title, kept.duration_ms),
            (&small.title, small.duration_ms)
        );
        let (large, read) = probe_counted(&with(1024 * 1024)).await;
        assert_eq!(large.title.as_deref(), Some("Big Cover"));
        assert_eq!(large.performer.as_deref(), Some("The Band"));
        assert_eq!(small.title, large.title);
        assert_eq!(detect(&large), Kind::Audio);
        assert_eq!(large.duration_ms, small.duration_ms);
        assert!(read < 200 * 1024, "{read} bytes read");
    }
}
