//! Flood control (ENHANCED.md, "Flood control (opt-in)"; `--flood-control`): a bot's sends and
//! edits leave within Telegram's limits, so the bot never sees a 429 it could have avoided.
//!
//! Every call of a bot reaches one processor of a stage (records are keyed by bot), so the
//! buckets live here, in memory, with no lock shared between machines. Per chat, calls wait
//! their turn in arrival order (a fair lock held through the send, so a retried call keeps its
//! place); each then takes a token from its chat's bucket (a private chat about one a second
//! with a burst of three; a group, supergroup or channel twenty a minute) and from its bot's
//! (thirty a second, or a thousand with `allow_paid_broadcast`). The chat's kind is what the
//! answers said (`result.chat.type`), else what its id's sign says (users are positive).
//!
//! An upstream 429 pauses that chat's bucket for `retry_after` and the call is sent again: a
//! 429 means Telegram executed nothing. When the chat had sent nothing for a while (its
//! bucket was full), the limit Telegram meant is the bot's: the bot's lane is paused too. When the wait would pass the call's deadline, the bot
//! gets Telegram's own 429 with the seconds left to wait, never an invented 5xx.
//!
//! On for every bot with `--flood-control`; a bot turns it on or off for itself, with limits of
//! its own, by setFloodControl (kept in the store, read again by every process every 10 s, so
//! a split deployment's stages agree); getFloodControl shows its settings, its queues and its
//! counts. A public chat's `@username` shares its id's bucket once an answer told the id.
//!
//! A client that goes away cancels its call while it waits: the ingest announces it on
//! `calls.cancel`, which every processor reads ([`watch`]), and the call is recorded with a
//! 499 and never sent. Chat kinds are learnt from sends' answers, getChat answers and the
//! bots' updates (the `updates` topic, read by the same task).
//!
//! A file call keeps the place the router took for it across the hand-over to the files
//! stage: parked for it in this process ([`Flood::park`]), or kept by a task of the router
//! ([`Flood::serve_place`]) that a files stage in another process takes its turn and its
//! tokens from over `flood.turns` ([`Place`]). So a bot's sends to a chat share one order and
//! one set of buckets, whichever stage sends them (an upload's post to the storage chat from a
//! files stage apart takes that process's own).

use crate::failures;
use crate::Deps;
use schemas::{ApiError, BotId, Call, CallId, Envelope, FloodTurn, Response};
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio_util::sync::CancellationToken;

/// A bucket's size and how fast it fills.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct Rule {
    pub burst: f64,
    pub per_second: f64,
}

/// Telegram's limits (`notes/FLOOD.md`).
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct Limits {
    pub private: Rule,
    pub group: Rule,
    pub bot: Rule,
    pub paid: Rule,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            private: Rule {
                burst: 3.0,
                per_second: 1.0,
            },
            group: Rule {
                burst: 20.0,
                per_second: 20.0 / 60.0,
            },
            bot: Rule {
                burst: 30.0,
                per_second: 30.0,
            },
            paid: Rule {
                burst: 1000.0,
                per_second: 1000.0,
            },
        }
    }
}

/// A bot's flood control: on or off, and its limits (setFloodControl), as the store keeps it.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct Settings {
    pub enabled: bool,
    pub limits: Limits,
    /// When the bot set them: of two versions (this process's, the store's), the later holds.
    #[serde(default)]
    pub at_ms: i64,
}

impl Limits {
    /// Whether every bucket can hold a whole token and fills at a rate a wait can be counted
    /// in: what setFloodControl accepts, and what is taken from the store.
    pub fn sane(&self) -> bool {
        [self.private, self.group, self.bot, self.paid]
            .iter()
            .all(|r| {
                (1.0..=100_000.0).contains(&r.burst) && (0.0001..=100_000.0).contains(&r.per_second)
            })
    }
}

/// What became of a call in flood control.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Counted {
    Sent,
    Absorbed,
    Expired,
    Cancelled,
}

impl Counted {
    fn label(self) -> &'static str {
        match self {
            Counted::Sent => "sent",
            Counted::Absorbed => "absorbed",
            Counted::Expired => "expired",
            Counted::Cancelled => "cancelled",
        }
    }
}

/// What flood control did for a bot (getFloodControl).
#[derive(Clone, Copy, Debug, Default)]
struct Counts {
    sent: u64,
    absorbed: u64,
    expired: u64,
    cancelled: u64,
}

/// How often every process reads the bots' settings again.
pub const RELOAD_EVERY: Duration = Duration::from_secs(10);

/// How much sooner than the one before it a request may reach Telegram (which counts on
/// arrival): each bucket keeps what fills in that time in reserve, so a burst whose first
/// requests took longer to get there than its last is still within Telegram's count.
const SLACK: Duration = Duration::from_millis(100);

/// The longest pause a 429 sets (Telegram's `retry_after` can be days after abuse; the calls
/// are still answered with it).
const MAX_PAUSE_S: u64 = 7 * 24 * 3600;

/// How long a cancel for a call not (yet) queued here is remembered at least (unless ten
/// thousand more come first): the call may be read after its cancel.
const CANCEL_KEPT: Duration = Duration::from_secs(600);

/// Above this many chats, idle ones (nobody queued, bucket full, no pause) are forgotten.
const KEEP_LANES: usize = 10_000;

struct Bucket {
    tokens: f64,
    at: Instant,
    /// Set by a 429: nothing leaves before then.
    paused_until: Option<Instant>,
    /// Whether the bucket was full when its last token was taken: a chat that had sent
    /// nothing for a while, so a 429 on that send was not the chat's limit.
    was_full: bool,
}

impl Bucket {
    fn new(rule: Rule) -> Self {
        Self {
            tokens: rule.burst,
            at: Instant::now(),
            paused_until: None,
            was_full: false,
        }
    }

    /// How long until a token is there (filling up to `now` first).
    fn wait(&mut self, rule: Rule, now: Instant) -> Duration {
        let filled = now.duration_since(self.at).as_secs_f64() * rule.per_second;
        self.tokens = (self.tokens + filled).min(rule.burst);
        self.at = now;
        let paused = self
            .paused_until
            .map(|u| u.saturating_duration_since(now))
            .unwrap_or_default();
        // The reserve, never more than the burst leaves (a burst of one keeps none).
        let need = 1.0 + (rule.per_second * SLACK.as_secs_f64()).min(rule.burst - 1.0);
        let fill = if self.tokens >= need {
            Duration::ZERO
        } else {
            Duration::try_from_secs_f64((need - self.tokens) / rule.per_second)
                .unwrap_or(Duration::from_secs(MAX_PAUSE_S))
                .min(Duration::from_secs(MAX_PAUSE_S))
        };
        paused.max(fill)
    }
}

/// One chat's queue: tickets in arrival order, and its bucket.
struct Lane {
    queue: Mutex<Queue>,
    moved: tokio::sync::Notify,
    bucket: Mutex<Bucket>,
}

#[derive(Default)]
struct Queue {
    /// The next ticket to give out.
    next: u64,
    /// The ticket whose turn it is.
    serving: u64,
    /// Tickets given up before their turn came (their calls ended another way).
    left: std::collections::BTreeSet<u64>,
}

/// A call's place in its chat's queue, taken when the call arrives (in the order the stage
/// reads them), so calls to one chat leave in that order however their tasks run. Dropped,
/// it lets the next one go.
pub struct Ticket {
    lane: Arc<Lane>,
    /// Taken with flood control on for the bot: it waits for tokens. One taken only because
    /// the bot still had calls queued (it turned flood control off) keeps its order and no
    /// more, and does not keep the bot queueing.
    metered: bool,
    /// The bot's label in the metrics.
    label: String,
    /// Every bot's count of tickets held ([`Flood::held`]).
    held: Arc<Mutex<HashMap<BotId, usize>>>,
    number: u64,
    bot: BotId,
    chat: String,
    /// The chat as the call named it (`@name`, before an alias made it the id).
    named: String,
}

