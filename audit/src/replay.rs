//! `telepipe replay`: the selected calls sent again, in their original encoding and order,
//! to another Bot API base URL (another gateway, a sandbox, Telegram), with their files from
//! the blob store; each answer compared with the recorded one ([`crate::compare`]).
//!
//! Calls go one at a time, in the record's order: a later call may depend on an earlier one's
//! effect (an edit of a message sent before), and one at a time keeps that order on the target.
//! The pace is the original one (each call leaves as long after the first as it arrived after
//! the first, or later if answers are slow) or `--rate` calls a second.
//!
//! Tokens are opened in memory only: from the sealed request (or `--token-map`), into the
//! request URL, never into the report or an error message (reqwest errors are stripped of
//! their URL).

use crate::{compare, format_time, AuditError, Selection, Walk};
use schemas::{BodyBytes, BotId, BotToken, CallBody, Part, RecordedRequest, Sealer};
use serde::Serialize;
use sha2::Digest;
use std::collections::HashMap;
use std::io::Write;
use std::sync::Arc;
use std::time::{Duration, Instant};
use store::blobs::Blobs;
use store::{CallRow, OutcomeStore, Store};
use tokio_util::sync::CancellationToken;

/// Largest answer kept for comparison; larger ones are compared by digest.
const MAX_ANSWER: usize = 16 * 1024 * 1024;

#[derive(Clone, Debug)]
pub struct ReplayConfig {
    /// The Bot API base URL calls go to (`https://api.telegram.org`, `http://127.0.0.1:8082`).
    pub target: url::Url,
    /// Calls per second; `None`: the original pace.
    pub rate: Option<f64>,
    /// List what would be sent; send nothing.
    pub dry_run: bool,
    /// Replays one bot's calls as another bot (its token).
    pub token_map: HashMap<BotId, BotToken>,
    /// Lets methods that act (anything but `get*`) go to api.telegram.org.
    pub allow_sends: bool,
    /// How long one call may take.
    pub timeout: Duration,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Verdict {
    /// Same status, same body but for what always changes.
    Same,
    Different,
    /// Same status; the recorded body is no longer kept and its digest differs (which ids and
    /// dates alone would cause), so the body could not be compared.
    Unverified,
    /// Not sent (see the reason).
    Skipped,
    /// Sent, but no answer came (see the reason).
    Failed,
    /// `--dry-run`: would be sent.
    WouldSend,
}

#[derive(Clone, Debug, Serialize)]
pub struct Answer {
    pub status: Option<u16>,
    pub sha256: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ms: Option<u64>,
}

/// One line of the report.
#[derive(Clone, Debug, Serialize)]
pub struct Entry {
    pub call_id: String,
    pub bot_id: i64,
    pub time: String,
    pub method: String,
    pub encoding: &'static str,
    pub verdict: Verdict,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    pub recorded: Answer,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub replayed: Option<Answer>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub differences: Vec<String>,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct Summary {
    pub selected: u64,
    pub same: u64,
    pub different: u64,
    pub unverified: u64,
    pub skipped: u64,
    pub failed: u64,
    pub would_send: u64,
    pub seconds: f64,
}

impl Summary {
    fn count(&mut self, v: Verdict) {
        self.selected += 1;
        *match v {
            Verdict::Same => &mut self.same,
            Verdict::Different => &mut self.different,
            Verdict::Unverified => &mut self.unverified,
            Verdict::Skipped => &mut self.skipped,
            Verdict::Failed => &mut self.failed,
            Verdict::WouldSend => &mut self.would_send,
        } += 1;
    }
}

impl std::fmt::Display for Summary {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let sent = self.same + self.different + self.unverified + self.failed;
        write!(
            f,
            "{} calls selected: {} same, {} different, {} unverified, {} failed, {} skipped",
            self.selected, self.same, self.different, self.unverified, self.failed, self.skipped
        )?;
        if self.would_send > 0 {
            write!(f, ", {} would be sent (dry run)", self.would_send)?;
        }
        if sent > 0 && self.seconds > 0.0 {
            write!(
                f,
                "; {sent} sent in {:.1} s ({:.0}/s)",
                self.seconds,
                sent as f64 / self.seconds
            )?;
        }
        Ok(())
    }
}

/// Whether a method acts (sends, edits, deletes, sets) rather than reads: such calls need
/// `--allow-sends` to reach Telegram itself.
pub fn acts(method: &str) -> bool {
    let m = method.to_ascii_lowercase();
    // getUpdates confirms (and so drops) the live bot's updates: it acts.
    !m.starts_with("get") || m == "getupdates"
}

fn is_telegram(target: &url::Url) -> bool {
    target.host_str().is_some_and(|h| {
        h.trim_end_matches('.')
            .eq_ignore_ascii_case("api.telegram.org")
    })
}

/// Where a replay stands: when it began, how many calls it sent, the first call's arrival (the
/// original pace is kept relative to it), the counts so far.
pub struct Pace {
    started: Instant,
    first_ms: Option<i64>,
    index: u64,
    summary: Summary,
}

impl Pace {
    pub fn new() -> Self {
        Self {
            started: Instant::now(),
            first_ms: None,
            index: 0,
            summary: Summary::default(),
        }
    }

