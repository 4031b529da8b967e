//! Processors: take calls off the bus, do the work, answer.
//!
//! Four stages, each its own consumer group, runnable apart ([`Stage`]):
//! - **router** (group `processors`, reads `calls`): executes every plain method itself
//!   (the passthrough, webhooks, getUpdates from the kept updates), so the common call gets no
//!   extra hop, and hands
//!   the calls that need file work to the files stage by publishing the very record to
//!   `calls.files` (keyed by bot, as on `calls`) before committing its own input.
//! - **files** (group `files`, reads `calls.files`): finds the file of a send or an upload,
//!   or each item's of a media group or an inline answer (a URL fetched, a multipart part, a
//!   file_id's bytes) and keeps it in the blob store, then publishes the call with a reference
//!   to it to `calls.media`; getFile downloads run here whole. A 2 GB upload holds a slot
//!   here, never one of the router's.
//! - **media** (group `media`, reads `calls.media`): reads the files (libmediainfo), decides the
//!   kind of a `sendFile` or `uploadFile`, and publishes the call with what it read to
//!   `calls.send`.
//! - **send** (group `send`, reads `calls.send`): sends the file, as a multipart part or
//!   uploaded over MTProto, or by the file_id the bot's earlier send of it left; answers.
//!
//! Records between stages carry references (blob keys, the sealed token), never file bytes;
//! each stage publishes its output before its input is committed.
//!
//! In each stage, each call runs on its own task, at most `per_bot` at once for one bot and
//! `total` overall, so a bot's 50-second long poll does not hold up its sendMessage and one
//! tenant cannot starve the rest. An offset is committed only when it and every record before
//! it are finished (the stage loop, [`bus::stage`]).
//!
//! For every call it executes, a stage answers a recorded outcome from the store (a
//! redelivery is never executed twice); otherwise the [`router`] picks the handler, the
//! outcome is written to the store (result + audit row), and the answer is published to the
//! caller's reply topic. Only the stage that executes a call records its attempt, so a call
//! handed over and then delivered to the router again is recognised by the files stage.
//!
//! # Layout
//! - [`run`], [`Stage`], [`ProcessorConfig`], [`Deps`]: the stages (this file).
//! - [`cmd`]: a call parsed once into a [`cmd::Command`]: which handler, in which stage,
//!   with what it needs.
//! - [`router`]: which methods may simply run again.
//! - [`passthrough`]: forwarding to upstream in the bot's own encoding.
//! - [`polls`]: getUpdates answered from the updates the gateway keeps; named readers.
//! - [`files`]: getFile for any size, stored once, served token-free.
//! - [`uploads`]: sends of URLs, of files over the Bot API's limits, renamed files: by
//!   multipart or MTProto.
//! - [`outcome`]: recording outcomes and answering.
//! - [`metrics`]: the processors' metrics.

mod actions;
mod auth;
mod chats;
pub mod flood;
pub use actions::ChatActions;
pub mod cmd;
mod failures;
pub mod files;
mod gate;
mod groups;
mod inline;
pub mod metrics;
pub mod outcome;
pub mod passthrough;
pub mod polls;
mod progress;
pub mod router;
pub mod uploads;
mod usernames;
mod webhooks;

use bus::Bus;
use schemas::{BotId, Call, Envelope};
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use store::blobs::Blobs;
use store::Store;
use telegram::botapi::BotApi;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use tokio_util::sync::CancellationToken;
use tracing::Instrument;

#[derive(Clone, Debug)]
pub struct ProcessorConfig {
    /// Instance name, for the producer field of records.
    pub instance: String,
    /// Calls of one bot running at once.
    pub per_bot: usize,
    /// Calls running at once in this process.
    pub total: usize,
    /// How long a call's outcome (the answer's body) is kept: it answers redeliveries on a
    /// durable bus, and is what audits show and replays compare with (`--retain-results`).
    /// Zero: not kept (the audit row keeps the answer's digest).
    pub result_ttl: Duration,
    /// The bus outlives this process (Kafka): a call may be delivered again after a crash or a
    /// rebalance, so each call's attempt and outcome are kept in the store to answer it without
    /// running it twice. The in-process bus dies with the processors, so nothing can come
    /// again and that bookkeeping (two of the three writes a call costs) is skipped.
    pub durable_bus: bool,
    /// How long shutdown waits for calls in flight.
    pub drain_timeout: Duration,
    /// Long polls (getUpdates with a timeout) waiting at once outside the slots of `total`;
    /// past it, a long poll takes a slot like any call.
    pub polls: usize,
}