impl Ticket {
    /// Whether this is the place of a call of `bot` to `chat`: its chat as named, or as the
    /// ticket's queue knows it (a user's @name that the call's resolution replaced by the id).
    fn is_for(&self, bot: BotId, chat: Option<&str>) -> bool {
        self.bot == bot && chat.is_some_and(|c| c == self.named || c == self.chat)
    }

    /// Waits until it is this call's turn.
    pub(crate) async fn turn(&self) {
        loop {
            let moved = self.lane.moved.notified();
            tokio::pin!(moved);
            moved.as_mut().enable();
            if lock(&self.lane.queue).serving == self.number {
                return;
            }
            moved.await;
        }
    }
}

impl Drop for Ticket {
    fn drop(&mut self) {
        crate::metrics::FLOOD_QUEUED
            .with_label_values(&[&self.label])
            .dec();
        if self.metered {
            let mut held = lock(&self.held);
            if let Some(n) = held.get_mut(&self.bot) {
                *n -= 1;
                if *n == 0 {
                    held.remove(&self.bot);
                }
            }
        }
        let mut q = lock(&self.lane.queue);
        if q.serving == self.number {
            q.serving += 1;
            loop {
                let next = q.serving;
                if !q.left.remove(&next) {
                    break;
                }
                q.serving += 1;
            }
        } else {
            q.left.insert(self.number);
        }
        drop(q);
        self.lane.moved.notify_waiters();
    }
}

/// A queued call's watch for its client going away ([`Flood::watch`]).
struct Watch<'a> {
    flood: &'a Flood,
    call: CallId,
    gone: CancellationToken,
}

impl Watch<'_> {
    /// Waits for `ticket`'s turn in its chat, up to `left`.
    async fn turn(&self, ticket: &Ticket, left: Duration) -> Wait {
        match self
            .or_gone(tokio::time::timeout(left, ticket.turn()))
            .await
        {
            None => Wait::Gone,
            Some(Err(_)) => Wait::Late(Duration::from_secs(1)),
            Some(Ok(())) => Wait::Go,
        }
    }

    /// Runs `f` unless the client goes away first (`None`).
    async fn or_gone<F: std::future::Future>(&self, f: F) -> Option<F::Output> {
        tokio::select! {
            biased;
            _ = self.gone.cancelled() => None,
            out = f => Some(out),
        }
    }
}

impl Drop for Watch<'_> {
    fn drop(&mut self) {
        let mut cancels = lock(&self.flood.cancels);
        if let Some((_, watchers)) = cancels.waiting.get_mut(&self.call) {
            *watchers -= 1;
            if *watchers == 0 {
                cancels.waiting.remove(&self.call);
                // A cancel that came while nobody awaited it still holds for the call's next
                // wait (an upload's storage post, then its send).
                if self.gone.is_cancelled() {
                    cancels.remember(self.call);
                }
            }
        }
    }
}

/// The calls queued here that a cancel can reach, and the cancels of calls not queued here:
/// one read before its call, or one of a call queued in another process or already sent.
/// Those are kept in two generations, the older dropped whole when the recent one is full or
/// [`CANCEL_KEPT`] old, so they take bounded room and constant time.
struct Cancels {
    /// Each watched call's token, and how many watch it.
    waiting: HashMap<CallId, (CancellationToken, usize)>,
    recent: std::collections::HashSet<CallId>,
    older: std::collections::HashSet<CallId>,
    since: Instant,
}

impl Default for Cancels {
    fn default() -> Self {
        Self {
            waiting: HashMap::new(),
            recent: Default::default(),
            older: Default::default(),
            since: Instant::now(),
        }
    }
}

impl Cancels {
    fn remember(&mut self, call: CallId) {
        if self.recent.len() >= KEEP_LANES || self.since.elapsed() >= CANCEL_KEPT {
            self.older = std::mem::take(&mut self.recent);
            self.since = Instant::now();
        }
        self.recent.insert(call);
    }

    #[cfg(test)]
    fn len(&self) -> usize {
        self.waiting.len() + self.recent.len() + self.older.len()
    }
}

/// A files stage's side of the place a router elsewhere keeps for its call (the hand-over's
/// header says `flood_place`): it asks for its turn before its work and for each send, and
/// says how the send went; dropped, it says the call is over.
pub struct Place {
    flood: Arc<Flood>,
    bus: Arc<dyn bus::Bus>,
    producer: String,
    call: CallId,
    bot: BotId,
    /// The chat as the call named it.
    named: Option<String>,
    answers: tokio::sync::Mutex<tokio::sync::mpsc::UnboundedReceiver<FloodTurn>>,
}

impl Place {
    pub fn open(
        flood: &Arc<Flood>,
        bus: &Arc<dyn bus::Bus>,
        producer: &str,
        env: &Envelope<Call>,
    ) -> Arc<Self> {
        let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
        lock(&flood.waiting_places).insert(env.header.call_id, tx);
        Arc::new(Self {
            flood: flood.clone(),
            bus: bus.clone(),
            producer: producer.to_owned(),
            call: env.header.call_id,
            bot: env.header.bot_id,
            named: chat_of(&env.payload),
            answers: tokio::sync::Mutex::new(rx),
        })
    }

    /// The place of the call running in this task, if it is `call`'s and `chat` is its chat
    /// (as named, or the id a user's @name was resolved to).
    /// Not `storage`'s: an upload's post to the storage chat is a send of its own.
    fn of(call: CallId, chat: Option<&str>, storage: Option<i64>) -> Option<Arc<Place>> {
        let place = PLACE.try_with(|p| p.clone()).ok()?;
        let covers = match (place.named.as_deref(), chat) {
            (Some(named), Some(chat)) => {
                named == chat
                    || (named.starts_with('@')
                        && chat.parse::<i64>().is_ok_and(|id| Some(id) != storage))
            }
            _ => false,
        };
        (place.call == call && covers).then_some(place)
    }

    /// Whether the call running in this task has a place kept elsewhere.
    pub fn held_for(call: CallId) -> bool {
        PLACE.try_with(|p| p.call == call).unwrap_or(false)
    }

    async fn tell(&self, step: FloodTurn) {
        let env = Envelope::new(self.call, self.bot, &self.producer, None, step);
        if let Err(error) =
            bus::publish_envelope(self.bus.as_ref(), bus::topics::FLOOD_TURNS, &env).await
        {
            tracing::warn!(%error, call_id = %self.call, "could not reach the router keeping a call's place");
        }
    }

    /// Asks the router, and waits up to `within` for its answer to this ask (answers to any
    /// other, stale or another process's, are passed over).
    async fn ask(&self, ask: impl FnOnce(u32) -> FloodTurn, within: Duration) -> Option<FloodTurn> {
        let mut answers = self.answers.lock().await;
        let n = next_ask();
        self.tell(ask(n)).await;
        tokio::time::timeout(within, async {
            loop {
                let answer = answers.recv().await?;
                if answer.answers() == Some(n) {
                    return Some(answer);
                }
            }
        })
        .await
        .ok()
        .flatten()
    }

    /// Waits for the call's turn in its chat, before its work: the answer to record instead
    /// when it will not come (the client gone, or the deadline first).
    pub async fn turn(&self, call: &Call) -> Result<(), Response> {
        let watch = self.flood.watch(self.call);
        match watch
            .or_gone(self.ask(|n| FloodTurn::AskTurn { n }, time_left(call)))
            .await
        {
            None => Err(self.flood.gone(self.bot, self.call)),
            Some(Some(FloodTurn::Turn { .. })) => Ok(()),
            Some(Some(FloodTurn::Late { retry_after, .. })) => Err(Response::from_error(
                &ApiError::too_many_requests(retry_after),
            )),
            Some(_) => Err(Response::from_error(&ApiError::too_many_requests(1))),
        }
    }
}

impl Drop for Place {
    fn drop(&mut self) {
        lock(&self.flood.waiting_places).remove(&self.call);
        let Ok(rt) = tokio::runtime::Handle::try_current() else {
            return;
        };
        let env = Envelope::new(self.call, self.bot, &self.producer, None, FloodTurn::Over);
        let bus = self.bus.clone();
        rt.spawn(async move {
            // Unsaid, the router gives the place up past the call's deadline.
            let _ = bus::publish_envelope(bus.as_ref(), bus::topics::FLOOD_TURNS, &env).await;
        });
    }
}

