//! What a media file is: its metadata, read by libmediainfo, and the Telegram kind it should be
//! sent as (ENHANCED.md, "Files: uploads": metadata filling and `sendFile`'s rules).
//!
//! The file is read through a caller's "open at offset" function, so it can live anywhere (a
//! blob folder, S3): the parser reads the start, jumps where it asks (an mp4 index at the end),
//! and stops once it knows enough, within a read budget — a 2 GB upload costs a few MB of reads.

mod ffi;
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
    let (mut pos, mut read, mut seeks) = (0u64, 0u64, 0u32);
    loop {
        let n = reader.read(&mut buf).await?;
        if n == 0 {
            break;
        }
        if pos == head.len() as u64 && head.len() < HEAD {
            head.extend_from_slice(&buf[..n.min(HEAD - head.len())]);
        }
        pos += n as u64;
        read += n as u64;
        match handle.feed(&buf[..n]) {
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
    Ok(read_fields(&mut handle, &head, size))
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
