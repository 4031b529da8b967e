//! The blob store: file bytes, content-addressed by sha256, written while streaming.
//!
//! A writer streams into a temporary file while hashing, then renames it to its
//! content address; nothing ever holds a whole file in memory, and the same bytes sent twice
//! are kept once. Keys have one shape (`sha256/ab/cd/<hex>`), checked on every open, so no
//! request can address a path outside the folder.

use async_trait::async_trait;
use bytes::Bytes;
use futures_util::{Stream, StreamExt};
use schemas::BlobRef;
use sha2::{Digest, Sha256};
use std::io;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use tokio::io::{AsyncRead, AsyncWriteExt};

pub type ByteStream<'a> = Pin<Box<dyn Stream<Item = io::Result<Bytes>> + Send + 'a>>;
pub type BlobReader = Pin<Box<dyn AsyncRead + Send>>;

#[derive(Debug, thiserror::Error)]
pub enum BlobError {
    #[error("blob store i/o: {0}")]
    Io(#[from] io::Error),
    /// The stream being stored failed (the client went away, a malformed multipart body).
    #[error("{0}")]
    Source(io::Error),
    #[error("the content exceeds {limit} bytes")]
    TooLarge { limit: u64 },
    #[error("no such blob")]
    NotFound,
    #[error("malformed blob key")]
    BadKey,
}

#[async_trait]
pub trait Blobs: Send + Sync + 'static {
    /// Stores a stream of at most `limit` bytes; returns its reference.
    async fn put(&self, stream: ByteStream<'_>, limit: u64) -> Result<BlobRef, BlobError>;

    /// Opens a stored blob for reading.
    async fn open(&self, blob: &BlobRef) -> Result<BlobReader, BlobError>;

    /// Opens a stored blob for reading from byte `start` on.
    async fn open_at(&self, blob: &BlobRef, start: u64) -> Result<BlobReader, BlobError> {
        let mut reader = self.open(blob).await?;
        tokio::io::copy(
            &mut tokio::io::AsyncReadExt::take(&mut reader, start),
            &mut tokio::io::sink(),
        )
        .await?;
        Ok(reader)
    }

    /// `len` bytes of a stored blob from byte `start` on, as a stream of chunks: what a
    /// download sends. Implementations that can read faster than through [`Blobs::open_at`]
    /// do so.
    async fn stream_range(
        &self,
        blob: &BlobRef,
        start: u64,
        len: u64,
    ) -> Result<ByteStream<'static>, BlobError> {
        let reader = self.open_at(blob, start).await?;
        Ok(Box::pin(tokio_util::io::ReaderStream::with_capacity(
            tokio::io::AsyncReadExt::take(reader, len),
            256 * 1024,
        )))
    }

    /// Deletes a stored blob (eviction). A reader that opened it already may finish (a local
    /// file lives on while open); a blob that is not there is no error.
    async fn remove(&self, blob: &BlobRef) -> Result<(), BlobError>;

    /// Temporary blobs of transfers that broke off (a crash mid-write) not written to since
    /// `before` (wall clock): their count and bytes, deleted unless `dry_run`.
    async fn collect_temporary(
        &self,
        before: std::time::SystemTime,
        dry_run: bool,
    ) -> Result<(u64, u64), BlobError>;

    /// Content blobs last written before `before` (wall clock) and not in `keep` (keys still
    /// referenced, by stored files): their count and bytes, deleted unless `dry_run`. A blob is
    /// written again whenever its content is stored again (`put` of existing content renews
    /// it), so one last written before the record's retention cut is referenced only by
    /// calls already forgotten.
    async fn collect_written_before(
        &self,
        before: std::time::SystemTime,
        keep: &std::collections::HashSet<String>,
        dry_run: bool,
    ) -> Result<(u64, u64), BlobError>;