/// A new ask's number: distinct within the process, and unlikely to match another process's.
fn next_ask() -> u32 {
    static NEXT: std::sync::LazyLock<std::sync::atomic::AtomicU32> =
        std::sync::LazyLock::new(|| {
            let nanos = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.subsec_nanos())
                .unwrap_or_default();
            std::sync::atomic::AtomicU32::new(
                std::process::id().wrapping_mul(2_654_435_761) ^ nanos,
            )
        });
    NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
}

/// Runs a handed-over call with the place a router elsewhere keeps for it.
pub fn with_place<F: std::future::Future>(
    place: Arc<Place>,
    fut: F,
) -> impl std::future::Future<Output = F::Output> {
    PLACE.scope(place, fut)
}

tokio::task_local! {
    static PLACE: Arc<Place>;
}

tokio::task_local! {
    static TICKET: std::cell::RefCell<Option<Ticket>>;
}

/// Runs a call with the place it took in its chat's queue.
/// Not an `async fn`, which would hold `fut` twice ([`telegram::sent::track`]); without a
/// ticket the scope holds none.
pub(crate) fn with_ticket<F: std::future::Future>(
    ticket: Option<Ticket>,
    fut: F,
) -> impl std::future::Future<Output = F::Output> {
    TICKET.scope(std::cell::RefCell::new(ticket), fut)
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
enum BotLane {
    Plain(BotId),
    Paid(BotId),
}

pub struct Flood {
    /// The gateway's: Telegram's limits, on for every bot with `--flood-control`.
    default: Settings,
    /// The bots' own (setFloodControl), as last read from the store or set here.
    settings: Mutex<HashMap<BotId, Settings>>,
    lanes: Mutex<HashMap<(BotId, String), Arc<Lane>>>,
    bots: Mutex<HashMap<BotLane, Bucket>>,
    /// Chat kinds the answers told: private or not.
    private: Mutex<HashMap<(BotId, String), bool>>,
    /// A public chat's `@username` (lowercase) → its id, as the answers told.
    aliases: Mutex<HashMap<(BotId, String), String>>,
    counts: Mutex<HashMap<BotId, Counts>>,
    /// Each bot lane's turn for its bucket ([`Flood::bot_turn`]).
    turns: Mutex<HashMap<BotLane, Arc<tokio::sync::Mutex<()>>>>,
    /// How many tickets each bot holds here: a bot that turned flood control off still queues
    /// its new calls behind those (they would overtake them otherwise).
    held: Arc<Mutex<HashMap<BotId, usize>>>,
    /// Calls waiting here whose client may go away, and cancels that came before their call.
    cancels: Mutex<Cancels>,
    /// Tickets of calls the router handed to the files stage of this process, until it takes
    /// them ([`Flood::park`]); only when that stage is here and the bus in-process.
    parked: Option<Mutex<HashMap<CallId, Ticket>>>,
    /// Router: places kept for calls handed to a files stage elsewhere, by call: where their
    /// steps go ([`Flood::serve_place`]).
    places: Mutex<HashMap<CallId, Steps>>,
    /// Files stage: calls here whose place a router keeps: where its answers go ([`Place`]).
    waiting_places: Mutex<HashMap<CallId, Steps>>,
}

type Steps = tokio::sync::mpsc::UnboundedSender<FloodTurn>;

/// What became of a handed-over call's place ([`Flood::keep_place`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Kept {
    /// Parked for the files stage of this process.
    Here,
    /// Kept by a task here for a files stage elsewhere.
    Elsewhere,
}

/// How a wait for tokens ended.
enum Wait {
    Go,
    /// The wait would pass the call's deadline: this long.
    Late(Duration),
    /// The call's client went away.
    Gone,
}

/// How long a router keeps a place past its call's deadline, for a files stage that never
/// said it was over (it died).
const PLACE_GRACE: Duration = Duration::from_secs(10);

/// A wait as Telegram's `retry_after`: whole seconds, at least one.
fn seconds(wait: Duration) -> u64 {
    wait.as_secs_f64().ceil().max(1.0) as u64
}

/// Whether a send asks for the paid broadcast lane.
fn paid(call: &Call) -> bool {
    call.params()
        .get("allow_paid_broadcast")
        .is_some_and(|v| v == true || v == "true" || v == "1")
}