impl Default for ProcessorConfig {
    fn default() -> Self {
        Self {
            instance: "local".into(),
            per_bot: 32,
            total: 4096,
            result_ttl: RESULT_TTL,
            durable_bus: true,
            drain_timeout: Duration::from_secs(30),
            polls: 100_000,
        }
    }
}

/// What the processors work with.
#[derive(Clone)]
pub struct Deps {
    pub bus: Arc<dyn Bus>,
    pub store: Arc<dyn Store>,
    pub blobs: Arc<dyn Blobs>,
    pub upstream: BotApi,
    pub sealer: schemas::Sealer,
    /// getFile's downloads and settings.
    pub files: files::Files,
    /// The gateway's public address (`--public-url`), when given: Telegram then pushes the
    /// updates of bots with a webhook to its `/hook/`; without it the gateway polls for them.
    pub public_url: Option<String>,
    /// The waiting calls of an ingest in this same process, when there is one: their answers
    /// are handed over directly rather than through its reply topic.
    pub local_replies: Option<LocalReplies>,
    /// Where setWebhook may point (`--webhook-networks`).
    pub webhook_destinations: Arc<fetch::Destinations>,
    /// Cancelled when the process starts shutting down (before open requests drain): waiting
    /// long polls are then answered with no updates at once, rather than hold the drain, and
    /// repeated chat actions stop.
    pub polls_stop: Option<CancellationToken>,
    /// The chat actions being kept showing (sendChatAction with `duration`).
    pub actions: actions::ChatActions,
    /// Flood control, when on (`--flood-control`): sends and edits queued within Telegram's
    /// limits.
    pub flood: Option<Arc<flood::Flood>>,
    /// The getUpdates waiting in this process, woken as their bots' updates are kept
    /// ([`polls::listen`]).
    pub polls: polls::Polls,
}

/// An ingest's correlator in this process, and the reply topic it would read.
///
/// Answers addressed to that topic, for calls registered with that correlator, are handed over
/// directly: the reply topic is transient (nothing reads it but the ingest waiting; the outcome
/// of record goes to the store alongside), so the trip through the bus bought nothing but
/// latency, a task wake-up on the in-process bus, and on Kafka half of a call's broker traffic
/// (a produce and a fetch). Answers for any other call still go through the bus.
#[derive(Clone)]
pub struct LocalReplies {
    pub topic: String,
    pub correlator: Arc<bus::reply::Correlator>,
}

#[derive(Debug, thiserror::Error)]
pub enum ProcessorError {
    #[error("bus: {0}")]
    Bus(#[from] bus::BusError),
}

/// The router stage's consumer group (the name every processor shared before the stages).
pub const GROUP: &str = "processors";

/// The files stage's consumer group.
pub const FILES_GROUP: &str = "files";

/// The media stage's consumer group.
pub const MEDIA_GROUP: &str = "media";

/// The send stage's consumer group.
pub const SEND_GROUP: &str = "send";

/// A processing stage: its own input topic and consumer group, scaled on its own.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Stage {
    /// Reads `calls`: executes plain methods, hands file work to [`Stage::Files`].
    Router,
    /// Reads `calls.files`: finds and keeps the files of sends, uploads, media groups and
    /// inline answers (then on to [`Stage::Media`]); getFile.
    Files,
    /// Reads `calls.media`: reads a send's or an upload's file, decides its kind (then on to
    /// [`Stage::Send`]).
    Media,
    /// Reads `calls.send`: uploads and sends the file; answers.
    Send,
}

impl Stage {
    pub const ALL: [Stage; 4] = [Stage::Router, Stage::Files, Stage::Media, Stage::Send];

    pub fn name(self) -> &'static str {
        match self {
            Stage::Router => "router",
            Stage::Files => "files",
            Stage::Media => "media",
            Stage::Send => "send",
        }
    }

    pub fn group(self) -> &'static str {
        match self {
            Stage::Router => GROUP,
            Stage::Files => FILES_GROUP,
            Stage::Media => MEDIA_GROUP,
            Stage::Send => SEND_GROUP,
        }
    }

    pub fn input(self) -> &'static str {
        match self {
            Stage::Router => bus::topics::CALLS,
            Stage::Files => bus::topics::CALLS_FILES,
            Stage::Media => bus::topics::CALLS_MEDIA,
            Stage::Send => bus::topics::CALLS_SEND,
        }
    }
}