    /// Stores bytes already in memory (a body too large for a record, say).
    async fn put_bytes(&self, bytes: Bytes, limit: u64) -> Result<BlobRef, BlobError> {
        self.put(
            Box::pin(futures_util::stream::once(async move { Ok(bytes) })),
            limit,
        )
        .await
    }
}

/// `BadKey` unless `key` is exactly a content address (`sha256/ab/cd/<64 hex>`): no key can
/// name anything else in any implementation.
pub fn check_key(key: &str) -> Result<(), BlobError> {
    let parts: Vec<&str> = key.split('/').collect();
    let ok = parts.len() == 4
        && parts[0] == "sha256"
        && parts[3].len() == 64
        && parts[3]
            .bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
        && parts[1] == &parts[3][0..2]
        && parts[2] == &parts[3][2..4];
    if ok {
        Ok(())
    } else {
        Err(BlobError::BadKey)
    }
}

/// Blobs in a local folder (`<data dir>/blobs`).
#[derive(Clone, Debug)]
pub struct LocalBlobs {
    root: PathBuf,
}

impl LocalBlobs {
    pub fn open(root: &Path) -> io::Result<Self> {
        std::fs::create_dir_all(root.join("tmp"))?;
        std::fs::create_dir_all(root.join("sha256"))?;
        Ok(Self {
            root: root.to_owned(),
        })
    }

    pub fn key_for(sha256_hex: &str) -> String {
        format!(
            "sha256/{}/{}/{}",
            &sha256_hex[0..2],
            &sha256_hex[2..4],
            sha256_hex
        )
    }

    /// The file of a key, or `BadKey` when the key is not exactly a content address.
    pub fn path_of(&self, key: &str) -> Result<PathBuf, BlobError> {
        check_key(key)?;
        Ok(self.root.join(key))
    }

    /// The file of a stored blob; `NotFound` when it is not there.
    async fn file_of(&self, blob: &BlobRef) -> Result<tokio::fs::File, BlobError> {
        let path = self.path_of(&blob.key)?;
        match tokio::fs::File::open(&path).await {
            Ok(f) => Ok(f),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Err(BlobError::NotFound),
            Err(e) => Err(e.into()),
        }
    }

    fn temp_path(&self) -> PathBuf {
        let n: u128 = rand::random();
        self.root.join("tmp").join(format!("{n:032x}"))
    }
}

/// Bytes of a blob being written that may wait in the page cache before their writeback is
/// started. Flushed only at its end, a 2 GB upload queued 2 GB for the disk at once, and every
/// fsync on the machine waited behind it (ext4 writes a file's data before the journal commit
/// of an fsync that follows it): the store's checkpoints, the broker's segments, a sendMessage's
/// record. As RocksDB's `bytes_per_sync`: each window's writeback is started once it is full,
/// and the window before it waited for, so a blob keeps at most two windows dirty and its
/// writer goes at the disk's pace, not everyone else.
const WRITEBACK_WINDOW: u64 = 8 << 20;

#[derive(Default)]
struct Writeback {
    /// Where the window being filled starts.
    from: u64,
    /// The window whose writeback was started last, to wait for next time.
    started: Option<(u64, u64)>,
}

impl Writeback {
    fn due(&self, written: u64) -> bool {
        written - self.from >= WRITEBACK_WINDOW
    }

    /// Starts the writeback of `[from, written)` and waits for the window before it. Only
    /// pacing: where the file system refuses it, the final `sync_data` does it all, and the
    /// upload goes on.
    async fn step(&mut self, file: &tokio::fs::File, written: u64) {
        let window = (self.from, written - self.from);
        let previous = self.started.replace(window);
        self.from = written;
        if let Err(error) = sync_range(file, window, previous).await {
            tracing::debug!(%error, "a blob's writeback could not be paced");
        }
    }
}

