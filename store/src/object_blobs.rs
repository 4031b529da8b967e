//! Blobs in an object store (S3 or anything speaking its protocol: MinIO, R2, Ceph...), through
//! the `object_store` crate. The same content addressing as [`LocalBlobs`]: a stream is hashed
//! while it is written under `tmp/<random>` (a multipart upload past the first 5 MiB, one PUT
//! below, so memory stays bounded), then copied to `sha256/ab/cd/<hex>` and the temporary
//! object deleted. Two writers of the same bytes copy the same object twice: harmless.

use crate::blobs::{check_key, BlobError, BlobReader, Blobs, ByteStream, LocalBlobs};
use async_trait::async_trait;
use futures_util::{StreamExt, TryStreamExt};
use object_store::path::Path;
use object_store::{
    GetOptions, GetRange, MultipartUpload, ObjectStore, PutPayload, PutPayloadMut, PutResult,
    UploadPart, WriteMultipart,
};
use schemas::BlobRef;
use sha2::{Digest, Sha256};
use std::sync::Arc;

/// Part size of multipart uploads: S3's least. An upload holds at most the part being filled
/// and two being sent, so its memory is three parts whatever the file's size. With 8 MiB
/// parts and the first part gathered in a buffer that grew by doubling, a 60 MB upload grew
/// the peak by 31 MB.
const PART: usize = 5 * 1024 * 1024;

#[derive(Clone, Debug)]
pub struct ObjectBlobs {
    store: Arc<dyn ObjectStore>,
}

fn io(e: object_store::Error) -> BlobError {
    match e {
        object_store::Error::NotFound { .. } => BlobError::NotFound,
        other => BlobError::Io(std::io::Error::other(other.to_string())),
    }
}

impl ObjectBlobs {
    pub fn new(store: Arc<dyn ObjectStore>) -> Self {
        Self { store }
    }

    /// `s3://bucket[?endpoint=URL&region=R&allow_http=true]`; credentials come from the
    /// usual `AWS_*` variables (`AWS_ACCESS_KEY_ID`, `AWS_SECRET_ACCESS_KEY`, ...).
    pub fn from_url(url: &str) -> Result<Self, BlobError> {
        let bad = |why: &str| BlobError::Io(std::io::Error::other(format!("--blobs {url}: {why}")));
        let (base, query) = url.split_once('?').unwrap_or((url, ""));
        if !base.starts_with("s3://") {
            return Err(bad("only s3:// URLs (or dir:PATH) are understood"));
        }
        let mut b = object_store::aws::AmazonS3Builder::from_env().with_url(base);
        for (k, v) in query.split('&').filter_map(|kv| kv.split_once('=')) {
            b = match k {
                "endpoint" => b.with_endpoint(v),
                "region" => b.with_region(v),
                "allow_http" => b.with_allow_http(v == "true"),
                other => return Err(bad(&format!("unknown option {other}"))),
            };
        }
        Ok(Self::new(Arc::new(
            b.build().map_err(|e| bad(&e.to_string()))?,
        )))
    }
}

impl ObjectBlobs {
    /// The objects under `prefix` that `old` picks: their count and bytes, deleted unless
    /// `dry_run`.
    async fn collect(
        &self,
        prefix: &str,
        old: impl Fn(&object_store::ObjectMeta) -> bool,
        dry_run: bool,
    ) -> Result<(u64, u64), BlobError> {
        let picked: Vec<_> = self
            .store
            .list(Some(&Path::from(prefix)))
            .try_filter(|m| std::future::ready(old(m)))
            .try_collect()
            .await
            .map_err(io)?;
        let bytes = picked.iter().map(|m| m.size).sum();
        if !dry_run {
            for m in &picked {
                match self.store.delete(&m.location).await {
                    Err(object_store::Error::NotFound { .. }) | Ok(()) => {}
                    Err(e) => return Err(io(e)),
                }
            }
        }
        Ok((picked.len() as u64, bytes))
    }
}

