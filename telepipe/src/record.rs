//! `telepipe audit`, `replay` and `gc`: the record read from the store the flags name (the
//! same `--data-dir`/`--store`/`--blobs`/`--seal-key` as `serve`). The work is in the `audit`
//! crate; this is the command line around it.

use crate::config::{AuditArgs, DataArgs, GcArgs, ReplayArgs, SelectArgs};
use anyhow::Context;
use audit::replay::{ReplayConfig, Replayer};
use audit::show::{self, Format};
use audit::stats::{self, By, Stats};
use audit::{BotSel, Follow, Selection, Walk};
use schemas::{BotId, BotToken, Sealer};
use std::collections::HashMap;
use std::io::Write;
use std::time::Duration;
use tokio_util::sync::CancellationToken;

impl SelectArgs {
    fn selection(&self) -> anyhow::Result<Selection> {
        let now = schemas::now_ms();
        let time = |s: &Option<String>, flag: &str| -> anyhow::Result<Option<i64>> {
            s.as_deref()
                .map(|s| audit::parse_time(s, now))
                .transpose()
                .map_err(|e| anyhow::anyhow!("{flag}: {e}"))
        };
        Ok(Selection {
            bot: self
                .bot
                .as_deref()
                .map(str::parse::<BotSel>)
                .transpose()
                .map_err(|e| anyhow::anyhow!("--bot: {e}"))?,
            method: self.method.clone(),
            since: time(&self.since, "--since")?,
            until: time(&self.until, "--until")?,
            status: self.status,
            error_code: self.error_code,
        })
    }
}

/// The store of an existing record: reading never creates one.
async fn existing_store(data: &DataArgs) -> anyhow::Result<std::sync::Arc<dyn store::Store>> {
    if data.store == crate::config::StoreUrl::Sqlite && !data.data_dir.join("store.db").exists() {
        anyhow::bail!(
            "no record at {} (give --data-dir of the gateway)",
            data.data_dir.join("store.db").display()
        );
    }
    crate::open_store(data).await
}

/// The cluster key of an existing record: never a new one.
fn existing_sealer(data: &DataArgs) -> anyhow::Result<Sealer> {
    if data.seal_key.is_none() && !data.data_dir.join("seal.key").exists() {
        anyhow::bail!(
            "no seal key: give --seal-key (TELEPIPE_SEAL_KEY) or the --data-dir holding seal.key"
        );
    }
    Ok(Sealer::new(&crate::seal_key(
        data.seal_key.as_deref(),
        &data.data_dir,
    )?))
}

pub async fn audit(args: AuditArgs, shutdown: CancellationToken) -> anyhow::Result<()> {
    let format: Format = args.format.parse().map_err(anyhow::Error::msg)?;
    let selection = args.select.selection()?;
    let store = existing_store(&args.data).await?;
    let stdout = std::io::stdout();
    let mut out = std::io::BufWriter::new(stdout.lock());
    if args.stats {
        let mut walk = Walk::light(store.as_ref(), &selection).await?;
        let by: By = args.by.parse().map_err(anyhow::Error::msg)?;
        let mut s = Stats::new(by);
        loop {
            for r in walk.next_page().await? {
                s.add(&r);
            }
            if walk.at_end() {
                break;
            }
        }
        stats::write(&mut out, by, &s.lines(), format == Format::Json)?;
        out.flush()?;
        return Ok(());
    }
    let mut walk = Walk::new(store.as_ref(), &selection).await?;
    let mut follow = if args.follow {
        Some(Follow::new(store.as_ref(), &selection).await?)
    } else {
        None
    };
    if format == Format::Table {
        show::header(&mut out)?;
    }
    loop {
        for r in walk.next_page().await? {
            show::row(&mut out, format, &r)?;
            if let Some(f) = follow.as_mut() {
                f.shown(r.call_id);
            }
        }
        if walk.at_end() {
            break;
        }
    }
    out.flush()?;
    let Some(mut follow) = follow else {
        return Ok(());
    };
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return Ok(()),
            _ = tokio::time::sleep(Duration::from_secs(1)) => {}
        }
        for r in follow.look().await? {
            show::row(&mut out, format, &r)?;
        }
        out.flush()?;
    }
}

fn token_map(given: &[String]) -> anyhow::Result<HashMap<BotId, BotToken>> {
    let mut map = HashMap::new();
    for entry in given {
        let (bot, token) = entry
            .split_once('=')
            .context("--token-map takes BOT_ID=TOKEN")?;
        let bot: i64 = bot
            .trim()
            .parse()
            .context("--token-map: the bot id is a number")?;
        // The error never repeats the token.
        let token = BotToken::parse(token.trim())
            .map_err(|_| anyhow::anyhow!("--token-map {bot}=...: not a bot token"))?;
        map.insert(BotId(bot), token);
    }
    Ok(map)
}