#[cfg(target_os = "linux")]
async fn sync_range(
    file: &tokio::fs::File,
    start: (u64, u64),
    wait: Option<(u64, u64)>,
) -> io::Result<()> {
    use std::os::fd::AsRawFd;
    // A descriptor of its own for the blocking call, which outlives this future if it is
    // dropped (the upload's client went away) and the file with it.
    let own = file.try_clone().await?.into_std().await;
    tokio::task::spawn_blocking(move || {
        let fd = own.as_raw_fd();
        let range = |(offset, len): (u64, u64), flags| {
            // SAFETY: a plain syscall on a descriptor that stays open for the call.
            let r = unsafe { libc::sync_file_range(fd, offset as i64, len as i64, flags) };
            if r == 0 {
                Ok(())
            } else {
                Err(io::Error::last_os_error())
            }
        };
        range(start, libc::SYNC_FILE_RANGE_WRITE)?;
        if let Some(previous) = wait {
            range(
                previous,
                libc::SYNC_FILE_RANGE_WAIT_BEFORE
                    | libc::SYNC_FILE_RANGE_WRITE
                    | libc::SYNC_FILE_RANGE_WAIT_AFTER,
            )?;
        }
        Ok(())
    })
    .await
    .map_err(io::Error::other)?
}

/// Elsewhere the final `sync_data` does it all.
#[cfg(not(target_os = "linux"))]
async fn sync_range(_: &tokio::fs::File, _: (u64, u64), _: Option<(u64, u64)>) -> io::Result<()> {
    Ok(())
}

#[async_trait]
impl Blobs for LocalBlobs {
    async fn put(&self, mut stream: ByteStream<'_>, limit: u64) -> Result<BlobRef, BlobError> {
        let tmp = self.temp_path();
        let result = async {
            let mut file = tokio::fs::File::create(&tmp).await?;
            let mut hasher = Sha256::new();
            let mut size: u64 = 0;
            let mut writeback = Writeback::default();
            while let Some(chunk) = stream.next().await {
                let chunk = chunk.map_err(BlobError::Source)?;
                size += chunk.len() as u64;
                if size > limit {
                    return Err(BlobError::TooLarge { limit });
                }
                hasher.update(&chunk);
                file.write_all(&chunk).await?;
                if writeback.due(size) {
                    file.flush().await?;
                    writeback.step(&file, size).await;
                }
            }
            file.flush().await?;
            // The record that references this blob is published next: the bytes must be on
            // disk before anyone can read the reference.
            file.sync_data().await?;
            Ok((hex::encode(hasher.finalize()), size))
        }
        .await;
        let (sha256, size) = match result {
            Ok(v) => v,
            Err(e) => {
                let _ = tokio::fs::remove_file(&tmp).await;
                return Err(e);
            }
        };
        let key = Self::key_for(&sha256);
        let path = self.path_of(&key)?;
        if tokio::fs::try_exists(&path).await.unwrap_or(false) {
            tokio::fs::remove_file(&tmp).await?;
            // Stored again: the newer record references it, renew it for retention.
            let renew = path.clone();
            tokio::task::spawn_blocking(move || {
                std::fs::File::options()
                    .write(true)
                    .open(&renew)?
                    .set_modified(std::time::SystemTime::now())
            })
            .await
            .map_err(io::Error::other)??;
        } else {
            if let Some(dir) = path.parent() {
                tokio::fs::create_dir_all(dir).await?;
            }
            tokio::fs::rename(&tmp, &path).await?;
        }
        Ok(BlobRef { sha256, size, key })
    }

    async fn open(&self, blob: &BlobRef) -> Result<BlobReader, BlobError> {
        Ok(Box::pin(self.file_of(blob).await?))
    }

    async fn remove(&self, blob: &BlobRef) -> Result<(), BlobError> {
        match tokio::fs::remove_file(self.path_of(&blob.key)?).await {
            Err(e) if e.kind() != io::ErrorKind::NotFound => Err(e.into()),
            _ => Ok(()),
        }
    }