    pub fn done(mut self) -> Summary {
        self.summary.seconds = self.started.elapsed().as_secs_f64();
        self.summary
    }
}

impl Default for Pace {
    fn default() -> Self {
        Self::new()
    }
}

/// A call read from the bus (`replay --from-bus`) as the replay sees it: its outcome in the
/// store, when there is one, is the recorded answer.
pub async fn row_from_bus(
    store: &dyn OutcomeStore,
    sealer: &Sealer,
    env: &schemas::Envelope<schemas::Call>,
) -> CallRow {
    // As the bot sent it: the ingest marked its token on the bus.
    let unmasked = schemas::mask::unmasked(sealer, env);
    let call = unmasked.as_ref().unwrap_or(&env.payload);
    let bot = env.header.bot_id;
    let recorded = store.get_result(env.header.call_id).await.ok().flatten();
    let body = recorded
        .as_ref()
        .and_then(|r| r.body.inline_bytes().map(|b| b.into_owned()));
    CallRow {
        call_id: env.header.call_id,
        bot_id: bot,
        received_ms: env.header.call_id.time_ms(),
        token_fingerprint: call.token_fingerprint.0.clone(),
        method: call.method.clone(),
        http_method: call.http_method.clone(),
        test_env: call.test_env,
        params: call.audit_params(),
        blobs: call.blobs().into_iter().cloned().collect(),
        outcome: match recorded.as_ref().map(|r| r.status) {
            Some(s) if s >= 400 => store::Outcome::Error,
            _ => store::Outcome::Ok,
        },
        http_status: recorded.as_ref().map(|r| r.status),
        error_code: recorded.as_ref().and_then(|r| r.error_code()),
        description: recorded.as_ref().and_then(|r| r.description()),
        latency_ms: None,
        stages: Default::default(),
        encoding: call.encoding(),
        // Sealed only to be opened by the same path as a stored row's.
        request: Some(call.seal_request(sealer, bot)),
        answer_sha256: body.as_ref().map(|b| hex::encode(sha2::Sha256::digest(b))),
        answer: body.and_then(|b| String::from_utf8(b).ok()),
    }
}

pub struct Replayer<'a> {
    pub store: &'a dyn Store,
    pub blobs: Arc<dyn Blobs>,
    pub sealer: &'a Sealer,
    pub cfg: ReplayConfig,
    pub http: reqwest::Client,
}

impl<'a> Replayer<'a> {
    pub fn new(
        store: &'a dyn Store,
        blobs: Arc<dyn Blobs>,
        sealer: &'a Sealer,
        cfg: ReplayConfig,
    ) -> Result<Self, AuditError> {
        let http = reqwest::Client::builder()
            .timeout(cfg.timeout)
            .build()
            .map_err(|e| AuditError::Replay(e.without_url().to_string()))?;
        Ok(Self {
            store,
            blobs,
            sealer,
            cfg,
            http,
        })
    }