/// How long a call's outcome is kept to answer a redelivery of it, by default.
pub const RESULT_TTL: Duration = Duration::from_secs(24 * 3600);

/// What every call of a run shares.
pub(crate) struct Run {
    /// The producer field of records (`processor/<instance>`).
    pub producer: String,
    /// How long outcomes are kept (see [`ProcessorConfig::result_ttl`]).
    pub result_ttl: Duration,
    /// The bus can deliver a call again (see [`ProcessorConfig::durable_bus`]).
    pub durable: bool,
    /// The stage this run is.
    pub stage: Stage,
}

/// Per-bot concurrency shares, created on first use.
struct Shares {
    per_bot: usize,
    bots: Mutex<HashMap<BotId, Arc<Semaphore>>>,
}

impl Shares {
    async fn acquire(&self, bot: BotId) -> OwnedSemaphorePermit {
        let sem = {
            let mut bots = self.bots.lock().unwrap_or_else(|p| p.into_inner());
            // Forget bots that have nothing running, so the map does not grow forever.
            if bots.len() > 10_000 {
                let full = self.per_bot;
                bots.retain(|_, s| s.available_permits() < full);
            }
            bots.entry(bot)
                .or_insert_with(|| Arc::new(Semaphore::new(self.per_bot)))
                .clone()
        };
        sem.acquire_owned().await.expect("shares are never closed")
    }
}