/// The multipart upload a [`WriteMultipart`] drives, held here too: `WriteMultipart::finish`
/// sends the last part, and when that part fails it returns without aborting and drops the
/// upload with it, whose parts would stay stored, unlisted and billed. Through this handle the
/// upload is aborted all the same. Once completed (or aborted) it holds nothing.
#[derive(Clone, Debug)]
struct Shared(Arc<std::sync::Mutex<Option<Box<dyn MultipartUpload>>>>);

impl Shared {
    fn new(upload: Box<dyn MultipartUpload>) -> Self {
        Self(Arc::new(std::sync::Mutex::new(Some(upload))))
    }

    fn take(&self) -> Option<Box<dyn MultipartUpload>> {
        self.0.lock().unwrap_or_else(|p| p.into_inner()).take()
    }
}

fn ended() -> object_store::Error {
    object_store::Error::Generic {
        store: "telepipe",
        source: "the multipart upload has ended".into(),
    }
}

#[async_trait]
impl MultipartUpload for Shared {
    fn put_part(&mut self, data: PutPayload) -> UploadPart {
        match self.0.lock().unwrap_or_else(|p| p.into_inner()).as_mut() {
            Some(upload) => upload.put_part(data),
            None => Box::pin(async { Err(ended()) }),
        }
    }

    async fn complete(&mut self) -> object_store::Result<PutResult> {
        let mut held = Held {
            upload: self.take(),
            home: self.clone(),
        };
        let done = match held.upload.as_mut() {
            Some(upload) => upload.complete().await,
            None => Err(ended()),
        };
        if done.is_ok() {
            held.upload = None;
        }
        done
    }

    async fn abort(&mut self) -> object_store::Result<()> {
        match self.take() {
            Some(mut upload) => upload.abort().await,
            None => Ok(()),
        }
    }
}

/// The upload while it completes: put back into its [`Shared`] unless it completed, also when
/// the completion is dropped mid-way (its `put` dropped), so that it is still aborted.
struct Held {
    upload: Option<Box<dyn MultipartUpload>>,
    home: Shared,
}

impl Drop for Held {
    fn drop(&mut self) {
        if let Some(upload) = self.upload.take() {
            *self.home.0.lock().unwrap_or_else(|p| p.into_inner()) = Some(upload);
        }
    }
}

/// A multipart upload not yet completed: aborted if dropped so (its `put` dropped, its client
/// gone), since the parts sent would stay stored, unlisted and billed.
#[derive(Default)]
struct Unfinished {
    writer: Option<WriteMultipart>,
    upload: Option<Shared>,
}

impl Unfinished {
    /// The abort of an upload not completed: its parts in flight stopped first, and waited for
    /// (a part still uploading as the upload is aborted may be kept), then the upload.
    fn abort(&mut self) -> Option<impl std::future::Future<Output = ()>> {
        let writer = self.writer.take();
        let mut upload = self.upload.take()?;
        Some(async move {
            // The writer's abort ends with the upload's, through the same `Shared`.
            let aborted = match writer {
                Some(writer) => writer.abort().await,
                None => upload.abort().await,
            };
            if let Err(error) = aborted {
                tracing::warn!(%error, "could not abort an unfinished multipart upload");
            }
        })
    }
}

impl Drop for Unfinished {
    fn drop(&mut self) {
        if let (Some(abort), Ok(rt)) = (self.abort(), tokio::runtime::Handle::try_current()) {
            rt.spawn(abort);
        }
    }
}