    async fn collect_temporary(
        &self,
        before: std::time::SystemTime,
        dry_run: bool,
    ) -> Result<(u64, u64), BlobError> {
        let (mut n, mut bytes) = (0, 0);
        let mut dir = tokio::fs::read_dir(self.root.join("tmp")).await?;
        while let Some(entry) = dir.next_entry().await? {
            let Ok(meta) = entry.metadata().await else {
                continue;
            };
            if !meta.is_file() || meta.modified()? >= before {
                continue;
            }
            if !dry_run {
                match tokio::fs::remove_file(entry.path()).await {
                    Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
                    other => other?,
                }
            }
            n += 1;
            bytes += meta.len();
        }
        Ok((n, bytes))
    }

    async fn collect_written_before(
        &self,
        before: std::time::SystemTime,
        keep: &std::collections::HashSet<String>,
        dry_run: bool,
    ) -> Result<(u64, u64), BlobError> {
        let root = self.root.join("sha256");
        let (mut n, mut bytes) = (0, 0);
        // sha256/ab/cd/<hex>: two levels of folders, then the blobs.
        let mut dirs = vec![(root, 0)];
        while let Some((dir, depth)) = dirs.pop() {
            let mut entries = match tokio::fs::read_dir(&dir).await {
                Ok(e) => e,
                Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
                Err(e) => return Err(e.into()),
            };
            while let Some(entry) = entries.next_entry().await? {
                let Ok(meta) = entry.metadata().await else {
                    continue;
                };
                if meta.is_dir() && depth < 2 {
                    dirs.push((entry.path(), depth + 1));
                    continue;
                }
                let Some(name) = entry.file_name().to_str().map(str::to_owned) else {
                    continue;
                };
                // Only content addresses: a stray file is not ours to judge.
                if name.len() != 64 || !name.bytes().all(|b| b.is_ascii_hexdigit()) {
                    continue;
                }
                let key = Self::key_for(&name);
                if !meta.is_file() || meta.modified()? >= before || keep.contains(&key) {
                    continue;
                }
                if !dry_run {
                    // Looked at again just before: stored again meanwhile, it stays.
                    match tokio::fs::metadata(entry.path()).await {
                        Ok(m) if m.modified()? < before => {}
                        _ => continue,
                    }
                    match tokio::fs::remove_file(entry.path()).await {
                        Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
                        other => other?,
                    }
                }
                n += 1;
                bytes += meta.len();
            }
        }
        Ok((n, bytes))
    }

    /// Mapped a window at a time (on the blocking pool, one window per task), and the mapped
    /// pages handed to the connection as they are: the bytes are copied once, from the page cache into the
    /// socket. Read through `tokio::fs::File`, each chunk was copied twice more (into the
    /// blocking pool's buffer, then out of it), and `/storage/` ran at half of nginx's
    /// `sendfile` (`bench/`).
    async fn stream_range(
        &self,
        blob: &BlobRef,
        start: u64,
        len: u64,
    ) -> Result<ByteStream<'static>, BlobError> {
        let file = self.file_of(blob).await?;
        // Checked once here rather than for every window: blobs never change in place.
        if file.metadata().await?.len() < start + len {
            return Err(BlobError::Io(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "the blob is shorter than its reference",
            )));
        }
        let file = file.into_std().await;
        // A couple of windows ahead of the client, no more: memory stays flat however large
        // the file. Room is awaited before a window is mapped, on the runtime: a client that
        // stalls holds no blocking thread (the pool is shared with the store's reads).
        let (tx, rx) = tokio::sync::mpsc::channel::<io::Result<Bytes>>(2);
        let file = std::sync::Arc::new(file);
        tokio::spawn(async move {
            let (mut at, end) = (start, start + len);
            while at < end {
                // The client left: stop reading.
                let Ok(room) = tx.reserve().await else {
                    return;
                };
                let f = file.clone();
                let chunk = tokio::task::spawn_blocking(move || map_window(&f, at, end))
                    .await
                    .unwrap_or_else(|e| Err(io::Error::other(e)));
                let failed = chunk.is_err();
                if let Ok(c) = &chunk {
                    at += c.len() as u64;
                }
                room.send(chunk);
                if failed {
                    return;
                }
            }
        });
        Ok(Box::pin(tokio_stream_of(rx)))
    }

    async fn open_at(&self, blob: &BlobRef, start: u64) -> Result<BlobReader, BlobError> {
        use tokio::io::AsyncSeekExt;
        let mut f = self.file_of(blob).await?;
        f.seek(io::SeekFrom::Start(start)).await?;
        Ok(Box::pin(f))
    }
}