/// Runs the processors until `shutdown`, then drains: stops taking calls, finishes those in
/// flight (up to `drain_timeout`), commits.
pub async fn run(
    stage: Stage,
    cfg: ProcessorConfig,
    deps: Deps,
    shutdown: CancellationToken,
) -> Result<(), ProcessorError> {
    // Both ends of each hand-over make sure of its topic: any stage may start first.
    let topics: Vec<String> = Stage::ALL.iter().map(|s| s.input().to_owned()).collect();
    deps.bus.ensure_topics(&topics).await?;
    let bus = deps.bus.clone();
    let run = Arc::new(Run {
        producer: format!("processor/{}", cfg.instance),
        result_ttl: cfg.result_ttl,
        durable: cfg.durable_bus,
        stage,
    });
    let shares = Arc::new(Shares {
        per_bot: cfg.per_bot.max(1),
        bots: Mutex::new(HashMap::new()),
    });
    let polls = Arc::new(Semaphore::new(cfg.polls.max(1)));
    let running = Running::default();
    let opts = bus::stage::Options {
        name: match stage {
            Stage::Router => "processors",
            other => other.name(),
        },
        concurrency: cfg.total.max(1),
        batch: 1,
        drain: cfg.drain_timeout,
    };
    // Shared, not cloned for each call: a clone of its dozen handles (and their drop) was 1%
    // of a plain call's time.
    let deps = Arc::new(deps);
    let handle = move |records: Vec<bus::Record>, slot: bus::stage::Slot| {
        let deps = deps.clone();
        let shares = shares.clone();
        let run = run.clone();
        let polls = polls.clone();
        let running = running.clone();
        let env = records
            .into_iter()
            .next()
            .and_then(bus::take_or_skip::<Call>);
        // With flood control, a send or an edit takes its place in its chat's queue as the
        // router reads it, so calls to one chat leave in that order. A file call keeps it
        // across the hand-over when the files stage is in this process ([`flood::Flood::park`]);
        // one handed to another process takes its place when it is ready to send.
        let ticket = env.as_ref().and_then(|e| {
            let flood = deps.flood.as_ref()?;
            match stage {
                Stage::Router => flood.ticket(e.header.bot_id, &e.payload),
                _ => None,
            }
        });
        async move {
            let Some(env) = env else {
                return Ok(());
            };
            // A durable bus may deliver a call again while its first copy still runs here (a
            // hand-over repeated after the router's restart, a rebalance): the first answers
            // it, and the copy neither waits at the gate nor records a 409 over its outcome.
            let _claim = if run.durable {
                match running.claim(env.header.call_id) {
                    Some(claim) => Some(claim),
                    None => {
                        tracing::info!(call_id = %env.header.call_id, "a copy of a call running here; the first answers it");
                        metrics::REDELIVERED.with_label_values(&["duplicate"]).inc();
                        return Ok(());
                    }
                }
            } else {
                None
            };
            // The call as the bot sent it (the ingest marked its token on the bus), parsed
            // once: the stage it belongs to, then what runs it.
            let unmasked = schemas::mask::unmasked(&deps.sealer, &env);
            let command = cmd::Command::parse(unmasked.as_ref().unwrap_or(&env.payload));
            if stage == Stage::Router {
                // The router sees every call of its bots first: a send ends a repeated action.
                deps.actions
                    .seen(env.header.bot_id, unmasked.as_ref().unwrap_or(&env.payload));
            }
            if stage == Stage::Router
                && env.payload.rejected.is_none()
                && command.as_ref().is_ok_and(|c| c.stage() == Stage::Files)
            {
                // Handed over as the ingest published it, its token still masked.
                // With its place in its chat's queue kept for the files stage: parked for it
                // here, or kept by a task here that a files stage elsewhere takes its turns
                // from (the record then says so).
                let kept = match (ticket, &deps.flood) {
                    (Some(ticket), Some(flood)) => {
                        Some(flood.keep_place(&deps.bus, &run.producer, &env, ticket))
                    }
                    _ => None,
                };
                let handed = if kept == Some(flood::Kept::Elsewhere) {
                    let mut marked = env.clone();
                    marked.header.flood_place = true;
                    std::borrow::Cow::Owned(marked)
                } else {
                    std::borrow::Cow::Borrowed(&env)
                };
                if !hand_over(&deps, &run, &handed, Stage::Files).await && kept.is_some() {
                    if let Some(flood) = &deps.flood {
                        flood.drop_place(env.header.call_id);
                    }
                }
                return Ok(());
            }
            let env = match unmasked {
                Some(call) => Envelope {
                    payload: call,
                    ..env
                },
                None => env,
            };
            // A file call takes its chat's turn in the stage that sends it: the files and
            // media stages before it fetch and read without holding up the chat's order, which
            // the router fixed when it read the call (its place is kept until then).
            let sends_here =
                stage != Stage::Router && command.as_ref().map_or(true, |c| c.sends_in() == stage);
            let ticket = match (&deps.flood, sends_here) {
                (Some(flood), true) => flood.unpark(env.header.call_id),
                _ => ticket,
            };
            // A long poll mostly waits: it gives its slot back and takes neither the bot's
            // share, so no number of waiting polls holds up anyone's calls (they have a bound
            // of their own).
            let parked = if command.as_ref().is_ok_and(cmd::Command::is_long_poll) {
                polls.try_acquire_owned().ok().inspect(|_| slot.release())
            } else {
                None
            };
            let span = tracing::info_span!("call", call_id = %env.header.call_id, bot_id = %env.header.bot_id);
            async move {
                if parked.is_some() {
                    metrics::POLLS_WAITING.inc();
                    let stop = deps.polls_stop.clone().unwrap_or_default();
                    let answering = Arc::new(std::sync::atomic::AtomicBool::new(false));
                    let work = guarded(&deps, &run, &env, command);
                    let mut work = Box::pin(outcome::watch_answering(answering.clone(), work));
                    tokio::select! {
                        biased;
                        _ = &mut work => {}
                        _ = stop.cancelled() => {
                            if answering.load(std::sync::atomic::Ordering::Relaxed) {
                                // It has its answer (the bot may have it already): what is
                                // left is recording it (waiting for room in the store's
                                // queue, say), which the stop's empty answer must not
                                // replace.
                                work.await;
                            } else {
                                // Still waiting (upstream, say). Nothing was confirmed to
                                // Telegram (that takes the next poll's offset): the poll
                                // ends with no updates, and the bot asks again.
                                drop(work);
                                outcome::finish(&deps, &run, &env, webhooks::no_updates())
                                    .await;
                            }
                        }
                    }
                    metrics::POLLS_WAITING.dec();
                } else if let Some(flood) = deps
                    .flood
                    .clone()
                    .filter(|_| sends_here && env.header.flood_place)
                {
                    // The same, when the router keeping the call's place is in another
                    // process: the turn is asked for over the bus.
                    let place = flood::Place::open(&flood, &deps.bus, &run.producer, &env);
                    // A copy delivered again after its first run reached upstream is answered as
                    // `process` answers such copies (its recorded outcome, or the 409 of an
                    // unknown outcome), never with a turn's refusal recorded over it.
                    let turn = if run.durable && ran_before(&deps, env.header.call_id).await {
                        Ok(())
                    } else {
                        place.turn(&env.payload).await
                    };
                    match turn {
                        Ok(()) => {
                            let _share = shares.acquire(env.header.bot_id).await;
                            flood::with_place(place, Box::pin(guarded(&deps, &run, &env, command)))
                                .await;
                        }
                        Err(answer) => outcome::finish(&deps, &run, &env, answer).await,
                    }
                } else if sends_here && ticket.is_some() {
                    // A file call keeps its chat's turn through its work: it waits for the turn
                    // before it takes the bot's share, so a share is only held by calls whose
                    // turn it is, and a later send to the chat waits for it.
                    let turn = match (&ticket, &deps.flood) {
                        (Some(t), Some(flood)) => flood.wait_turn(t, &env).await,
                        _ => Ok(()),
                    };
                    match turn {
                        Ok(()) => {
                            let _share = shares.acquire(env.header.bot_id).await;
                            let work = Box::pin(guarded(&deps, &run, &env, command));
                            flood::with_ticket(ticket, work).await;
                        }
                        Err(answer) => outcome::finish(&deps, &run, &env, answer).await,
                    }
                } else if ticket.is_some() {
                    // A plain send queued by flood control mostly waits for its turn and its
                    // tokens: like a long poll it holds neither a slot nor the bot's share (a
                    // later call of its chat holding the share could otherwise keep the earlier
                    // one from its turn). Its work is one request upstream.
                    slot.release();
                    let work = Box::pin(guarded(&deps, &run, &env, command));
                    flood::with_ticket(ticket, work).await;
                } else {
                    let _share = shares.acquire(env.header.bot_id).await;
                    let passed_on = guarded(&deps, &run, &env, command).await;
                    if stage != Stage::Router && !sends_here && !passed_on {
                        // Answered before the stage that sends it: its place in its chat's
                        // queue is given up, or the chat would wait for it until its deadline.
                        release_place(&deps, &run, &env);
                    }
                }
                Ok::<(), ProcessorError>(())
            }
            .instrument(span)
            .await
        }
    };
    // On the in-process bus the stage takes its calls from their publishers directly: a call
    // then runs without waking a consumer task first, as it would through Kafka.
    if bus.pushes() {
        // The router's calls (the hot path) run where they were published, on their
        // connection's lane; the file stages' (hashing, probing, encrypting up to 2000 MB) on
        // this, the process's shared runtime, whose threads share them.
        let on = (stage != Stage::Router).then(tokio::runtime::Handle::current);
        return bus::stage::run_pushed(
            bus.as_ref(),
            stage.input(),
            stage.group(),
            opts,
            on,
            shutdown,
            handle,
        )
        .await;
    }
    let consumer = bus
        .subscribe(stage.group(), &[stage.input().to_owned()])
        .await?;
    bus::stage::run(consumer, opts, shutdown, handle).await
}

