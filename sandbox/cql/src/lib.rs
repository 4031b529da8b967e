//! A CQL stand-in for ScyllaDB: the native protocol v4 over TCP, one node, data in memory.
//!
//! No ScyllaDB can run where telepipe is built and tested, so the sandbox answers CQL itself,
//! the way it answers the Bot API and MTProto: the unmodified `scylla` driver (and the DataStax
//! Python driver) connect, read the system tables they read on connect, create keyspaces and
//! tables, and run QUERY, PREPARE, EXECUTE and BATCH with paging, `USING TTL` and conditional
//! writes. Scylla's rules are kept and its error texts given (a SELECT that would filter, a
//! clustering column out of order, an unknown table); what the stand-in does not run fails with
//! an `unsupported by the stand-in: ...` error, never silently. See README.md.
//!
//! A frame is read, run against the [`engine::Engine`] under one lock, and answered on the
//! stream id it came with; requests of one connection are answered in order.

pub mod engine;
mod frame;
pub mod parse;
pub mod types;

use engine::{CqlError, Engine, Outcome, PROTOCOL};
use frame::{Reader, Writer};
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::{Arc, Mutex};
use tokio::io::{AsyncReadExt, AsyncWriteExt, BufReader, BufWriter};
use tokio::net::{TcpListener, TcpStream};
use tokio_util::sync::CancellationToken;

/// The largest frame body the stand-in reads (Scylla's default native transport limit).
const MAX_BODY: u32 = 256 * 1024 * 1024;

/// One CQL node: its data and the connections it serves.
#[derive(Clone)]
pub struct Node {
    engine: Arc<Mutex<Engine>>,
}

impl Node {
    /// A node that tells drivers to reach it at `addr` (`system.local.rpc_address`).
    pub fn new(addr: IpAddr) -> Self {
        let addr = if addr.is_unspecified() {
            IpAddr::V4(Ipv4Addr::LOCALHOST)
        } else {
            addr
        };
        Node {
            engine: Arc::new(Mutex::new(Engine::new(addr))),
        }
    }

    fn engine(&self) -> std::sync::MutexGuard<'_, Engine> {
        // A panic while holding the lock leaves data as it was at that statement.
        self.engine.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// Serves CQL on `listener` until `shutdown`.
pub async fn serve(listener: TcpListener, shutdown: CancellationToken) -> std::io::Result<()> {
    let addr: SocketAddr = listener.local_addr()?;
    let node = Node::new(addr.ip());
    tracing::info!(%addr, "CQL stand-in listening");
    let connections = tokio_util::task::TaskTracker::new();
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => break,
            accepted = listener.accept() => {
                let (stream, peer) = match accepted {
                    Ok(a) => a,
                    Err(e) => {
                        tracing::warn!(error = %e, "CQL accept failed");
                        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                        continue;
                    }
                };
                let node = node.clone();
                let shutdown = shutdown.clone();
                connections.spawn(async move {
                    if let Err(e) = connection(node, stream, shutdown).await {
                        tracing::debug!(%peer, error = %e, "CQL connection ended");
                    }
                });
            }
        }
    }
    connections.close();
    connections.wait().await;
    Ok(())
}

struct Conn {
    keyspace: Option<String>,
    started: bool,
}

async fn connection(
    node: Node,
    stream: TcpStream,
    shutdown: CancellationToken,
) -> std::io::Result<()> {
    stream.set_nodelay(true)?;
    let (r, w) = stream.into_split();
    let mut r = BufReader::new(r);
    let mut w = BufWriter::new(w);
    let mut conn = Conn {
        keyspace: None,
        started: false,
    };
    loop {
        let mut header = [0u8; 9];
        tokio::select! {
            _ = shutdown.cancelled() => return Ok(()),
            read = r.read_exact(&mut header) => match read {
                Ok(_) => {}
                Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => return Ok(()),
                Err(e) => return Err(e),
            },
        }
        let stream_id = [header[2], header[3]];
        let len = u32::from_be_bytes(header[5..9].try_into().expect("4 bytes"));
        if len > MAX_BODY {
            let e = CqlError::new(
                PROTOCOL,
                format!(
                    "Request is too big: length {len} exceeds maximum allowed length {MAX_BODY}."
                ),
            );
            write_frame(&mut w, stream_id, frame::ERROR, &error_body(&e)).await?;
            return Ok(());
        }
        let mut body = Vec::new();
        (&mut r).take(u64::from(len)).read_to_end(&mut body).await?;
        if body.len() != len as usize {
            return Ok(());
        }
        let (opcode, reply) = if header[0] != 0x04 {
            let e = CqlError::new(
                PROTOCOL,
                format!(
                    "Invalid or unsupported protocol version ({}); supported versions are (4/v4)",
                    header[0] & 0x7f
                ),
            );
            (frame::ERROR, error_body(&e))
        } else {
            match handle(&node, &mut conn, header[1], header[4], &body) {
                Ok(r) => r,
                Err(e) => (frame::ERROR, error_body(&e)),
            }
        };
        write_frame(&mut w, stream_id, opcode, &reply).await?;
    }
}

fn error_body(e: &CqlError) -> Vec<u8> {
    let mut w = Writer::default();
    w.error(e);
    w.0
}