/// The call's deadline, less the margin its answer needs to get back in time (zero when it
/// has passed: a wait that long is already too late).
pub(crate) fn time_left(call: &Call) -> Duration {
    Duration::from_millis((call.deadline_ms - schemas::now_ms()).max(0) as u64)
        .saturating_sub(crate::passthrough::DEADLINE_MARGIN)
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// The chat a call sends to, as its key (`@names` in any case are one).
fn chat_of(call: &Call) -> Option<String> {
    let chat = call.params().get("chat_id").map(crate::uploads::text)?;
    Some(chat.trim().to_ascii_lowercase())
}

/// The seconds a 429 asks to wait.
fn retry_after(r: &Response) -> Option<u64> {
    let body = r.body.inline_bytes()?;
    let v: Value = serde_json::from_slice(&body).ok()?;
    v["parameters"]["retry_after"].as_u64()
}

impl Flood {
    /// Flood control with Telegram's `limits`, on for every bot that did not say otherwise
    /// when `on` (`--flood-control`).
    pub fn new(limits: Limits, on: bool) -> Self {
        Self {
            default: Settings {
                enabled: on,
                limits,
                at_ms: 0,
            },
            settings: Mutex::default(),
            lanes: Mutex::default(),
            bots: Mutex::default(),
            private: Mutex::default(),
            aliases: Mutex::default(),
            counts: Mutex::default(),
            turns: Mutex::default(),
            held: Arc::default(),
            cancels: Mutex::default(),
            parked: None,
            places: Mutex::default(),
            waiting_places: Mutex::default(),
        }
    }

    /// Keeps a file call's place across the hand-over from the router to the files stage
    /// (both in this process, on the in-process bus, which hands over every record): the
    /// call keeps the place it took when the router read it, so a file send and a later
    /// plain send to one chat leave in arrival order, under one set of buckets.
    pub fn keeping_places_across_hand_over(mut self) -> Self {
        self.parked = Some(Mutex::default());
        self
    }

    /// Keeps a handed-over call's ticket for the files stage here; false (and the ticket
    /// dropped) when that stage is elsewhere.
    fn park(&self, call: CallId, ticket: Ticket) {
        if let Some(parked) = &self.parked {
            lock(parked).insert(call, ticket);
        }
    }

    /// The ticket the router kept for a call it handed over.
    pub(crate) fn unpark(&self, call: CallId) -> Option<Ticket> {
        lock(self.parked.as_ref()?).remove(&call)
    }

    /// Whether a bot's sends go through flood control: it is on for the bot, or the bot still
    /// has calls queued from when it was (checked first on every call: a lookup or two).
    pub fn applies(&self, bot: BotId) -> bool {
        self.on_for(bot) || {
            let held = lock(&self.held);
            !held.is_empty() && held.contains_key(&bot)
        }
    }

    /// A call's client went away: if the call waits here, or comes to, it is not sent.
    pub fn cancel(&self, call: CallId) {
        let mut cancels = lock(&self.cancels);
        match cancels.waiting.get(&call) {
            Some((gone, _)) => gone.cancel(),
            None => cancels.remember(call),
        }
    }

    /// The token that says a queued call's client went away, until the guard is dropped.
    fn watch(&self, call: CallId) -> Watch<'_> {
        let mut cancels = lock(&self.cancels);
        let early = cancels.recent.remove(&call) || cancels.older.remove(&call);
        // A router and a files stage of one process may watch one call at once.
        let (gone, watchers) = cancels.waiting.entry(call).or_default();
        *watchers += 1;
        if early {
            gone.cancel();
        }
        let gone = gone.clone();
        drop(cancels);
        Watch {
            flood: self,
            call,
            gone,
        }
    }

    /// Whether flood control is on for a bot (checked first on every call: one lookup).
    pub fn on_for(&self, bot: BotId) -> bool {
        let settings = lock(&self.settings);
        if settings.is_empty() {
            return self.default.enabled;
        }
        settings
            .get(&bot)
            .map_or(self.default.enabled, |s| s.enabled)
    }

    /// A bot's settings: its own, or the gateway's.
    pub fn settings(&self, bot: BotId) -> Settings {
        lock(&self.settings)
            .get(&bot)
            .copied()
            .unwrap_or(self.default)
    }

    /// Reads every bot's settings from the store (a row that does not parse is skipped).
    pub async fn load(&self, store: &dyn store::BotStore) -> Result<usize, store::StoreError> {
        let rows = store.flood_settings().await?;
        let parsed: Vec<(BotId, Settings)> = rows
            .into_iter()
            .filter_map(|(bot, json)| Some((bot, serde_json::from_str::<Settings>(&json).ok()?)))
            .filter(|(_, s)| s.limits.sane())
            .collect();
        let n = parsed.len();
        let mut settings = lock(&self.settings);
        for (bot, read) in parsed {
            // A setFloodControl answered here while the store was read is not undone.
            match settings.get(&bot) {
                Some(mine) if mine.at_ms > read.at_ms => {}
                _ => {
                    settings.insert(bot, read);
                }
            }
        }
        Ok(n)
    }

    /// Reads the settings again every [`RELOAD_EVERY`] until `shutdown`: a setFloodControl
    /// answered by another process (a split deployment's other stage) holds here too.
    pub async fn keep_loaded(
        self: Arc<Self>,
        store: Arc<dyn store::BotStore>,
        shutdown: tokio_util::sync::CancellationToken,
    ) -> Result<(), std::convert::Infallible> {
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => return Ok(()),
                _ = tokio::time::sleep(RELOAD_EVERY) => {}
            }
            if let Err(error) = self.load(store.as_ref()).await {
                tracing::warn!(%error, "could not read the bots' flood control settings");
            }
        }
    }

    #[cfg(test)]
    fn set_local(&self, bot: BotId, enabled: bool) {
        let settings = Settings {
            enabled,
            limits: Limits::default(),
            at_ms: schemas::now_ms(),
        };
        lock(&self.settings).insert(bot, settings);
    }

    /// Keeps a bot's settings (store first, then here).
    pub(crate) async fn set(
        &self,
        store: &dyn store::BotStore,
        bot: BotId,
        settings: Settings,
    ) -> Result<(), store::StoreError> {
        let json = serde_json::to_string(&settings).expect("plain data serialises");
        store.put_flood_settings(bot, &json).await?;
        lock(&self.settings).insert(bot, settings);
        Ok(())
    }

    /// getFloodControl's answer: the bot's settings, its queues in this process, its counts.
    pub(crate) fn state(&self, bot: BotId) -> Value {
        let settings = self.settings(bot);
        let own = lock(&self.settings).contains_key(&bot);
        let now = Instant::now();
        let (mut queued, mut chats, mut paused) = (0u64, 0u64, 0u64);
        for ((b, _), lane) in lock(&self.lanes).iter() {
            if *b != bot {
                continue;
            }
            let q = lock(&lane.queue);
            let waiting = (q.next - q.serving).saturating_sub(q.left.len() as u64);
            queued += waiting;
            chats += u64::from(waiting > 0);
            paused += u64::from(lock(&lane.bucket).paused_until.is_some_and(|u| u > now));
        }
        let c = lock(&self.counts).get(&bot).copied().unwrap_or_default();
        json!({
            "enabled": settings.enabled,
            "set_by": if own { "bot" } else { "gateway" },
            "limits": limits_json(&settings.limits),
            "queued": queued,
            "chats_queued": chats,
            "chats_paused": paused,
            "sent": c.sent,
            "absorbed_429": c.absorbed,
            "expired": c.expired,
            "cancelled": c.cancelled,
        })
    }

    /// The fair lock a bot's calls take in turn for the bot's bucket (or its paid lane's).
    fn bot_turn(&self, bot: BotId, paid: bool) -> Arc<tokio::sync::Mutex<()>> {
        let key = if paid {
            BotLane::Paid(bot)
        } else {
            BotLane::Plain(bot)
        };
        let mut turns = lock(&self.turns);
        if turns.len() >= KEEP_LANES && !turns.contains_key(&key) {
            turns.retain(|_, t| Arc::strong_count(t) > 1);
        }
        turns.entry(key).or_default().clone()
    }

    /// Counts what became of a bot's call, for getFloodControl and the metrics.
    fn count(&self, bot: BotId, what: Counted) {
        if what != Counted::Sent {
            crate::metrics::FLOOD
                .with_label_values(&[&crate::metrics::bot_label(bot), what.label()])
                .inc();
        }
        let mut counts = lock(&self.counts);
        // Bounded: the counts of many bots are forgotten together (getFloodControl starts
        // counting again).
        if counts.len() >= KEEP_LANES * 10 && !counts.contains_key(&bot) {
            counts.clear();
        }
        let c = counts.entry(bot).or_default();
        match what {
            Counted::Sent => c.sent += 1,
            Counted::Absorbed => c.absorbed += 1,
            Counted::Expired => c.expired += 1,
            Counted::Cancelled => c.cancelled += 1,
        }
    }

    fn lane(&self, bot: BotId, chat: &str, private: bool) -> Arc<Lane> {
        let rule = self.rule(bot, private);
        let mut lanes = lock(&self.lanes);
        if lanes.len() >= KEEP_LANES && !lanes.contains_key(&(bot, chat.to_owned())) {
            self.forget_idle(&mut lanes);
        }
        lanes
            .entry((bot, chat.to_owned()))
            .or_insert_with(|| {
                Arc::new(Lane {
                    queue: Mutex::default(),
                    moved: tokio::sync::Notify::new(),
                    bucket: Mutex::new(Bucket::new(rule)),
                })
            })
            .clone()
    }

    /// Forgets the chats nobody waits in whose bucket has filled up and is not paused: they
    /// would be made again as they are. What the answers taught of chat kinds goes too, past
    /// ten times as many: it is learnt again from the next answers.
    fn forget_idle(&self, lanes: &mut HashMap<(BotId, String), Arc<Lane>>) {
        let now = Instant::now();
        lanes.retain(|(bot, _), lane| {
            let limits = self.settings(*bot).limits;
            let slowest = limits.private.per_second.min(limits.group.per_second);
            let fullest = limits.private.burst.max(limits.group.burst);
            let b = lock(&lane.bucket);
            let full = b.tokens + now.duration_since(b.at).as_secs_f64() * slowest >= fullest;
            let idle = Arc::strong_count(lane) == 1 && b.paused_until.is_none_or(|u| u <= now);
            !(idle && full)
        });
        // One map at a time (`learn` takes them too).
        {
            let mut private = lock(&self.private);
            if private.len() >= KEEP_LANES * 10 {
                private.clear();
            }
        }
        let mut aliases = lock(&self.aliases);
        if aliases.len() >= KEEP_LANES * 10 {
            aliases.clear();
        }
    }

    /// A place in the queue of the call's chat, when the call is a send or an edit to a chat.
    pub(crate) fn ticket(&self, bot: BotId, call: &Call) -> Option<Ticket> {
        if !schemas::catalogue::puts_in_chat(&call.method) || !self.applies(bot) {
            return None;
        }
        let named = chat_of(call)?;
        // A public chat's @username and its id are one chat, in one queue: the id's, once an
        // answer told it and no call waits in the @username's own (it would be overtaken).
        let alias = lock(&self.aliases).get(&(bot, named.clone())).cloned();
        let chat = match alias {
            Some(id)
                if lock(&self.lanes)
                    .get(&(bot, named.clone()))
                    .is_none_or(|lane| Arc::strong_count(lane) == 1) =>
            {
                id
            }
            _ => named.clone(),
        };
        let lane = self.lane(bot, &chat, self.is_private(bot, &chat));
        let number = {
            let mut q = lock(&lane.queue);
            q.next += 1;
            q.next - 1
        };
        let label = crate::metrics::bot_label(bot);
        crate::metrics::FLOOD_QUEUED
            .with_label_values(&[&label])
            .inc();
        let metered = self.on_for(bot);
        if metered {
            *lock(&self.held).entry(bot).or_default() += 1;
        }
        Some(Ticket {
            lane,
            metered,
            label,
            held: self.held.clone(),
            number,
            bot,
            chat,
            named,
        })
    }

    fn rule(&self, bot: BotId, private: bool) -> Rule {
        let limits = self.settings(bot).limits;
        if private {
            limits.private
        } else {
            limits.group
        }
    }

    fn is_private(&self, bot: BotId, chat: &str) -> bool {
        lock(&self.private)
            .get(&(bot, chat.to_owned()))
            .copied()
            .unwrap_or_else(|| chat.parse::<i64>().is_ok_and(|id| id > 0))
    }

    /// Takes a token from the chat's bucket and the bot's, or says how long to wait (taking
    /// nothing).
    fn take(&self, bot: BotId, lane: &Lane, private: bool, paid: bool) -> Duration {
        let now = Instant::now();
        let limits = self.settings(bot).limits;
        let (key, bot_rule) = if paid {
            (BotLane::Paid(bot), limits.paid)
        } else {
            (BotLane::Plain(bot), limits.bot)
        };
        let mut chat = lock(&lane.bucket);
        let mut bots = lock(&self.bots);
        let mine = bots.entry(key).or_insert_with(|| Bucket::new(bot_rule));
        let chat_rule = self.rule(bot, private);
        let wait = chat.wait(chat_rule, now).max(mine.wait(bot_rule, now));
        if wait.is_zero() {
            chat.was_full = chat.tokens >= chat_rule.burst - 1e-6;
            chat.tokens -= 1.0;
            mine.tokens -= 1.0;
        }
        wait
    }

    /// Waits for a token from the chat's bucket and then the bot's (a 429's pause included).
    async fn tokens(
        &self,
        bot: BotId,
        lane: &Lane,
        private: bool,
        paid: bool,
        left: &(dyn Fn() -> Duration + Sync),
        watch: &Watch<'_>,
    ) -> Wait {
        loop {
            // The chat's own bucket first, taking nothing: only this call sends to its chat
            // now, and waiting here holds up no other chat.
            let wait = lock(&lane.bucket).wait(self.rule(bot, private), Instant::now());
            if !wait.is_zero() {
                if wait >= left() {
                    return Wait::Late(wait);
                }
                if watch.or_gone(tokio::time::sleep(wait)).await.is_none() {
                    return Wait::Gone;
                }
                continue;
            }
            // Then the bot's bucket, in arrival order among its chats (a fair lock held while
            // the token comes): a thousand chats' calls racing for thirty tokens a second would
            // leave some waiting until their deadline.
            let turn = self.bot_turn(bot, paid);
            let _turn = match watch
                .or_gone(tokio::time::timeout(left(), turn.lock()))
                .await
            {
                None => return Wait::Gone,
                Some(Err(_)) => return Wait::Late(Duration::from_secs(1)),
                Some(Ok(turn)) => turn,
            };
            loop {
                let wait = self.take(bot, lane, private, paid);
                if wait.is_zero() {
                    return Wait::Go;
                }
                if wait >= left() {
                    return Wait::Late(wait);
                }
                if watch.or_gone(tokio::time::sleep(wait)).await.is_none() {
                    return Wait::Gone;
                }
            }
        }
    }

    fn gone(&self, bot: BotId, call: CallId) -> Response {
        self.count(bot, Counted::Cancelled);
        tracing::info!(call_id = %call, "its client went away while it waited; not sent");
        Response::from_error(&ApiError::client_closed())
    }

    /// Telegram's 429, for a call whose turn or token would come after its deadline.
    fn late(&self, bot: BotId, wait: Duration) -> Response {
        self.count(bot, Counted::Expired);
        Response::from_error(&ApiError::too_many_requests(seconds(wait)))
    }

    /// A 429's pause; whether the call may go again before its deadline. It pauses the chat;
    /// and the bot's lane too when the chat had sent nothing for a while (its bucket was full),
    /// since then the limit Telegram meant is the bot's, not the chat's.
    fn paused(
        &self,
        bot: BotId,
        bucket: &Mutex<Bucket>,
        paid: bool,
        after: u64,
        left: Duration,
    ) -> bool {
        let pause = Duration::from_secs(after.min(MAX_PAUSE_S));
        let until = Instant::now() + pause;
        let global = {
            let mut chat = lock(bucket);
            chat.paused_until = Some(until);
            chat.was_full
        };
        if global {
            let key = if paid {
                BotLane::Paid(bot)
            } else {
                BotLane::Plain(bot)
            };
            if let Some(lane) = lock(&self.bots).get_mut(&key) {
                lane.paused_until = Some(until);
            }
            tracing::info!(bot_id = %bot, seconds = after, "a 429 on an idle chat: the bot's own limit; all its chats wait");
        }
        let again = pause < left;
        if again {
            self.count(bot, Counted::Absorbed);
        }
        again
    }

    /// Sends a queued call when its turn and its tokens come; retries it after a 429.
    pub(crate) async fn send(&self, deps: &Deps, env: &Envelope<Call>) -> Response {
        let call = &env.payload;
        let bot = env.header.bot_id;
        let chat = chat_of(call);
        // A call whose place a router in another process keeps takes its turns from there.
        if let Some(place) = Place::of(
            env.header.call_id,
            chat.as_deref(),
            deps.files.storage_chat(),
        ) {
            return self.send_by_place(deps, env, &place).await;
        }
        // The place the call took when it arrived; a call sent from within another (an
        // upload's post to the storage chat) takes one now.
        let ticket = TICKET
            .try_with(|t| {
                let mut t = t.borrow_mut();
                let mine = t.as_ref().is_some_and(|t| t.is_for(bot, chat.as_deref()));
                if mine {
                    t.take()
                } else {
                    None
                }
            })
            .ok()
            .flatten()
            .or_else(|| self.ticket(bot, call));
        let Some(ticket) = ticket else {
            // Inline messages (edits by inline_message_id) have no chat to queue in.
            return crate::passthrough::execute_once(deps, env).await;
        };
        let paid = paid(call);
        let queued_at = Instant::now();
        // Its client may go away while it waits: then it is not sent.
        let watch = self.watch(env.header.call_id);
        let left = || time_left(call);
        match watch.turn(&ticket, left()).await {
            Wait::Gone => return self.gone(bot, env.header.call_id),
            // Its turn would come too late: Telegram's 429, as if sent now.
            Wait::Late(wait) => return self.late(bot, wait),
            Wait::Go => {}
        }
        if !ticket.metered {
            return crate::passthrough::execute_once(deps, env).await;
        }
        let (lane, chat) = (ticket.lane.clone(), ticket.chat.clone());
        let private = self.is_private(bot, &chat);
        loop {
            match self.tokens(bot, &lane, private, paid, &left, &watch).await {
                Wait::Go => {}
                Wait::Late(wait) => return self.late(bot, wait),
                Wait::Gone => return self.gone(bot, env.header.call_id),
            }
            if watch.gone.is_cancelled() {
                return self.gone(bot, env.header.call_id);
            }
            crate::metrics::FLOOD_WAIT
                .with_label_values(&[&ticket.label])
                .observe(queued_at.elapsed().as_secs_f64());
            let answer = crate::passthrough::execute_once(deps, env).await;
            if answer.status == 429 {
                // Telegram executed nothing: this chat waits, then the call goes again.
                match retry_after(&answer) {
                    Some(after) if self.paused(bot, &lane.bucket, paid, after, left()) => continue,
                    _ => return answer,
                }
            }
            self.count(bot, Counted::Sent);
            self.learn(bot, &ticket.named, &chat, &answer);
            return answer;
        }
    }

    /// [`Flood::send`] for a call whose place a router in another process keeps: asks it
    /// for each send, tells it how the send went.
    async fn send_by_place(&self, deps: &Deps, env: &Envelope<Call>, place: &Place) -> Response {
        let (bot, call_id) = (env.header.bot_id, env.header.call_id);
        let watch = self.watch(call_id);
        let left = || time_left(&env.payload);
        loop {
            match watch
                .or_gone(place.ask(|n| FloodTurn::AskSend { n }, left()))
                .await
            {
                None => return self.gone(bot, call_id),
                Some(Some(FloodTurn::Send { .. })) => {}
                Some(Some(FloodTurn::Late { retry_after, .. })) => {
                    return Response::from_error(&ApiError::too_many_requests(retry_after))
                }
                // No word from the router before the deadline (it may have died).
                Some(_) => return Response::from_error(&ApiError::too_many_requests(1)),
            }
            if watch.gone.is_cancelled() {
                return self.gone(bot, call_id);
            }
            let answer = crate::passthrough::execute_once(deps, env).await;
            let retry = (answer.status == 429)
                .then(|| retry_after(&answer))
                .flatten();
            place.tell(FloodTurn::Sent { retry_after: retry }).await;
            match retry {
                // The router pauses the chat; the call asks again.
                Some(after) if Duration::from_secs(after) < left() => continue,
                _ => return answer,
            }
        }
    }

    /// The router's side of a place it keeps for a call handed to a files stage elsewhere
    /// ([`Flood::keep_place`]): answers its asks until it is over, its client goes away, or
    /// its deadline is well past.
    async fn serve_place(
        self: Arc<Self>,
        bus: Arc<dyn bus::Bus>,
        producer: String,
        env: Envelope<Call>,
        ticket: Ticket,
        (mine, mut asks): (Steps, tokio::sync::mpsc::UnboundedReceiver<FloodTurn>),
    ) {
        let (bot, call_id) = (env.header.bot_id, env.header.call_id);
        let watch = self.watch(call_id);
        let left = || time_left(&env.payload);
        let paid = paid(&env.payload);
        let reply = |step: FloodTurn| {
            let env = Envelope::new(call_id, bot, &producer, None, step);
            let bus = bus.clone();
            async move {
                if let Err(error) =
                    bus::publish_envelope(bus.as_ref(), bus::topics::FLOOD_TURNS, &env).await
                {
                    // The files stage then waits until the call's deadline.
                    tracing::warn!(%error, %call_id, "could not give a files stage its turn");
                }
            }
        };
        loop {
            let step = tokio::select! {
                biased;
                _ = watch.gone.cancelled() => break,
                step = asks.recv() => step,
                _ = tokio::time::sleep(left() + PLACE_GRACE) => None,
            };
            match step {
                None | Some(FloodTurn::Over) => break,
                Some(FloodTurn::AskTurn { n }) => match watch.turn(&ticket, left()).await {
                    Wait::Gone => break,
                    Wait::Late(wait) => {
                        self.count(bot, Counted::Expired);
                        reply(FloodTurn::Late {
                            n,
                            retry_after: seconds(wait),
                        })
                        .await;
                    }
                    Wait::Go => reply(FloodTurn::Turn { n }).await,
                },
                Some(FloodTurn::AskSend { n }) => {
                    let private = self.is_private(bot, &ticket.chat);
                    let lane = &ticket.lane;
                    let answer = match watch.turn(&ticket, left()).await {
                        Wait::Go if ticket.metered => {
                            self.tokens(bot, lane, private, paid, &left, &watch).await
                        }
                        other => other,
                    };
                    match answer {
                        Wait::Go => reply(FloodTurn::Send { n }).await,
                        Wait::Late(wait) => {
                            self.count(bot, Counted::Expired);
                            reply(FloodTurn::Late {
                                n,
                                retry_after: seconds(wait),
                            })
                            .await;
                        }
                        Wait::Gone => break,
                    }
                }
                Some(FloodTurn::Sent {
                    retry_after: Some(after),
                }) => {
                    self.paused(bot, &ticket.lane.bucket, paid, after, left());
                }
                Some(FloodTurn::Sent { retry_after: None }) => self.count(bot, Counted::Sent),
                Some(_) => {}
            }
        }
        // Unless a later place of the same call (a hand-over delivered again) took the entry.
        let mut places = lock(&self.places);
        if places
            .get(&call_id)
            .is_some_and(|tx| tx.same_channel(&mine))
        {
            places.remove(&call_id);
        }
    }

    /// Waits for a parked call's turn in its chat, before its work in the files stage: the
    /// answer to record instead when it will not come (the client gone, the deadline first).
    pub(crate) async fn wait_turn(
        &self,
        ticket: &Ticket,
        env: &Envelope<Call>,
    ) -> Result<(), Response> {
        let watch = self.watch(env.header.call_id);
        match watch.turn(ticket, time_left(&env.payload)).await {
            Wait::Gone => Err(self.gone(env.header.bot_id, env.header.call_id)),
            Wait::Late(wait) => Err(self.late(env.header.bot_id, wait)),
            Wait::Go => Ok(()),
        }
    }

    /// Keeps a handed-over call's place: here for a files stage in this process
    /// ([`Flood::park`]), else for one elsewhere, which then takes its turns over
    /// `flood.turns` (the hand-over's header says `flood_place`). What was done.
    pub(crate) fn keep_place(
        self: &Arc<Self>,
        bus: &Arc<dyn bus::Bus>,
        producer: &str,
        env: &Envelope<Call>,
        ticket: Ticket,
    ) -> Kept {
        if self.parked.is_some() {
            self.park(env.header.call_id, ticket);
            return Kept::Here;
        }
        let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
        lock(&self.places).insert(env.header.call_id, tx.clone());
        tokio::spawn(self.clone().serve_place(
            bus.clone(),
            producer.to_owned(),
            env.clone(),
            ticket,
            (tx, rx),
        ));
        Kept::Elsewhere
    }

    /// Gives up a place kept for a call whose hand-over failed.
    pub(crate) fn drop_place(&self, call: CallId) {
        self.unpark(call);
        if let Some(place) = lock(&self.places).remove(&call) {
            let _ = place.send(FloodTurn::Over);
        }
    }

    /// A step of `flood.turns`: to the router's place, or to the files stage's call, here.
    fn turn_step(&self, call: CallId, step: FloodTurn) {
        let to = match step.answers() {
            Some(_) => &self.waiting_places,
            None => &self.places,
        };
        if let Some(tx) = lock(to).get(&call) {
            let _ = tx.send(step);
        }
    }

    /// Remembers whether a chat is private from a Message in an answer, and which id a public
    /// chat's @username (as the call named it, `named`) is.
    fn learn(&self, bot: BotId, named: &str, chat: &str, answer: &Response) {
        let Some(v) = ok_result(answer) else {
            return;
        };
        let message = match &v["result"] {
            Value::Array(a) => a.first(),
            m => Some(m),
        };
        if let Some(told) = message.map(|m| &m["chat"]) {
            if let Some(kind) = told["type"].as_str() {
                lock(&self.private).insert((bot, chat.to_owned()), kind == "private");
            }
            self.learn_chat(bot, Some(named), told);
        }
    }

    /// Learns from a getChat answer: the chat's kind, and the id of the @username it was asked
    /// by.
    pub(crate) fn learn_from_get_chat(&self, bot: BotId, call: &Call, answer: &Response) {
        if let Some(v) = ok_result(answer) {
            self.learn_chat(bot, chat_of(call).as_deref(), &v["result"]);
        }
    }

    /// Learns from an update of a bot: the kind (and @username) of every chat it shows.
    pub fn learn_from_update(&self, bot: BotId, update: &Value) {
        if !self.applies(bot) {
            return;
        }
        for part in update.as_object().into_iter().flat_map(|m| m.values()) {
            for told in [&part["chat"], &part["message"]["chat"]] {
                if told.is_object() {
                    self.learn_chat(bot, None, told);
                }
            }
        }
    }

    /// Learns from a Chat object: whether it is private, and which id its @username (and the
    /// @username a call named it by, `named`) is.
    fn learn_chat(&self, bot: BotId, named: Option<&str>, told: &Value) {
        let Some(id) = told["id"].as_i64() else {
            return;
        };
        let id = id.to_string();
        if let Some(kind) = told["type"].as_str() {
            let mut private = lock(&self.private);
            // Bounded: updates show every chat of every bot (forgotten together; the sign
            // guesses again meanwhile).
            if private.len() >= KEEP_LANES * 10 {
                private.clear();
            }
            private.insert((bot, id.clone()), kind == "private");
        }
        // One map at a time (`forget_idle` takes them too).
        let mut aliases = lock(&self.aliases);
        if aliases.len() >= KEEP_LANES * 10 {
            aliases.clear();
        }
        if let Some(named) = named.filter(|n| n.starts_with('@')) {
            aliases.insert((bot, named.to_owned()), id.clone());
        }
        if let Some(name) = told["username"].as_str() {
            aliases.insert((bot, format!("@{}", name.to_ascii_lowercase())), id);
        }
    }
}