/// Hands a call to the `next` stage: the record as the ingest published it (its token still
/// masked), keyed by bot, with what the stages so far found. A stage's offset is committed
/// only after this returns, so a crash in between delivers the call to the stage again and it
/// is handed over again; the attempt record of the stage that sends keeps it from being sent
/// twice. If the bus refuses the record (its own retries spent), the call is answered with a
/// 500: nothing of it was executed, so the bot may safely send it again; if the bus could not
/// confirm it, the next stage may still run it, and the answer is the 409 of an unknown
/// outcome.
async fn hand_over(deps: &Deps, run: &Run, env: &Envelope<Call>, next: Stage) -> bool {
    match bus::publish_envelope(deps.bus.as_ref(), next.input(), env).await {
        Ok(()) => {
            metrics::HANDED_OVER.inc();
            true
        }
        Err(error) => {
            tracing::error!(%error, call_id = %env.header.call_id, stage = next.name(), "could not hand a call to its next stage");
            let error = if error.may_have_been_stored() {
                schemas::ApiError::unknown_outcome(schemas::UnknownOutcome::Unconfirmed)
            } else {
                schemas::ApiError::internal(format!(
                    "the gateway could not hand this call to its {} stage; it was not executed",
                    next.name()
                ))
            };
            outcome::finish(deps, run, env, schemas::Response::from_error(&error)).await;
            false
        }
    }
}