#[async_trait]
impl Blobs for ObjectBlobs {
    async fn put(&self, mut stream: ByteStream<'_>, limit: u64) -> Result<BlobRef, BlobError> {
        let tmp = Path::from(format!("tmp/{:032x}", rand::random::<u128>()));
        let mut hasher = Sha256::new();
        let mut size: u64 = 0;
        // Copied into fixed blocks until there is a part's worth: a chunk kept as it came would
        // keep its reader's whole buffer alive (hyper's reads pin up to 3x their length).
        let mut first = PutPayloadMut::new();
        let mut upload = Unfinished::default();
        let (multipart, shared) = (&mut upload.writer, &mut upload.upload);
        let written = async {
            while let Some(chunk) = stream.next().await {
                let chunk = chunk.map_err(BlobError::Source)?;
                size += chunk.len() as u64;
                if size > limit {
                    return Err(BlobError::TooLarge { limit });
                }
                hasher.update(&chunk);
                match multipart {
                    Some(w) => {
                        // At most one part in flight before this chunk, which may complete
                        // a second: with the part filling, memory stays at three parts (for
                        // chunks smaller than a part, as streams give).
                        w.wait_for_capacity(2).await.map_err(io)?;
                        w.write(&chunk);
                    }
                    None => {
                        first.extend_from_slice(&chunk);
                        if first.content_length() >= PART {
                            let upload =
                                Shared::new(self.store.put_multipart(&tmp).await.map_err(io)?);
                            *shared = Some(upload.clone());
                            let mut w = WriteMultipart::new_with_chunk_size(Box::new(upload), PART);
                            std::mem::take(&mut first)
                                .freeze()
                                .into_iter()
                                .for_each(|block| w.put(block));
                            *multipart = Some(w);
                        }
                    }
                }
            }
            // Every part sent while the upload is still held here (a failed part aborts it),
            // then the last part and the completion.
            if let Some(w) = multipart {
                w.wait_for_capacity(0).await.map_err(io)?;
            }
            match multipart.take() {
                Some(w) => {
                    w.finish().await.map_err(io)?;
                    *shared = None;
                }
                None => {
                    self.store
                        .put(&tmp, std::mem::take(&mut first).freeze())
                        .await
                        .map_err(io)?;
                }
            }
            Ok(())
        }
        .await;
        if let Err(e) = written {
            if let Some(abort) = upload.abort() {
                abort.await;
            }
            let _ = self.store.delete(&tmp).await;
            return Err(e);
        }
        let sha256 = hex::encode(hasher.finalize());
        let key = LocalBlobs::key_for(&sha256);
        let dest = Path::from(key.as_str());
        // Copied over an existing blob too (the same bytes): stored again, it is renewed for
        // retention.
        self.store.copy(&tmp, &dest).await.map_err(io)?;
        self.store.delete(&tmp).await.map_err(io)?;
        Ok(BlobRef { sha256, size, key })
    }

    async fn open(&self, blob: &BlobRef) -> Result<BlobReader, BlobError> {
        self.open_at(blob, 0).await
    }

    async fn remove(&self, blob: &BlobRef) -> Result<(), BlobError> {
        check_key(&blob.key)?;
        match self.store.delete(&Path::from(blob.key.as_str())).await {
            Err(object_store::Error::NotFound { .. }) | Ok(()) => Ok(()),
            Err(e) => Err(io(e)),
        }
    }