/// An answer's JSON when it is a success.
fn ok_result(answer: &Response) -> Option<Value> {
    if answer.status != 200 {
        return None;
    }
    serde_json::from_slice(&answer.body.inline_bytes()?).ok()
}

/// Reads `calls.cancel` and `flood.turns` whole, in group `<group>` (this process's own:
/// every processor needs its own `--instance` on Kafka), and `updates` in `<group>.updates`,
/// until `shutdown`: a call whose client went away is dropped from the queues here
/// ([`Flood::cancel`]), a place's steps reach it ([`Flood::turn_step`]), and the updates tell
/// chat kinds ([`Flood::learn_from_update`]). The updates are read apart, from the end when
/// the group is new, so a backlog of them never holds up a turn.
///
/// `updates`: whether to read them (a process with the router: a files stage alone takes its
/// turns and tokens from a router, and needs no chat kinds).
pub async fn watch(
    flood: Arc<Flood>,
    bus: Arc<dyn bus::Bus>,
    group: String,
    updates: bool,
    shutdown: tokio_util::sync::CancellationToken,
) -> Result<(), crate::ProcessorError> {
    let notices = [
        bus::topics::CALLS_CANCEL.to_owned(),
        bus::topics::FLOOD_TURNS.to_owned(),
    ];
    bus.ensure_topics(&notices).await?;
    let opts = |name| bus::stage::Options {
        batch: 512,
        ..bus::stage::Options::sequential(name)
    };
    let consumer = bus.subscribe(&group, &notices).await?;
    let read_notices = bus::stage::run(
        consumer,
        opts("flood-notices"),
        shutdown.clone(),
        |records, _slot| {
            for record in &records {
                if record.topic == bus::topics::CALLS_CANCEL {
                    if let Some(env) = bus::decode_or_skip::<schemas::CallCancelled>(record) {
                        flood.cancel(env.header.call_id);
                    }
                } else if let Some(env) = bus::decode_or_skip::<FloodTurn>(record) {
                    flood.turn_step(env.header.call_id, env.payload);
                }
            }
            async { Ok::<(), crate::ProcessorError>(()) }
        },
    );
    if !updates {
        return read_notices.await;
    }
    let topics = [bus::topics::UPDATES.to_owned()];
    bus.ensure_topics(&topics).await?;
    let consumer = bus
        .subscribe_from_end(&format!("{group}.updates"), &topics)
        .await?;
    let read_updates = bus::stage::run(
        consumer,
        opts("flood-updates"),
        shutdown,
        |records, _slot| {
            // Only the updates of bots under flood control are read (the key is the bot's id;
            // `learn_from_update` asks again for a key that does not parse).
            for env in records
                .iter()
                .filter(|r| r.key.parse().map_or(true, |id| flood.applies(BotId(id))))
                .filter_map(bus::decode_or_skip::<schemas::Update>)
            {
                flood.learn_from_update(env.header.bot_id, &env.payload.update);
            }
            async { Ok::<(), crate::ProcessorError>(()) }
        },
    );
    tokio::try_join!(read_notices, read_updates).map(|_| ())
}