/// Hands a call on to `next` with what this stage found (`None`: as it came).
async fn pass_on(
    deps: &Deps,
    run: &Run,
    env: &Envelope<Call>,
    staged: Option<schemas::Staged>,
    next: Stage,
) -> bool {
    let mut onward = env.clone();
    if let Some(staged) = staged {
        onward.payload.staged = Some(Box::new(staged));
    }
    // The stage worked on the call as the bot sent it: marked again as the ingest marked it.
    schemas::mask::remask(&deps.sealer, &mut onward);
    hand_over(deps, run, &onward, next).await
}

/// Gives up the place a call answered before its sending stage kept in its chat's flood
/// control queue: parked in this process, or kept by the router elsewhere (told it is over).
fn release_place(deps: &Deps, run: &Run, env: &Envelope<Call>) {
    let Some(flood) = &deps.flood else {
        return;
    };
    if env.header.flood_place {
        drop(flood::Place::open(flood, &deps.bus, &run.producer, env));
    } else {
        drop(flood.unpark(env.header.call_id));
    }
}

/// Whether a call has run before here: its outcome recorded, or its attempt begun.
async fn ran_before(deps: &Deps, call: schemas::CallId) -> bool {
    matches!(deps.store.get_result(call).await, Ok(Some(_)))
        || matches!(deps.store.attempted(call).await, Ok(true))
}

/// The calls a stage is running, by id (on a durable bus only).
#[derive(Clone, Default)]
struct Running(Arc<Mutex<std::collections::HashSet<schemas::CallId>>>);

/// A call marked running until dropped.
struct Claim(Running, schemas::CallId);

impl Running {
    /// Marks `id` running, or `None` when it is already.
    fn claim(&self, id: schemas::CallId) -> Option<Claim> {
        let fresh = self.0.lock().unwrap_or_else(|p| p.into_inner()).insert(id);
        fresh.then(|| Claim(self.clone(), id))
    }
}

impl Drop for Claim {
    fn drop(&mut self) {
        self.0
             .0
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(&self.1);
    }
}

/// [`process`], made safe from panics: a handler that panics still gets its call a shaped
/// answer and an audit row, and returns (so its offset is released and its slots freed). The
/// answer is a 500 when nothing went upstream (or the method only reads); otherwise the 409
/// of an unknown outcome, since the call may have been executed and a 5xx invites a resend.
async fn guarded(deps: &Deps, run: &Run, env: &Envelope<Call>, command: Parsed) -> bool {
    use futures_util::FutureExt;
    use std::panic::AssertUnwindSafe;
    let sent = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let work = AssertUnwindSafe(process(deps, run, env, command)).catch_unwind();
    let panic = match telegram::sent::track(sent.clone(), work).await {
        Ok(passed_on) => return passed_on,
        Err(panic) => panic,
    };
    let method = &env.payload.method;
    let reached = sent.load(std::sync::atomic::Ordering::Relaxed);
    metrics::PANICS.inc();
    tracing::error!(
        %method,
        reached_upstream = reached,
        panic = %lifecycle::panic_message(&*panic),
        "a call's handler panicked; answering it with an error"
    );
    let error = if !reached || router::safe_to_repeat(method) {
        schemas::ApiError::internal("the gateway failed on this call")
    } else {
        schemas::ApiError::unknown_outcome(schemas::UnknownOutcome::Restarted)
    };
    let answer = outcome::finish(deps, run, env, schemas::Response::from_error(&error));
    if AssertUnwindSafe(answer).catch_unwind().await.is_err() {
        tracing::error!(%method, "answering a call that panicked panicked too");
    }
    false
}

/// The size of a call's future ([`guarded`]'s), which a stage moves into the call's task:
/// kept small by boxing what only some calls run, and by wrappers that are not `async fn`s
/// (one holds the future it is given twice). `tests/pipeline.rs` watches it: at 67 KB (in a
/// release build; 9.3 KB, then 7.1 KB since) its copy was 2% of the gateway's time on the
/// hot path.
#[doc(hidden)]
pub fn call_future_size(deps: &Deps, env: &Envelope<Call>) -> usize {
    let run = Run {
        producer: String::new(),
        result_ttl: Duration::ZERO,
        durable: false,
        stage: Stage::Router,
    };
    let refused = Err(schemas::ApiError::not_found());
    let fut = guarded(deps, &run, env, refused);
    std::mem::size_of_val(&fut)
}