    /// Replays the selection; each entry goes to `report` (JSON lines) and differences and
    /// failures to `log` as they happen. Stops early, with the summary so far, on `stop`.
    pub async fn run(
        &self,
        selection: &Selection,
        report: &mut (dyn Write + Send),
        log: &mut (dyn Write + Send),
        stop: &CancellationToken,
    ) -> Result<Summary, AuditError> {
        let mut walk = Walk::new(self.store, selection).await?;
        let mut pace = Pace::new();
        loop {
            let page = walk.next_page().await?;
            for row in &page {
                if !self.step(row, &mut pace, report, log, stop).await? {
                    return Ok(pace.done());
                }
            }
            if walk.at_end() {
                return Ok(pace.done());
            }
        }
    }

    /// One call of a replay, at its pace; `false` once stopped.
    pub async fn step(
        &self,
        row: &CallRow,
        pace: &mut Pace,
        report: &mut (dyn Write + Send),
        log: &mut (dyn Write + Send),
        stop: &CancellationToken,
    ) -> Result<bool, AuditError> {
        if stop.is_cancelled() {
            return Ok(false);
        }
        if !self.cfg.dry_run {
            let due = match self.cfg.rate {
                Some(rate) => {
                    Duration::try_from_secs_f64(pace.index as f64 / rate).unwrap_or(Duration::MAX)
                }
                None => {
                    let first = *pace.first_ms.get_or_insert(row.received_ms);
                    Duration::from_millis((row.received_ms - first).max(0) as u64)
                }
            };
            let wait = due.saturating_sub(pace.started.elapsed());
            if !wait.is_zero() {
                tokio::select! {
                    _ = tokio::time::sleep(wait) => {}
                    _ = stop.cancelled() => return Ok(false),
                }
            }
        }
        pace.index += 1;
        let entry = self.one(row).await;
        pace.summary.count(entry.verdict);
        serde_json::to_writer(&mut *report, &entry).map_err(std::io::Error::from)?;
        writeln!(report)?;
        if entry.verdict != Verdict::Same && entry.verdict != Verdict::Unverified {
            writeln!(
                log,
                "{:<10} {} bot {} {}: {}",
                match entry.verdict {
                    Verdict::WouldSend => "would send".to_owned(),
                    v => format!("{v:?}").to_lowercase(),
                },
                entry.time,
                entry.bot_id,
                entry.method,
                entry
                    .reason
                    .clone()
                    .or_else(|| entry.differences.first().cloned())
                    .unwrap_or_else(|| format!("{} encoded", entry.encoding))
            )?;
        }
        Ok(true)
    }