/// Bytes `at..end` of `file`, at most one window of them, mapped (`end` within the file).
fn map_window(file: &std::fs::File, at: u64, end: u64) -> io::Result<Bytes> {
    const WINDOW: u64 = 4 * 1024 * 1024;
    const PAGE: u64 = 4096;
    let base = at - at % PAGE;
    let len = (end - base).min(WINDOW);
    // SAFETY: a mapping is undefined behaviour only if the file changes under it. Blobs are
    // content-addressed and never written in place: a blob is complete before it is renamed
    // into `sha256/`, and removing one unlinks it, which leaves existing mappings intact. The
    // caller checked `end` against the file's length, so no page of the mapping is past it.
    // What a mapping cannot turn into an error: a page that fails to read (a failing disk, a
    // network file system that lost the file) is SIGBUS for the process. Hence the README's
    // advice: a local file system for `dir` blobs, `s3://` for blobs shared between machines.
    let map = unsafe {
        memmap2::MmapOptions::new()
            .offset(base)
            .len(len as usize)
            .populate()
            .map(file)?
    };
    Ok(Bytes::from_owner(map).slice((at - base) as usize..))
}

fn tokio_stream_of<T: Send + 'static>(
    rx: tokio::sync::mpsc::Receiver<T>,
) -> impl Stream<Item = T> + Send + 'static {
    futures_util::stream::unfold(rx, |mut rx| async move { rx.recv().await.map(|t| (t, rx)) })
}

/// The behaviour every [`Blobs`] implementation must show; each runs it.
pub mod testsuite {
    use super::*;
    use tokio::io::AsyncReadExt;