/// Test builds only: `TELEPIPE_TEST_PANIC=<method>` makes that method's handler panic before
/// anything goes upstream, `TELEPIPE_TEST_PANIC_AFTER=<method>` after upstream answered (the
/// end-to-end tests force both). Release builds compile this out.
fn forced_panic(method: &str, after: bool) {
    if !cfg!(debug_assertions) {
        return;
    }
    static BEFORE: std::sync::OnceLock<Option<String>> = std::sync::OnceLock::new();
    static AFTER: std::sync::OnceLock<Option<String>> = std::sync::OnceLock::new();
    let (cell, var) = if after {
        (&AFTER, "TELEPIPE_TEST_PANIC_AFTER")
    } else {
        (&BEFORE, "TELEPIPE_TEST_PANIC")
    };
    if cell
        .get_or_init(|| std::env::var(var).ok())
        .as_deref()
        .is_some_and(|m| m.eq_ignore_ascii_case(method))
    {
        panic!("forced by {var} (a test)");
    }
}

/// A call parsed, or the Bot API error its parameters get.
type Parsed = Result<cmd::Command, schemas::ApiError>;

/// When a call's attempt record may go: it is kept while a redelivery may come (a day at
/// least, whatever the answers' retention).
fn attempt_expires(run: &Run) -> i64 {
    schemas::now_ms() + run.result_ttl.max(RESULT_TTL).as_millis() as i64
}