    /// One call: rebuilt, sent, compared.
    pub async fn one(&self, row: &CallRow) -> Entry {
        let mut entry = Entry {
            call_id: row.call_id.0.to_string(),
            bot_id: row.bot_id.0,
            time: format_time(row.received_ms),
            method: row.method.clone(),
            encoding: row.encoding.as_str(),
            verdict: Verdict::Skipped,
            reason: None,
            recorded: Answer {
                status: row.http_status,
                sha256: row.answer_sha256.clone(),
                ms: row.latency_ms,
            },
            replayed: None,
            differences: Vec::new(),
        };
        let (request, secrets) = match self.request(row).await {
            Ok(r) => r,
            Err(reason) => {
                entry.reason = Some(reason);
                return entry;
            }
        };
        if self.cfg.dry_run {
            entry.verdict = Verdict::WouldSend;
            return entry;
        }
        let sent = Instant::now();
        let answer = match self.send(request).await {
            Ok(a) => a,
            Err(reason) => {
                entry.verdict = Verdict::Failed;
                entry.reason = Some(reason);
                return entry;
            }
        };
        let (status, body, digest) = answer;
        if row.http_status.is_none() {
            // Read from the bus, its outcome not in the store: nothing to compare with.
            entry.replayed = Some(Answer {
                status: Some(status),
                sha256: Some(digest),
                ms: Some(sent.elapsed().as_millis() as u64),
            });
            entry.verdict = Verdict::Unverified;
            entry.reason = Some("no recorded answer to compare with".into());
            return entry;
        }
        // The record keeps answers with the bot's token scrubbed: the replayed one too, to
        // compare like with like.
        let body = body.map(|b| scrub(b, &secrets));
        entry.replayed = Some(Answer {
            status: Some(status),
            sha256: Some(digest.clone()),
            ms: Some(sent.elapsed().as_millis() as u64),
        });
        if row.http_status != Some(status) {
            entry.verdict = Verdict::Different;
            entry.differences.push(format!(
                "status: {} → {status}",
                row.http_status
                    .map(|s| s.to_string())
                    .unwrap_or_else(|| "(none)".into())
            ));
            if let (Some(recorded), Some(body)) = (&row.answer, &body) {
                entry
                    .differences
                    .extend(compare::differences(recorded.as_bytes(), body));
            }
            return entry;
        }
        entry.verdict = match (&row.answer, &body) {
            (Some(recorded), Some(body)) => {
                entry.differences = compare::differences(recorded.as_bytes(), body);
                if entry.differences.is_empty() {
                    Verdict::Same
                } else {
                    Verdict::Different
                }
            }
            _ if row.answer_sha256.as_deref() == Some(digest.as_str()) => Verdict::Same,
            _ => {
                entry.reason = Some("the recorded body is no longer kept".into());
                Verdict::Unverified
            }
        };
        entry
    }

    /// The request of a recorded call, ready to send, and the token secrets it involves (the
    /// recorded one, the one it is sent with); or why it cannot be.
    async fn request(
        &self,
        row: &CallRow,
    ) -> Result<(reqwest::RequestBuilder, Vec<String>), String> {
        let Some(sealed) = &row.request else {
            return Err(
                "no recorded request (a file download, or recorded before requests were kept)"
                    .into(),
            );
        };
        if is_telegram(&self.cfg.target) && acts(&row.method) && !self.cfg.allow_sends {
            return Err(format!(
                "{} acts on Telegram: replaying it to api.telegram.org needs --allow-sends",
                row.method
            ));
        }
        let recorded = RecordedRequest::open(self.sealer, row.bot_id, sealed)
            .map_err(|e| format!("cannot open the recorded request: {e}"))?;
        let original = recorded
            .token
            .as_ref()
            .map(|sealed| self.sealer.open(row.bot_id, sealed));
        let token = match (self.cfg.token_map.get(&row.bot_id), &original) {
            (Some(t), _) => t.clone(),
            (None, Some(Ok(t))) => t.clone(),
            (None, Some(Err(e))) => return Err(format!("cannot open the token: {e}")),
            (None, None) => {
                return Err("the client's token had no token's shape; it was never kept".into())
            }
        };
        let secrets: Vec<String> = [
            Some(&token),
            original.as_ref().and_then(|o| o.as_ref().ok()),
        ]
        .into_iter()
        .flatten()
        .filter_map(|t| t.expose().split_once(':').map(|(_, s)| s.to_owned()))
        .collect();
        let mut url = self.cfg.target.clone();
        let path = format!(
            "{}/bot{}/{}{}",
            url.path().trim_end_matches('/'),
            token.expose(),
            if recorded.test_env { "test/" } else { "" },
            recorded.method
        );
        url.set_path(&path);
        url.set_query((!recorded.query.is_empty()).then_some(recorded.query.as_str()));
        let method = reqwest::Method::from_bytes(recorded.http_method.as_bytes())
            .unwrap_or(reqwest::Method::POST);
        let req = self.http.request(method, url);
        use reqwest::header::CONTENT_TYPE;
        let req = match recorded.body {
            CallBody::Empty => req,
            CallBody::Json { value } => req
                .header(CONTENT_TYPE, "application/json")
                .body(serde_json::to_vec(&value).unwrap_or_default()),
            CallBody::Form { pairs } => {
                let mut f = form_urlencoded::Serializer::new(String::new());
                for (k, v) in &pairs {
                    f.append_pair(k, v);
                }
                req.header(CONTENT_TYPE, "application/x-www-form-urlencoded")
                    .body(f.finish())
            }
            CallBody::Multipart { parts } => {
                let mut form = reqwest::multipart::Form::new();
                for p in parts {
                    form = match p {
                        Part::Text { name, value } => form.text(name, value),
                        Part::File {
                            name,
                            file_name,
                            content_type,
                            blob,
                        } => {
                            let mut part = reqwest::multipart::Part::stream_with_length(
                                self.blob_body(&blob).await?,
                                blob.size,
                            );
                            if let Some(f) = file_name {
                                part = part.file_name(f);
                            }
                            if let Some(ct) = content_type {
                                part = part
                                    .mime_str(&ct)
                                    .map_err(|e| e.without_url().to_string())?;
                            }
                            form.part(name, part)
                        }
                    };
                }
                req.multipart(form)
            }
            CallBody::Other { content_type, data } => {
                let body = match &data {
                    BodyBytes::Blob { blob } => self.blob_body(blob).await?,
                    other => reqwest::Body::from(
                        other
                            .inline_bytes()
                            .map(|b| b.into_owned())
                            .unwrap_or_default(),
                    ),
                };
                req.header(CONTENT_TYPE, content_type).body(body)
            }
        };
        Ok((req, secrets))
    }

