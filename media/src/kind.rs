//! `sendFile`'s rules (ENHANCED.md): the kind of message a file should be sent as, judged from
//! its content, in this order: photo, sticker, animation, video, voice, audio, document.

use crate::Metadata;

/// What [`detect`] answers: never `VideoNote` (a round video is a choice, not a format).
pub use schemas::MediaKind as Kind;

/// Telegram's photo limits: 10 MB, width + height ≤ 10000, sides at most 20:1.
const PHOTO_MAX: u64 = 10 * 1024 * 1024;
/// Telegram's sticker files: 512 px on the longer side; `.tgs` ≤ 64 KB; video ≤ 256 KB, ≤ 3 s.
const STICKER_SIDE: u32 = 512;
const TGS_MAX: u64 = 64 * 1024;
const VIDEO_STICKER_MAX: u64 = 256 * 1024;
const VIDEO_STICKER_MS: u64 = 3000;

pub fn detect(m: &Metadata) -> Kind {
    let format = m.format.as_deref().unwrap_or("");
    let sticker_sides = |w: u32, h: u32| w.max(h) == STICKER_SIDE;
    if let Some(img) = &m.image {
        let webp = img.format == "WebP";
        if webp && sticker_sides(img.width, img.height) {
            return Kind::Sticker;
        }
        let photo_format = matches!(img.format.as_str(), "JPEG" | "PNG") || webp;
        let (w, h) = (u64::from(img.width), u64::from(img.height));
        let sane = w > 0 && h > 0 && w + h <= 10_000 && w.max(h) <= 20 * w.min(h);
        if photo_format && sane && m.size <= PHOTO_MAX {
            return Kind::Photo;
        }
    }
    if m.lottie && m.size <= TGS_MAX {
        return Kind::Sticker;
    }
    if let Some(v) = &m.video {
        let short = m
            .duration_ms
            .or(v.duration_ms)
            .is_some_and(|d| d <= VIDEO_STICKER_MS);
        if format == "WebM"
            && v.format == "VP9"
            && m.audio.is_none()
            && sticker_sides(v.width, v.height)
            && short
            && m.size <= VIDEO_STICKER_MAX
        {
            return Kind::Sticker;
        }
    }
    if format == "GIF" || (format == "MPEG-4" && m.video.is_some() && m.audio.is_none()) {
        return Kind::Animation;
    }
    if m.video.is_some() && matches!(format, "MPEG-4" | "Matroska" | "WebM") {
        return Kind::Video;
    }
    let audio = m.audio.as_deref().unwrap_or("");
    if m.video.is_none() && format == "Ogg" && audio == "Opus" {
        return Kind::Voice;
    }
    let audio_container = matches!(format, "MPEG Audio" | "MPEG-4" | "FLAC" | "Wave")
        || (format == "Ogg" && audio == "Vorbis");
    if m.video.is_none() && m.audio.is_some() && audio_container {
        return Kind::Audio;
    }
    Kind::Document
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::probe_bytes;

    async fn read(name: &str) -> Metadata {
        let path = format!("{}/testdata/{name}", env!("CARGO_MANIFEST_DIR"));
        let bytes = std::fs::read(&path).unwrap_or_else(|e| panic!("{path}: {e}"));
        probe_bytes(&bytes).await.expect("probe")
    }

    /// One real file per rule (testdata/make.sh says how each was made).
    #[tokio::test]
    async fn every_rule_on_a_real_file() {
        let cases = [
            ("photo.jpg", Kind::Photo),
            ("photo.png", Kind::Photo),
            ("photo.webp", Kind::Photo),
            ("panorama.png", Kind::Document),
            ("image.bmp", Kind::Document),
            ("image.tiff", Kind::Document),
            ("sticker.webp", Kind::Sticker),
            ("sticker.tgs", Kind::Sticker),
            ("sticker.webm", Kind::Sticker),
            ("animation.gif", Kind::Animation),
            ("silent.mp4", Kind::Animation),
            ("video.mp4", Kind::Video),
            ("video.mov", Kind::Video),
            ("video.mkv", Kind::Video),
            ("video.webm", Kind::Video),
            ("round.mp4", Kind::Video),
            ("voice.ogg", Kind::Voice),
            ("audio.mp3", Kind::Audio),
            ("audio.m4a", Kind::Audio),
            ("audio.flac", Kind::Audio),
            ("vorbis.ogg", Kind::Audio),
            ("audio.wav", Kind::Audio),
            ("notes.pdf", Kind::Document),
            ("random.bin", Kind::Document),
        ];
        let mut wrong = Vec::new();
        for (name, want) in cases {
            let m = read(name).await;
            let got = detect(&m);
            if got != want {
                wrong.push(format!("{name}: {got:?}, want {want:?} ({m:?})"));
            }
        }
        assert!(wrong.is_empty(), "{}", wrong.join("\n"));
    }

    #[tokio::test]
    async fn a_photo_over_ten_megabytes_is_a_document() {
        let mut m = read("photo.jpg").await;
        m.size = PHOTO_MAX + 1;
        assert_eq!(detect(&m), Kind::Document);
    }

    #[tokio::test]
    async fn a_video_sticker_must_be_short_and_small() {
        let mut m = read("sticker.webm").await;
        m.size = VIDEO_STICKER_MAX + 1;
        assert_eq!(detect(&m), Kind::Video);
    }

    #[tokio::test]
    async fn metadata_as_the_bot_api_wants_it() {
        let p = |v: Vec<(&str, String)>| {
            v.into_iter()
                .map(|(k, v)| format!("{k}={v}"))
                .collect::<Vec<_>>()
                .join(" ")
        };
        let video = read("video.mp4").await;
        assert_eq!(
            p(video.params_for(Kind::Video)),
            "width=160 height=120 duration=2 supports_streaming=true"
        );
        assert_eq!(video.mime_type(), Some("video/mp4"));
        // An mp4 whose index comes last cannot stream.
        let mov = read("video.mov").await;
        assert_eq!(
            p(mov.params_for(Kind::Video)),
            "width=160 height=120 duration=2"
        );
        assert_eq!(mov.mime_type(), Some("video/quicktime"));
        let round = read("round.mp4").await;
        assert_eq!(
            p(round.params_for(Kind::VideoNote)),
            "length=240 duration=3"
        );
        let mp3 = read("audio.mp3").await;
        assert_eq!(
            p(mp3.params_for(Kind::Audio)),
            "duration=2 performer=Sandbox Band title=Test Tone"
        );
        assert_eq!(
            p(read("voice.ogg").await.params_for(Kind::Voice)),
            "duration=4"
        );
        let gif = read("animation.gif").await;
        assert_eq!(p(gif.params_for(Kind::Animation)), "width=80 height=60");
        let webm = read("video.webm").await;
        assert_eq!(
            p(webm.params_for(Kind::Video)),
            "width=160 height=120 duration=2"
        );
        let webp = read("photo.webp").await;
        assert_eq!(webp.dimensions(), Some((640, 480)));
        assert!(read("random.bin").await.params_for(Kind::Video).is_empty());
    }

    /// Read in pieces from an offset, as from a blob store: the same answer as from memory,
    /// including for a file whose index sits at its end.
    #[tokio::test]
    async fn reads_through_offsets() {
        let path = format!("{}/testdata/video.mov", env!("CARGO_MANIFEST_DIR"));
        let bytes = std::fs::read(&path).unwrap();
        let opened = std::sync::Mutex::new(Vec::new());
        let m = crate::probe(bytes.len() as u64, |at| {
            opened.lock().unwrap().push(at);
            let mut f = std::fs::File::open(&path).unwrap();
            std::io::Seek::seek(&mut f, std::io::SeekFrom::Start(at)).unwrap();
            std::future::ready(Ok(tokio::fs::File::from_std(f)))
        })
        .await
        .unwrap();
        assert_eq!(m, probe_bytes(&bytes).await.unwrap());
        assert_eq!(m.dimensions(), Some((160, 120)));
    }

    /// Every file cut short anywhere: read without a crash, whatever it is judged to be.
    #[tokio::test]
    async fn truncated_files_never_fail() {
        let dir = format!("{}/testdata", env!("CARGO_MANIFEST_DIR"));
        for entry in std::fs::read_dir(&dir).unwrap() {
            let bytes = std::fs::read(entry.unwrap().path()).unwrap();
            let n = bytes.len();
            for cut in [1, 7, 64, 500, n / 3, n / 2, n.saturating_sub(1)] {
                let m = probe_bytes(&bytes[..cut.min(n)]).await.unwrap();
                let _ = (detect(&m), m.params_for(Kind::Video), m.mime_type());
            }
        }
    }

    #[tokio::test]
    async fn empty_and_garbage_never_fail() {
        assert_eq!(detect(&probe_bytes(b"").await.unwrap()), Kind::Document);
        let junk: Vec<u8> = (0..100_000u32).map(|i| (i * 7919 % 251) as u8).collect();
        assert_eq!(detect(&probe_bytes(&junk).await.unwrap()), Kind::Document);
        let mut riff = b"RIFF\0\0\0\0WEBPVP8X".to_vec();
        riff.resize(30, 0xff);
        let _ = probe_bytes(&riff).await.unwrap();
    }
}