async fn write_frame(
    w: &mut BufWriter<tokio::net::tcp::OwnedWriteHalf>,
    stream: [u8; 2],
    opcode: u8,
    body: &[u8],
) -> std::io::Result<()> {
    let mut header = [0x84, 0, stream[0], stream[1], opcode, 0, 0, 0, 0];
    header[5..9].copy_from_slice(&(body.len() as u32).to_be_bytes());
    w.write_all(&header).await?;
    w.write_all(body).await?;
    w.flush().await
}

fn handle(
    node: &Node,
    conn: &mut Conn,
    flags: u8,
    opcode: u8,
    body: &[u8],
) -> Result<(u8, Vec<u8>), CqlError> {
    if flags & 0x01 != 0 {
        return Err(CqlError::new(
            PROTOCOL,
            "Compressed frame received but no compression was negotiated",
        ));
    }
    let mut r = Reader::new(body);
    if flags & 0x04 != 0 {
        r.skip_bytes_map()?;
    }
    let mut out = Writer::default();
    match opcode {
        frame::OPTIONS => {
            // No Scylla extension is advertised: drivers then treat the node as a plain
            // Cassandra-protocol server (no shard-aware ports, no tablets).
            out.string_multimap(&[
                ("CQL_VERSION", &["3.3.1"]),
                ("COMPRESSION", &[]),
                ("PROTOCOL_VERSIONS", &["4/v4"]),
            ]);
            return Ok((frame::SUPPORTED, out.0));
        }
        frame::STARTUP => {
            let options = r.string_map()?;
            if let Some((_, c)) = options.iter().find(|(k, _)| k == "COMPRESSION") {
                return Err(CqlError::new(
                    PROTOCOL,
                    format!("Unknown compression algorithm: {c}"),
                ));
            }
            conn.started = true;
            return Ok((frame::READY, Vec::new()));
        }
        _ if !conn.started => {
            return Err(CqlError::new(
                PROTOCOL,
                format!(
                    "Unexpected message {}, expecting STARTUP or OPTIONS",
                    frame::opcode_name(opcode)
                ),
            ))
        }
        frame::REGISTER => {
            // Events are accepted and never pushed: drivers refresh metadata after their own
            // schema changes anyway.
            return Ok((frame::READY, Vec::new()));
        }
        frame::QUERY => {
            let cql = r.long_string()?;
            let (exec, skip) = r.params()?;
            let outcome = node.engine().query(&mut conn.keyspace, &cql, &exec)?;
            log_schema(&outcome);
            out.result(&outcome, skip);
        }
        frame::PREPARE => {
            let cql = r.long_string()?;
            let info = node.engine().prepare(&conn.keyspace, &cql)?;
            out.prepared(&info);
        }
        frame::EXECUTE => {
            let id = r.short_bytes()?;
            let (exec, skip) = r.params()?;
            let outcome = node.engine().execute(&mut conn.keyspace, &id, &exec)?;
            log_schema(&outcome);
            out.result(&outcome, skip);
        }
        frame::BATCH => {
            let kind = r.byte()?;
            if kind == 2 {
                return Err(CqlError::new(
                    engine::INVALID,
                    "unsupported by the stand-in: counter batches",
                ));
            }
            let n = r.short()?;
            let mut items = Vec::new();
            for _ in 0..n {
                let what = match r.byte()? {
                    0 => Ok(r.long_string()?),
                    1 => Err(r.short_bytes()?),
                    k => {
                        return Err(CqlError::new(
                            PROTOCOL,
                            format!(
                                "Invalid query kind in BATCH messages. Must be 0 or 1 but got {k}"
                            ),
                        ))
                    }
                };
                let (values, _) = r.values(false)?;
                items.push((what, values));
            }
            let consistency = r.short()?;
            let outcome = node
                .engine()
                .batch(&mut conn.keyspace, items, consistency)?;
            out.result(&outcome, false);
        }
        other => {
            return Err(CqlError::new(
                PROTOCOL,
                format!("Unsupported or unknown opcode {other:#04x}"),
            ))
        }
    }
    Ok((frame::RESULT, out.0))
}

/// Answers one frame body of `opcode` on a started connection of a node of its own (for the
/// fuzz target `fuzz/fuzz_targets/cql.rs`): the reply's opcode and body.
#[doc(hidden)]
pub fn fuzz_frame(opcode: u8, body: &[u8]) -> (u8, Vec<u8>) {
    static NODE: std::sync::OnceLock<Node> = std::sync::OnceLock::new();
    let node = NODE.get_or_init(|| Node::new(IpAddr::V4(Ipv4Addr::LOCALHOST)));
    let mut conn = Conn {
        keyspace: None,
        started: true,
    };
    match handle(node, &mut conn, 0, opcode, body) {
        Ok(r) => r,
        Err(e) => (frame::ERROR, error_body(&e)),
    }
}

fn log_schema(outcome: &Outcome) {
    if let Outcome::SchemaChange {
        change,
        target,
        keyspace,
        name,
    } = outcome
    {
        tracing::debug!(
            change,
            target,
            keyspace,
            name = name.as_deref(),
            "CQL schema change"
        );
    }
}