/// A bot's limits as getFloodControl shows them (setFloodControl's parameter names).
fn limits_json(l: &Limits) -> Value {
    json!({
        "private_chat_burst": l.private.burst,
        "private_chat_per_minute": l.private.per_second * 60.0,
        "group_burst": l.group.burst,
        "group_per_minute": l.group.per_second * 60.0,
        "bot_per_second": l.bot.per_second,
        "paid_broadcast_per_second": l.paid.per_second,
    })
}

/// setFloodControl: the bot's own settings, kept in the store.
pub(crate) async fn set_flood_control(
    deps: &Deps,
    env: &Envelope<Call>,
    set: crate::cmd::SetFloodControl,
) -> Response {
    let Some(flood) = &deps.flood else {
        return Response::from_error(&ApiError::bad_request("flood control is not available"));
    };
    if let Err(refused) = crate::auth::owner(deps, env, None).await {
        return refused;
    }
    let settings = Settings {
        enabled: set.enabled,
        limits: set.limits,
        at_ms: schemas::now_ms(),
    };
    match flood
        .set(deps.store.as_ref(), env.header.bot_id, settings)
        .await
    {
        Ok(()) => Response::gateway_json(200, &json!({"ok": true, "result": true})),
        Err(error) => failures::store("the flood control settings could not be kept")(error).into(),
    }
}