/// One call, start to finish, or this stage's part of it. Never fails: every failure becomes
/// an answer. True when the call went on to the next stage (no answer made here).
async fn process(deps: &Deps, run: &Run, env: &Envelope<Call>, command: Parsed) -> bool {
    forced_panic(&env.payload.method, false);
    let queued_ms = (schemas::now_ms() - env.header.time_ms).max(0) as u64;
    bus::metrics::QUEUE_SECONDS.observe(queued_ms as f64 / 1000.0);

    if let Some(err) = &env.payload.rejected {
        outcome::record_rejected(deps, env, err).await;
        return false;
    }
    // A parameter the gateway refuses: answered before anything is asked of upstream or the
    // store (a redelivery would be refused alike).
    let command = match command {
        Ok(command) => command,
        Err(error) => {
            let mut response = schemas::Response::from_error(&error);
            response.stages.queue_ms = queued_ms;
            outcome::finish(deps, run, env, response).await;
            return false;
        }
    };
    // The files stage records its attempt only when the call is about to reach upstream
    // ([`gate`]): until then a run that dies has sent nothing, and the next may start over.
    let gated = run.durable && run.stage != Stage::Router;
    // Where a staged command goes from here (files → media → send), if it does not end here.
    let next = command.after(run.stage);
    let begin = match run.durable {
        // Nothing can deliver this call again: it is new.
        false => store::Begin::Fresh,
        true if gated => match deps.store.get_result(env.header.call_id).await {
            Ok(Some(stored)) => store::Begin::Done(stored),
            // An earlier run reached upstream (its stage stopped after): decided now, before
            // its files are fetched, read and uploaded again only to be stopped at the gate.
            Ok(None) => match deps.store.attempted(env.header.call_id).await {
                Ok(true) => store::Begin::InFlight,
                Ok(false) => store::Begin::Fresh,
                Err(error) => {
                    tracing::warn!(%error, "could not look for an earlier attempt; going ahead");
                    store::Begin::Fresh
                }
            },
            Err(error) => {
                tracing::warn!(%error, "could not look for a recorded outcome; going ahead");
                store::Begin::Fresh
            }
        },
        true => {
            let started = std::time::Instant::now();
            let recorded = deps
                .store
                .begin(env.header.call_id, attempt_expires(run))
                .await;
            bus::metrics::ATTEMPT_SECONDS.observe(started.elapsed().as_secs_f64());
            match recorded {
                Ok(b) => b,
                Err(error) => {
                    // Without the store the call can still be served; a crash now could
                    // repeat it.
                    tracing::warn!(%error, "could not record the attempt; going ahead");
                    store::Begin::Fresh
                }
            }
        }
    };
    let mut response = match begin {
        store::Begin::Done(mut stored) => {
            tracing::info!("redelivered call answered from its recorded outcome");
            metrics::REDELIVERED.with_label_values(&["answered"]).inc();
            stored.origin = schemas::Origin::Stored;
            outcome::mark_answering();
            outcome::reply(deps, &run.producer, env, stored).await;
            return false;
        }
        // A copy of a call whose send began (its first copy may still be sending, in
        // the send stage): passed on as it is, unworked, for the send stage to tell apart (its
        // claim leaves it to a first copy running there; otherwise the 409 below). Answered
        // here, it could reach the bot before the first copy's answer.
        store::Begin::InFlight if let Some(next) = next => {
            metrics::REDELIVERED.with_label_values(&["passed_on"]).inc();
            return pass_on(deps, run, env, None, next).await;
        }
        store::Begin::InFlight if !router::safe_to_repeat(&env.payload.method) => {
            // Its processor stopped after handing it to upstream: it may have been executed.
            // Sending it again could send a message twice, and a 5xx would make clients resend.
            tracing::warn!(method = %env.payload.method, "call was in flight when its processor stopped; not sending it again");
            metrics::REDELIVERED
                .with_label_values(&["unknown_outcome"])
                .inc();
            schemas::Response::from_error(&schemas::ApiError::unknown_outcome(
                schemas::UnknownOutcome::Restarted,
            ))
        }
        other => {
            if other == store::Begin::InFlight {
                metrics::REDELIVERED.with_label_values(&["repeated"]).inc();
            }
            // A send or an upload crossing the file stages: this stage's part, then on.
            if let Some(next) = next {
                let mut answer = match command.step(deps, env, run.stage).await {
                    Ok(staged) => return pass_on(deps, run, env, Some(staged), next).await,
                    Err(answer) => answer,
                };
                answer.stages.queue_ms = queued_ms;
                outcome::finish(deps, run, env, answer).await;
                return false;
            }
            // Users and bots named by @username, by id from here on (the record keeps the
            // call as the bot sent it).
            let resolved;
            let env = match usernames::resolve(deps, env).await {
                Ok(None) => env,
                Ok(Some(call)) => {
                    resolved = Envelope {
                        header: env.header.clone(),
                        payload: call,
                    };
                    &resolved
                }
                Err(answer) => {
                    let mut answer = answer;
                    answer.stages.queue_ms = queued_ms;
                    outcome::finish(deps, run, env, answer).await;
                    return false;
                }
            };
            let response = if gated && run.stage == command.sends_in() {
                let gate = gate::Gate::new(
                    deps.store.clone(),
                    env.header.call_id,
                    &env.payload.method,
                    attempt_expires(run),
                );
                // Boxed: only a durable bus's sending stage takes this way, and a future
                // passed on by value takes its room in the call's future twice.
                Box::pin(gate::scope(gate, command.apply(deps, env))).await
            } else {
                command.apply(deps, env).await
            };
            forced_panic(&env.payload.method, true);
            response
        }
    };
    response.stages.queue_ms = queued_ms;
    outcome::finish(deps, run, env, response).await;
    false
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The size of what `f` returns, without calling it.
    fn returned_size<A, R>(_: impl Fn(A) -> R) -> usize {
        std::mem::size_of::<R>()
    }

    /// A future of 4 KB or more.
    async fn big() {
        let held = [7u8; 4096];
        tokio::task::yield_now().await;
        std::hint::black_box(&held);
    }

    /// The task-local scopes a call runs in add little to its future, not a second copy of
    /// it (which an `async fn` wrapper holds): every call's task carries them.
    #[test]
    fn scopes_add_little_to_a_calls_future() {
        let inner = returned_size(|(): ()| big());
        assert!(inner >= 4096, "{inner}");
        let sizes = [
            ("track", returned_size(|f| telegram::sent::track(f, big()))),
            ("gate", returned_size(|g| gate::scope(g, big()))),
            ("place", returned_size(|p| flood::with_place(p, big()))),
            ("ticket", returned_size(|t| flood::with_ticket(t, big()))),
        ];
        for (scope, size) in sizes {
            assert!(size < inner + 256, "{scope}: {inner} -> {size}");
        }
    }

    #[test]
    fn a_call_is_claimed_once_while_it_runs() {
        let running = Running::default();
        let id = schemas::CallId::new();
        let first = running.claim(id).expect("first claim");
        assert!(running.claim(id).is_none(), "a copy while the first runs");
        assert!(running.claim(schemas::CallId::new()).is_some());
        drop(first);
        assert!(
            running.claim(id).is_some(),
            "free again once the first is done"
        );
    }
}