    /// A file part's bytes, streamed from the blob store.
    async fn blob_body(&self, blob: &schemas::BlobRef) -> Result<reqwest::Body, String> {
        let reader = self
            .blobs
            .open(blob)
            .await
            .map_err(|e| format!("the file {} is not in the blob store: {e}", blob.sha256))?;
        Ok(reqwest::Body::wrap_stream(
            tokio_util::io::ReaderStream::new(reader),
        ))
    }

    /// Sends; the status, the body (when it fits [`MAX_ANSWER`]) and its sha256.
    async fn send(
        &self,
        request: reqwest::RequestBuilder,
    ) -> Result<(u16, Option<Vec<u8>>, String), String> {
        let mut resp = request
            .send()
            .await
            .map_err(|e| format!("no answer: {}", e.without_url()))?;
        let status = resp.status().as_u16();
        let mut hash = sha2::Sha256::new();
        let mut body = Some(Vec::new());
        while let Some(chunk) = resp
            .chunk()
            .await
            .map_err(|e| format!("the answer broke off: {}", e.without_url()))?
        {
            hash.update(&chunk);
            if let Some(b) = body.as_mut() {
                if b.len() + chunk.len() > MAX_ANSWER {
                    body = None;
                } else {
                    b.extend_from_slice(&chunk);
                }
            }
        }
        Ok((status, body, hex::encode(hash.finalize())))
    }
}

/// `body` with every secret replaced as the record replaces the bot's token.
fn scrub(body: Vec<u8>, secrets: &[String]) -> Vec<u8> {
    let mut body = body;
    for secret in secrets {
        if body.windows(secret.len()).any(|w| w == secret.as_bytes()) {
            body = String::from_utf8_lossy(&body)
                .replace(secret.as_str(), "<token>")
                .into_bytes();
        }
    }
    body
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_reads_reach_telegram_without_allow_sends() {
        assert!(!acts("getMe") && !acts("GETCHAT") && !acts("getFile"));
        assert!(acts("sendMessage") && acts("deleteWebhook") && acts("logOut"));
        assert!(acts("getUpdates"), "it confirms the bot's updates");
        assert!(is_telegram(&"https://API.telegram.org/".parse().unwrap()));
        assert!(is_telegram(&"https://api.telegram.org./".parse().unwrap()));
        assert!(!is_telegram(&"http://127.0.0.1:8082".parse().unwrap()));
    }
}