pub async fn replay(args: ReplayArgs, shutdown: CancellationToken) -> anyhow::Result<()> {
    let selection = args.select.selection()?;
    let target: url::Url = args.target.parse().context("--target is a URL")?;
    if !matches!(target.scheme(), "http" | "https") {
        anyhow::bail!("--target must be an http(s) URL");
    }
    if args.rate.is_some_and(|r| !(0.001..=1e9).contains(&r)) {
        anyhow::bail!("--rate is calls a second, from 0.001 to 1e9");
    }
    let cfg = ReplayConfig {
        target,
        rate: args.rate,
        dry_run: args.dry_run,
        token_map: token_map(&args.token_map)?,
        allow_sends: args.allow_sends,
        timeout: Duration::from_secs(args.timeout.max(1)),
    };
    let store = existing_store(&args.data).await?;
    let blobs = crate::open_blobs(&args.data)?;
    let sealer = existing_sealer(&args.data)?;
    let replayer = Replayer::new(store.as_ref(), blobs, &sealer, cfg)?;
    let mut report: Box<dyn Write + Send> = match &args.report {
        Some(path) => Box::new(std::io::BufWriter::new(
            std::fs::File::create(path).with_context(|| format!("creating {}", path.display()))?,
        )),
        None => Box::new(std::io::sink()),
    };
    let mut log = std::io::stdout();
    let summary = if args.from_bus {
        from_bus(
            &args,
            &selection,
            &replayer,
            report.as_mut(),
            &mut log,
            &shutdown,
        )
        .await?
    } else {
        replayer
            .run(&selection, report.as_mut(), &mut log, &shutdown)
            .await?
    };
    report.flush()?;
    println!("{summary}");
    Ok(())
}

/// `replay --from-bus`: the `calls` topic from `--since` to its end as it stands now, each
/// call matched against the selection and replayed as a stored one would be.
async fn from_bus(
    args: &ReplayArgs,
    selection: &Selection,
    replayer: &Replayer<'_>,
    report: &mut (dyn Write + Send),
    log: &mut (dyn Write + Send),
    stop: &CancellationToken,
) -> anyhow::Result<audit::replay::Summary> {
    // The bus is read from --since by the broker's time index; what is older is skipped below.
    selection
        .since
        .context("--from-bus reads the bus from a time: give --since")?;
    let url = args
        .bus
        .as_deref()
        .filter(|b| b.starts_with("kafka://"))
        .context("--from-bus needs --bus kafka://host:port (the in-process bus keeps nothing)")?;
    let mut cfg = bus::kafka::KafkaConfig::from_url(url)?;
    cfg.prefix = args.kafka_prefix.clone();
    let bus = bus::kafka::KafkaBus::new(cfg)?;
    let mut pace = audit::replay::Pace::new();
    let Some(query) = selection.query(replayer.store).await? else {
        return Ok(pace.done());
    };
    let mut reader = bus
        .read_to_end(bus::topics::CALLS, Some(query.from_ms))
        .await?;
    let (mut unreadable, mut older) = (0u64, 0u64);
    while let Some(record) = reader.next().await? {
        let Ok(env) = schemas::Envelope::<schemas::Call>::decode(&record.payload) else {
            unreadable += 1;
            continue;
        };
        let at = env.header.call_id.time_ms();
        // A broker that cannot look offsets up by time gives everything it keeps.
        if at < query.from_ms {
            older += 1;
            continue;
        }
        if at >= query.to_ms || query.bot_id.is_some_and(|b| b != env.header.bot_id) {
            continue;
        }
        let row = audit::replay::row_from_bus(replayer.store, replayer.sealer, &env).await;
        if !query.admits(&row) {
            continue;
        }
        if !replayer.step(&row, &mut pace, report, log, stop).await? {
            break;
        }
    }
    if unreadable > 0 {
        writeln!(
            log,
            "{unreadable} records of the calls topic could not be read (another version?)"
        )?;
    }
    tracing::debug!(older, "records before --since skipped");
    Ok(pace.done())
}

pub async fn gc(args: GcArgs) -> anyhow::Result<()> {
    let store = existing_store(&args.data).await?;
    let blobs = crate::open_blobs(&args.data)?;
    let pass = audit::retention::pass(
        store.as_ref(),
        blobs.as_ref(),
        args.retain.retention(),
        schemas::now_ms(),
        args.dry_run,
        true,
    )
    .await?;
    println!("{pass}");
    Ok(())
}