/// getFloodControl: the bot's settings, queues and counts ([`Flood::state`]).
pub(crate) async fn get_flood_control(deps: &Deps, env: &Envelope<Call>) -> Response {
    let Some(flood) = &deps.flood else {
        return Response::from_error(&ApiError::bad_request("flood control is not available"));
    };
    if let Err(refused) = crate::auth::owner(deps, env, None).await {
        return refused;
    }
    Response::gateway_json(
        200,
        &json!({"ok": true, "result": flood.state(env.header.bot_id)}),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_private_chat_takes_a_burst_then_one_a_second() {
        let f = Flood::new(Limits::default(), true);
        let bot = BotId(1);
        let lane = f.lane(bot, "5", true);
        // Two at once; the third after the reserve's 100 ms (Telegram may see the first two
        // arrive that much later); then one a second.
        for _ in 0..2 {
            assert!(f.take(bot, &lane, true, false).is_zero());
        }
        let wait = f.take(bot, &lane, true, false);
        assert!(
            wait > Duration::from_millis(90) && wait <= SLACK,
            "{wait:?}"
        );
        lock(&lane.bucket).tokens += 0.1;
        assert!(f.take(bot, &lane, true, false).is_zero());
        let wait = f.take(bot, &lane, true, false);
        assert!(
            wait > Duration::from_millis(990) && wait <= Duration::from_secs(1) + SLACK,
            "{wait:?}"
        );
        // A 429's pause holds the chat whatever its tokens.
        let other = f.lane(bot, "6", true);
        lock(&other.bucket).paused_until = Some(Instant::now() + Duration::from_secs(5));
        assert!(f.take(bot, &other, true, false) > Duration::from_secs(4));
    }

    #[test]
    fn the_bot_takes_thirty_a_second_and_paid_broadcasts_their_own_lane() {
        let f = Flood::new(Limits::default(), true);
        let bot = BotId(1);
        // Thirty less the 100 ms reserve.
        for chat in 0..27 {
            let lane = f.lane(bot, &chat.to_string(), true);
            assert!(f.take(bot, &lane, true, false).is_zero());
        }
        let lane = f.lane(bot, "99", true);
        assert!(!f.take(bot, &lane, true, false).is_zero());
        assert!(f.take(bot, &lane, true, true).is_zero());
    }

    #[test]
    fn chat_kinds_come_from_answers_before_signs() {
        let f = Flood::new(Limits::default(), true);
        let bot = BotId(1);
        assert!(f.is_private(bot, "5"));
        assert!(!f.is_private(bot, "-5"));
        let answer = Response::gateway_json(
            200,
            &serde_json::json!({"ok": true, "result": {"chat": {"id": -7, "type": "private"}}}),
        );
        f.learn(bot, "-7", "-7", &answer);
        assert!(f.is_private(bot, "-7"));
        assert!(schemas::catalogue::puts_in_chat("editMessageText"));
        assert!(!schemas::catalogue::puts_in_chat("editChatInviteLink"));
    }

    fn call(method: &str, chat: &str) -> Call {
        let chat: String = form_urlencoded::byte_serialize(chat.as_bytes()).collect();
        crate::cmd::tests::call(method, &format!("chat_id={chat}&text=x"))
    }

    #[test]
    fn a_bot_turns_it_off_for_itself_and_at_name_shares_its_ids_queue() {
        let f = Flood::new(Limits::default(), true);
        let (bot, other) = (BotId(1), BotId(2));
        lock(&f.settings).insert(
            other,
            Settings {
                enabled: false,
                limits: Limits::default(),
                at_ms: 1,
            },
        );
        assert!(f.ticket(bot, &call("sendMessage", "5")).is_some());
        assert!(f.ticket(other, &call("sendMessage", "5")).is_none());
        assert!(f.ticket(bot, &call("getChat", "5")).is_none(), "reads pass");
        // An answer tells @chan's id: from then on both names are one queue.
        let answer = Response::gateway_json(
            200,
            &serde_json::json!({"ok": true, "result": {"chat": {"id": -100, "type": "channel", "username": "Chan"}}}),
        );
        let waiting = f.ticket(bot, &call("sendMessage", "@chan")).unwrap();
        f.learn(bot, "@chan", "@chan", &answer);
        let behind = f.ticket(bot, &call("sendMessage", "@chan")).unwrap();
        assert!(
            Arc::ptr_eq(&waiting.lane, &behind.lane),
            "while a call waits in @chan's queue, the next stays behind it"
        );
        drop((waiting, behind));
        let by_name = f.ticket(bot, &call("sendMessage", "@Chan")).unwrap();
        // The call as resolution left it (the id) still holds the place its @name took.
        assert!(by_name.is_for(bot, Some("-100")) && by_name.is_for(bot, Some("@chan")));
        assert!(!by_name.is_for(bot, Some("-101")) && !by_name.is_for(BotId(9), Some("-100")));
        let by_id = f.ticket(bot, &call("sendMessage", "-100")).unwrap();
        assert!(Arc::ptr_eq(&by_name.lane, &by_id.lane));
        assert_eq!(by_id.number, by_name.number + 1, "in arrival order");
        let state = f.state(bot);
        assert_eq!(state["queued"], 2, "{state}");
        assert_eq!(state["set_by"], "gateway");
        assert_eq!(f.state(other)["enabled"], false);
    }

    #[test]
    fn a_bot_that_turns_it_off_still_queues_behind_its_waiting_calls() {
        let f = Flood::new(Limits::default(), false);
        let bot = BotId(1);
        f.set_local(bot, true);
        let waiting = f.ticket(bot, &call("sendMessage", "5")).unwrap();
        f.set_local(bot, false);
        assert!(f.applies(bot));
        let behind = f
            .ticket(bot, &call("sendMessage", "5"))
            .expect("queued behind the waiting one");
        assert_eq!(behind.number, waiting.number + 1);
        drop((waiting, behind));
        assert!(!f.applies(bot), "nothing queued: it passes at once");
        assert!(f.ticket(bot, &call("sendMessage", "5")).is_none());
    }

    #[tokio::test]
    async fn a_cancel_reaches_a_waiting_call_or_one_that_comes_after_it() {
        let f = Flood::new(Limits::default(), true);
        let (early, late) = (CallId::new(), CallId::new());
        // The cancel read before the call: the call's watch finds it.
        f.cancel(early);
        let w = f.watch(early);
        assert!(w.or_gone(std::future::pending::<()>()).await.is_none());
        drop(w);
        // The call waiting when the cancel comes.
        {
            let w = f.watch(late);
            let sleeping = w.or_gone(tokio::time::sleep(Duration::from_secs(30)));
            tokio::pin!(sleeping);
            assert!(
                tokio::time::timeout(Duration::from_millis(20), sleeping.as_mut())
                    .await
                    .is_err()
            );
            f.cancel(late);
            assert!(sleeping.await.is_none());
        }
        assert!(
            lock(&f.cancels).waiting.is_empty(),
            "a watch takes its entry with it"
        );
        // The cancel still holds for the call's next wait.
        assert!(f
            .watch(late)
            .or_gone(std::future::pending::<()>())
            .await
            .is_none());
        let other = CallId::new();
        drop(f.watch(other));
        assert!(!lock(&f.cancels).recent.contains(&other), "nothing to keep");
        // Many cancels for calls never queued here: bounded.
        for _ in 0..KEEP_LANES * 3 + 5 {
            f.cancel(CallId::new());
        }
        assert!(lock(&f.cancels).len() <= KEEP_LANES * 2);
    }

    #[test]
    fn updates_and_get_chat_answers_tell_chat_kinds_and_names() {
        let f = Flood::new(Limits::default(), true);
        let bot = BotId(1);
        // A (made-up) positive id that is a group, and a channel known by its @name.
        f.learn_from_update(
            bot,
            &serde_json::json!({"update_id": 1, "message": {"message_id": 1,
                "chat": {"id": 77, "type": "group", "title": "g"}}}),
        );
        assert!(!f.is_private(bot, "77"));
        f.learn_from_update(
            bot,
            &serde_json::json!({"update_id": 2, "callback_query": {"id": "q",
                "message": {"chat": {"id": -5, "type": "private"}}}}),
        );
        assert!(f.is_private(bot, "-5"));
        let answer = Response::gateway_json(
            200,
            &serde_json::json!({"ok": true, "result": {"id": -100, "type": "channel", "username": "News"}}),
        );
        f.learn_from_get_chat(bot, &call("getChat", "@news"), &answer);
        let by_name = f.ticket(bot, &call("sendMessage", "@NEWS")).unwrap();
        assert_eq!(by_name.chat, "-100");
        // Another bot's chats are its own.
        assert!(f.is_private(BotId(2), "77"));
    }

    #[test]
    fn metrics_label_a_hundred_bots_and_the_rest_as_other() {
        let labels: Vec<String> = (0..200)
            .map(|n| crate::metrics::bot_label(BotId(7_000_000 + n)))
            .collect();
        let own = labels.iter().filter(|l| *l != "other").count();
        assert!(own <= 100 && labels.iter().any(|l| l == "other"), "{own}");
        // A bot keeps the label it was given.
        let first = labels.iter().position(|l| l != "other").unwrap();
        assert_eq!(
            crate::metrics::bot_label(BotId(7_000_000 + first as i64)),
            labels[first]
        );
    }

    #[test]
    fn a_429_on_an_idle_chat_pauses_the_bot_and_on_a_busy_one_the_chat() {
        let f = Flood::new(Limits::default(), true);
        let bot = BotId(1);
        let (idle, busy, other) = (
            f.lane(bot, "5", true),
            f.lane(bot, "6", true),
            f.lane(bot, "7", true),
        );
        assert!(f.take(bot, &busy, true, false).is_zero());
        assert!(f.take(bot, &busy, true, false).is_zero());
        // The busy chat's second send meets a 429: that chat's limit.
        assert!(f.paused(bot, &busy.bucket, false, 5, Duration::from_secs(60)));
        assert!(f.take(bot, &busy, true, false) > Duration::from_secs(4));
        assert!(
            f.take(bot, &other, true, false).is_zero(),
            "other chats go on"
        );
        // The idle chat's first send meets one: the bot's; every chat waits.
        assert!(f.take(bot, &idle, true, false).is_zero());
        assert!(!f.paused(bot, &idle.bucket, false, 90, Duration::from_secs(60)));
        assert!(f.take(bot, &other, true, false) > Duration::from_secs(80));
        assert!(
            f.take(bot, &other, true, true).is_zero(),
            "not the paid lane"
        );
    }
}