    fn stream(chunks: Vec<Vec<u8>>) -> ByteStream<'static> {
        Box::pin(futures_util::stream::iter(
            chunks.into_iter().map(|c| Ok(Bytes::from(c))),
        ))
    }

    async fn read_all(b: &dyn Blobs, r: &BlobRef, at: u64) -> Vec<u8> {
        let mut out = Vec::new();
        b.open_at(r, at)
            .await
            .unwrap()
            .read_to_end(&mut out)
            .await
            .unwrap();
        out
    }

    pub async fn run_all(b: &dyn Blobs) {
        // Content addressing: the same bytes in other chunks are one blob.
        let r1 = b
            .put(stream(vec![b"hel".to_vec(), b"lo".to_vec()]), 100)
            .await
            .unwrap();
        let r2 = b.put(stream(vec![b"hello".to_vec()]), 100).await.unwrap();
        assert_eq!(r1, r2);
        assert_eq!(
            r1.sha256,
            "2cf24dba5fb0a30e26e83b2ac5b9e29e1b161e5c1fa7425e73043362938b9824"
        );
        assert_eq!(read_all(b, &r1, 0).await, b"hello");
        assert_eq!(read_all(b, &r1, 3).await, b"lo");
        // Empty content is a blob too.
        let empty = b.put(stream(vec![]), 100).await.unwrap();
        assert_eq!(empty.size, 0);
        assert!(read_all(b, &empty, 0).await.is_empty());
        // Bigger than one upload part, in odd chunks.
        let big: Vec<u8> = (0..20 * 1024 * 1024 + 7)
            .map(|i: u32| (i % 253) as u8)
            .collect();
        let chunks: Vec<Vec<u8>> = big.chunks(1_000_003).map(|c| c.to_vec()).collect();
        let r = b.put(stream(chunks), u64::MAX).await.unwrap();
        assert_eq!(r.size, big.len() as u64);
        assert_eq!(r.sha256, hex::encode(Sha256::digest(&big)));
        let tail = read_all(b, &r, 10 * 1024 * 1024).await;
        assert_eq!(tail, &big[10 * 1024 * 1024..]);
        // Ranges as downloads stream them: across chunk boundaries, up to the end, empty.
        for (start, len) in [
            (0, big.len() as u64),
            (1_048_575, 9_000_000),
            (4_194_305, 4_194_303),
            (7, 0),
        ] {
            let mut got = Vec::new();
            let mut chunks = b.stream_range(&r, start, len).await.unwrap();
            while let Some(c) = chunks.next().await {
                got.extend_from_slice(&c.unwrap());
            }
            assert_eq!(
                got,
                &big[start as usize..(start + len) as usize],
                "{start}+{len}"
            );
        }
        assert!(matches!(
            b.stream_range(&missing_ref(), 0, 1).await,
            Err(BlobError::NotFound)
        ));
        // Over the limit: refused, nothing kept.
        assert!(matches!(
            b.put(stream(vec![b"123456".to_vec()]), 5).await,
            Err(BlobError::TooLarge { limit: 5 })
        ));
        // A failing source is the source's error.
        let failing: ByteStream<'static> = Box::pin(futures_util::stream::iter(vec![
            Ok(Bytes::from_static(b"ab")),
            Err(io::Error::other("client went away")),
        ]));
        assert!(matches!(
            b.put(failing, 100).await,
            Err(BlobError::Source(_))
        ));
        // Keys that are not content addresses never open; unknown ones are not found.
        for key in [
            "../../etc/passwd",
            "sha256/ab/cd/../../x",
            "sha256/00/00/abc",
        ] {
            let r = BlobRef {
                sha256: "x".into(),
                size: 1,
                key: key.into(),
            };
            assert!(matches!(b.open(&r).await, Err(BlobError::BadKey)), "{key}");
        }
        assert!(matches!(
            b.open(&missing_ref()).await,
            Err(BlobError::NotFound)
        ));
        // Removed (eviction): gone, and removing again is no error; bad keys stay refused.
        let gone = b
            .put(stream(vec![b"evict me".to_vec()]), 100)
            .await
            .unwrap();
        b.remove(&gone).await.unwrap();
        assert!(matches!(b.open(&gone).await, Err(BlobError::NotFound)));
        b.remove(&gone).await.unwrap();
        let bad = BlobRef {
            key: "../x".into(),
            ..gone
        };
        assert!(matches!(b.remove(&bad).await, Err(BlobError::BadKey)));
        assert_eq!(read_all(b, &r1, 0).await, b"hello", "other blobs stay");
        // Completed writes leave no temporary blob behind.
        let later = std::time::SystemTime::now() + std::time::Duration::from_secs(3600);
        assert_eq!(b.collect_temporary(later, true).await.unwrap(), (0, 0));

        // Blobs last written before a cut are collected unless kept; one stored again after
        // the cut is renewed (object stores time writes to the second: the cut is seconds away
        // from both writes).
        let old = b
            .put(stream(vec![b"old call".to_vec()]), 100)
            .await
            .unwrap();
        let again = b
            .put(stream(vec![b"sent twice".to_vec()]), 100)
            .await
            .unwrap();
        let kept = b
            .put(stream(vec![b"a stored file".to_vec()]), 100)
            .await
            .unwrap();
        tokio::time::sleep(std::time::Duration::from_millis(1100)).await;
        let cut = std::time::SystemTime::now();
        tokio::time::sleep(std::time::Duration::from_millis(1100)).await;
        assert_eq!(
            b.put(stream(vec![b"sent twice".to_vec()]), 100)
                .await
                .unwrap(),
            again
        );
        let keep: std::collections::HashSet<String> = [kept.key.clone()].into();
        let (n, bytes) = b.collect_written_before(cut, &keep, true).await.unwrap();
        assert!(n >= 1 && bytes >= old.size, "the old blob counts");
        assert_eq!(
            read_all(b, &old, 0).await,
            b"old call",
            "a dry run deletes nothing"
        );
        b.collect_written_before(cut, &keep, false).await.unwrap();
        assert!(matches!(b.open(&old).await, Err(BlobError::NotFound)));
        assert_eq!(read_all(b, &again, 0).await, b"sent twice");
        assert_eq!(read_all(b, &kept, 0).await, b"a stored file");
    }

    fn missing_ref() -> BlobRef {
        BlobRef {
            sha256: "ab".repeat(32),
            size: 1,
            key: LocalBlobs::key_for(&"ab".repeat(32)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dir() -> PathBuf {
        std::env::temp_dir().join(format!("telepipe-blobs-{:032x}", rand::random::<u128>()))
    }

    /// A blob of several writeback windows, in odd-sized chunks that straddle them, is stored
    /// whole; a window's writeback is started when it fills, the one before it waited for.
    #[tokio::test]
    async fn a_blob_past_the_writeback_window_is_stored_whole() {
        use tokio::io::AsyncReadExt;
        let d = dir();
        let b = LocalBlobs::open(&d).unwrap();
        let chunk: Vec<u8> = (0..1_000_003u32).map(|i| (i % 251) as u8).collect();
        let count = (2 * WRITEBACK_WINDOW as usize + 5_000_000) / chunk.len();
        let chunks = std::iter::repeat_n(chunk.clone(), count)
            .map(|c| Ok(Bytes::from(c)))
            .collect::<Vec<_>>();
        let blob = b
            .put(Box::pin(futures_util::stream::iter(chunks)), u64::MAX)
            .await
            .unwrap();
        assert_eq!(blob.size, (count * chunk.len()) as u64);
        let mut back = Vec::new();
        b.open(&blob)
            .await
            .unwrap()
            .read_to_end(&mut back)
            .await
            .unwrap();
        assert!(back.chunks(chunk.len()).all(|c| c == chunk.as_slice()));
        let mut w = Writeback::default();
        assert!(!w.due(WRITEBACK_WINDOW - 1) && w.due(WRITEBACK_WINDOW));
        w.from = WRITEBACK_WINDOW + 7;
        assert!(!w.due(2 * WRITEBACK_WINDOW) && w.due(2 * WRITEBACK_WINDOW + 7));
        let _ = std::fs::remove_dir_all(&d);
    }

    #[tokio::test]
    async fn local_blobs_pass_the_blob_suite() {
        let d = dir();
        let b = LocalBlobs::open(&d).unwrap();
        testsuite::run_all(&b).await;
        // Nothing is left behind in the temporary folder.
        assert_eq!(std::fs::read_dir(d.join("tmp")).unwrap().count(), 0);
        // A transfer that broke off (its temporary file left): collected once old enough.
        std::fs::write(d.join("tmp").join("0123"), b"half a file").unwrap();
        let now = std::time::SystemTime::now();
        assert_eq!(
            b.collect_temporary(now - std::time::Duration::from_secs(3600), false)
                .await
                .unwrap(),
            (0, 0),
            "too recent"
        );
        let later = now + std::time::Duration::from_secs(60);
        assert_eq!(b.collect_temporary(later, true).await.unwrap(), (1, 11));
        assert!(
            d.join("tmp").join("0123").exists(),
            "a dry run deletes nothing"
        );
        assert_eq!(b.collect_temporary(later, false).await.unwrap(), (1, 11));
        assert_eq!(std::fs::read_dir(d.join("tmp")).unwrap().count(), 0);
        std::fs::remove_dir_all(d).ok();
    }
}