    async fn collect_temporary(
        &self,
        before: std::time::SystemTime,
        dry_run: bool,
    ) -> Result<(u64, u64), BlobError> {
        let before_ms = before
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_millis() as i64)
            .unwrap_or(0);
        self.collect(
            "tmp",
            |m| m.last_modified.timestamp_millis() < before_ms,
            dry_run,
        )
        .await
    }

    async fn collect_written_before(
        &self,
        before: std::time::SystemTime,
        keep: &std::collections::HashSet<String>,
        dry_run: bool,
    ) -> Result<(u64, u64), BlobError> {
        let before_ms = before
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_millis() as i64)
            .unwrap_or(0);
        self.collect(
            "sha256",
            |m| {
                m.last_modified.timestamp_millis() < before_ms
                    && !keep.contains(m.location.as_ref())
            },
            dry_run,
        )
        .await
    }

    async fn open_at(&self, blob: &BlobRef, start: u64) -> Result<BlobReader, BlobError> {
        check_key(&blob.key)?;
        let opts = GetOptions {
            range: (start > 0).then_some(GetRange::Offset(start)),
            ..Default::default()
        };
        let got = self
            .store
            .get_opts(&Path::from(blob.key.as_str()), opts)
            .await
            .map_err(io)?;
        let stream = got
            .into_stream()
            .map_err(|e| std::io::Error::other(e.to_string()));
        Ok(Box::pin(tokio_util::io::StreamReader::new(stream)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn in_memory_object_store_passes_the_blob_suite() {
        let b = ObjectBlobs::new(Arc::new(object_store::memory::InMemory::new()));
        crate::blobs::testsuite::run_all(&b).await;
    }

    /// An in-memory store whose multipart uploads count their aborts and fail part
    /// `fail_part` (0: none), or their completion when `fail_part` is [`COMPLETION`], or never
    /// complete when it is [`STALLED`].
    #[derive(Debug)]
    struct Watched {
        inner: object_store::memory::InMemory,
        aborts: Arc<std::sync::atomic::AtomicUsize>,
        fail_part: usize,
    }

    const COMPLETION: usize = usize::MAX;
    const STALLED: usize = usize::MAX - 1;

    impl std::fmt::Display for Watched {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.write_str("Watched")
        }
    }

    #[derive(Debug)]
    struct WatchedUpload {
        inner: Box<dyn object_store::MultipartUpload>,
        aborts: Arc<std::sync::atomic::AtomicUsize>,
        parts: usize,
        fail_part: usize,
    }

    #[async_trait]
    impl object_store::MultipartUpload for WatchedUpload {
        fn put_part(&mut self, data: object_store::PutPayload) -> object_store::UploadPart {
            self.parts += 1;
            if self.parts == self.fail_part {
                return Box::pin(async {
                    Err(object_store::Error::Generic {
                        store: "Watched",
                        source: "a part failed".into(),
                    })
                });
            }
            self.inner.put_part(data)
        }
        async fn complete(&mut self) -> object_store::Result<object_store::PutResult> {
            if self.fail_part == STALLED {
                std::future::pending::<()>().await;
            }
            if self.fail_part == COMPLETION {
                return Err(object_store::Error::Generic {
                    store: "Watched",
                    source: "the completion failed".into(),
                });
            }
            self.inner.complete().await
        }
        async fn abort(&mut self) -> object_store::Result<()> {
            self.aborts
                .fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            self.inner.abort().await
        }
    }

    #[async_trait]
    impl ObjectStore for Watched {
        async fn put_opts(
            &self,
            location: &Path,
            payload: object_store::PutPayload,
            opts: object_store::PutOptions,
        ) -> object_store::Result<object_store::PutResult> {
            self.inner.put_opts(location, payload, opts).await
        }
        async fn put_multipart_opts(
            &self,
            location: &Path,
            opts: object_store::PutMultipartOptions,
        ) -> object_store::Result<Box<dyn object_store::MultipartUpload>> {
            Ok(Box::new(WatchedUpload {
                inner: self.inner.put_multipart_opts(location, opts).await?,
                aborts: self.aborts.clone(),
                parts: 0,
                fail_part: self.fail_part,
            }))
        }
        async fn get_opts(
            &self,
            location: &Path,
            options: GetOptions,
        ) -> object_store::Result<object_store::GetResult> {
            self.inner.get_opts(location, options).await
        }
        async fn delete(&self, location: &Path) -> object_store::Result<()> {
            self.inner.delete(location).await
        }
        fn list(
            &self,
            prefix: Option<&Path>,
        ) -> futures_util::stream::BoxStream<'static, object_store::Result<object_store::ObjectMeta>>
        {
            self.inner.list(prefix)
        }
        async fn list_with_delimiter(
            &self,
            prefix: Option<&Path>,
        ) -> object_store::Result<object_store::ListResult> {
            self.inner.list_with_delimiter(prefix).await
        }
        async fn copy(&self, from: &Path, to: &Path) -> object_store::Result<()> {
            self.inner.copy(from, to).await
        }
        async fn copy_if_not_exists(&self, from: &Path, to: &Path) -> object_store::Result<()> {
            self.inner.copy_if_not_exists(from, to).await
        }
    }

    /// A multipart upload that does not complete is aborted: a part that fails, or a `put`
    /// dropped mid-way (its client gone); one that completes is not.
    #[tokio::test]
    async fn an_unfinished_multipart_upload_is_aborted() {
        let watched = |fail_part| {
            let aborts = Arc::new(std::sync::atomic::AtomicUsize::new(0));
            let store = Watched {
                inner: object_store::memory::InMemory::new(),
                aborts: aborts.clone(),
                fail_part,
            };
            (ObjectBlobs::new(Arc::new(store)), aborts)
        };
        let chunks = |n: usize| -> ByteStream<'static> {
            Box::pin(futures_util::stream::iter(
                (0..n).map(|i| Ok(bytes::Bytes::from(vec![i as u8; 1024 * 1024]))),
            ))
        };
        let aborted =
            |a: &Arc<std::sync::atomic::AtomicUsize>| a.load(std::sync::atomic::Ordering::SeqCst);
        // Completed: 12 MB, three parts.
        let (blobs, aborts) = watched(0);
        blobs.put(chunks(12), u64::MAX).await.unwrap();
        assert_eq!(aborted(&aborts), 0);
        // The second part fails.
        let (blobs, aborts) = watched(2);
        assert!(blobs.put(chunks(12), u64::MAX).await.is_err());
        assert_eq!(aborted(&aborts), 1);
        // The last part fails (12 MB: 5, 5 and the 2 that completing the upload sends).
        let (blobs, aborts) = watched(3);
        assert!(blobs.put(chunks(12), u64::MAX).await.is_err());
        assert_eq!(
            aborted(&aborts),
            1,
            "the upload whose last part failed is aborted"
        );
        // Its completion fails: aborted once (by `finish`; not again here).
        let (blobs, aborts) = watched(COMPLETION);
        assert!(blobs.put(chunks(12), u64::MAX).await.is_err());
        assert_eq!(aborted(&aborts), 1);
        // Dropped mid-way (its client gone): while it completes, and after its first part went
        // (the stream stalls once 6 MB have come). Aborted either way.
        let stalled = || -> ByteStream<'static> {
            Box::pin(chunks(6).chain(futures_util::stream::pending()))
        };
        for (fail_part, stream) in [(STALLED, chunks(12)), (0, stalled())] {
            let (blobs, aborts) = watched(fail_part);
            let put = blobs.put(stream, u64::MAX);
            assert!(
                tokio::time::timeout(std::time::Duration::from_millis(500), put)
                    .await
                    .is_err()
            );
            tokio::time::timeout(std::time::Duration::from_secs(5), async {
                while aborted(&aborts) == 0 {
                    tokio::task::yield_now().await;
                }
            })
            .await
            .expect("the dropped upload is aborted");
        }
    }

    #[tokio::test]
    async fn urls_are_checked() {
        assert!(ObjectBlobs::from_url("gs://x").is_err());
        assert!(ObjectBlobs::from_url("s3://bucket?colour=red").is_err());
    }

    /// Against a real S3-protocol server when `TELEPIPE_TEST_S3` names one
    /// (`s3://bucket?endpoint=http://127.0.0.1:PORT&allow_http=true`, credentials in `AWS_*`);
    /// `.ci/run` starts one (moto's server) and sets it.
    #[tokio::test]
    async fn s3_passes_the_blob_suite() {
        let Ok(url) = std::env::var("TELEPIPE_TEST_S3") else {
            if std::env::var("CI").is_ok() {
                panic!("TELEPIPE_TEST_S3 is not set under CI");
            }
            eprintln!("TELEPIPE_TEST_S3 not set: the S3 blob suite did not run");
            return;
        };
        let b = ObjectBlobs::from_url(&url).unwrap();
        crate::blobs::testsuite::run_all(&b).await;
    }
}
