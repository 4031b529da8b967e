//! MTProto uploads over connections of their own.
//!
//! grammers' client would do: it gzips every request of 512 bytes or more to see whether it is
//! smaller (at its best compression, about 20 MB/s, for file parts that never are), and one task
//! per client serialises, encrypts and writes every request. Its compression threshold cannot
//! be set through the client. So an upload opens [`CONNECTIONS`] MTProto connections of its
//! own to the bot's home DC, on the bot's auth key (new sessions of an authorization already
//! signed in: no sign-in), with compression off, and keeps a part in flight on each: parts are
//! read in turn from the stream (at most one part a connection in memory), sent in any order,
//! as Telegram allows.

use crate::mtproto::{MtprotoError, UPLOAD_PART};
use grammers_client::tl;
use grammers_client::InvocationError;
use grammers_mtproto::{mtp, transport};
use grammers_mtsender::{Sender, ServerAddr};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use tokio::io::AsyncReadExt;
use tokio::sync::Mutex;

/// Connections (and parts in flight) per upload.
pub(crate) const CONNECTIONS: usize = 4;

/// Files up to this size are uploaded with `saveFilePart`, larger ones with
/// `saveBigFilePart` (Telegram's rule).
const SMALL_FILE: u64 = 10 * 1024 * 1024;

/// Tries per part: a dropped connection is opened again and the part sent again.
const TRIES: usize = 4;

/// Where and as whom the parts go.
#[derive(Clone)]
pub(crate) struct Home {
    pub addr: SocketAddr,
    pub auth_key: [u8; 256],
    pub api_id: i32,
}

type Connection = Sender<transport::Full, mtp::Encrypted>;

/// The file's parts, read in turn by the connections.
struct Parts<R> {
    reader: R,
    next: u32,
}

fn other(what: &str, e: impl std::fmt::Display) -> MtprotoError {
    MtprotoError::Other(format!("{what}: {e}"))
}

async fn connect(home: &Home) -> Result<Connection, MtprotoError> {
    let mtp = mtp::Encrypted::build()
        .compression_threshold(None)
        .finish(home.auth_key);
    let mut conn = Sender::connect(
        transport::Full::new(),
        mtp,
        ServerAddr::Tcp { address: home.addr },
    )
    .await
    .map_err(|e| other("upload connection", e))?;
    // Every new session says who it is before anything else.
    let init = tl::functions::InvokeWithLayer {
        layer: tl::LAYER,
        query: tl::functions::InitConnection {
            api_id: home.api_id,
            device_model: "telepipe".into(),
            system_version: std::env::consts::OS.into(),
            app_version: env!("CARGO_PKG_VERSION").into(),
            system_lang_code: "en".into(),
            lang_pack: String::new(),
            lang_code: "en".into(),
            proxy: None,
            params: None,
            query: tl::functions::help::GetConfig {},
        },
    };
    conn.invoke(&init)
        .await
        .map_err(|e| other("upload connection", e))?;
    Ok(conn)
}

/// Sends one part, opening the connection again (and resending) when it drops, waiting out
/// a FLOOD_WAIT.
async fn send_part<Q>(conn: &mut Connection, home: &Home, request: &Q) -> Result<(), MtprotoError>
where
    Q: tl::RemoteCall<Return = bool>,
{
    let mut last = String::new();
    for _ in 0..TRIES {
        match conn.invoke(request).await {
            Ok(true) => return Ok(()),
            Ok(false) => return Err(MtprotoError::Other("Telegram refused a file part".into())),
            Err(InvocationError::Rpc(e)) if e.name == "FLOOD_WAIT" => {
                let secs = e.value.unwrap_or(1).min(300);
                tracing::warn!(secs, "upload part waits out a FLOOD_WAIT");
                tokio::time::sleep(Duration::from_secs(secs as u64)).await;
            }
            Err(e @ InvocationError::Rpc(_)) => return Err(crate::grammers::from_invocation(e)),
            Err(e) => {
                last = e.to_string();
                tracing::warn!(error = %last, "upload connection dropped; opening it again");
                *conn = connect(home).await?;
            }
        }
    }
    Err(other("upload part", last))
}

/// Uploads `size` bytes from `reader` as file `file_id`; returns how many parts it took.
pub(crate) async fn upload<R>(
    home: Home,
    reader: R,
    size: u64,
    file_id: i64,
) -> Result<u32, MtprotoError>
where
    R: tokio::io::AsyncRead + Unpin + Send + 'static,
{
    let total = size.div_ceil(UPLOAD_PART).max(1) as u32;
    let big = size > SMALL_FILE;
    let parts = Arc::new(Mutex::new(Parts { reader, next: 0 }));
    let home = Arc::new(home);
    let mut workers = tokio::task::JoinSet::new();
    for _ in 0..CONNECTIONS.min(total as usize) {
        let (parts, home) = (parts.clone(), home.clone());
        workers.spawn(async move {
            let mut conn = connect(&home).await?;
            loop {
                let (n, bytes) = {
                    let mut p = parts.lock().await;
                    if p.next >= total {
                        return Ok::<(), MtprotoError>(());
                    }
                    let n = p.next;
                    let len = (size - n as u64 * UPLOAD_PART).min(UPLOAD_PART) as usize;
                    let mut bytes = vec![0u8; len];
                    p.reader
                        .read_exact(&mut bytes)
                        .await
                        .map_err(|e| other("reading the file", e))?;
                    p.next += 1;
                    (n as i32, bytes)
                };
                if big {
                    let request = tl::functions::upload::SaveBigFilePart {
                        file_id,
                        file_part: n,
                        file_total_parts: total as i32,
                        bytes,
                    };
                    send_part(&mut conn, &home, &request).await?;
                } else {
                    let request = tl::functions::upload::SaveFilePart {
                        file_id,
                        file_part: n,
                        bytes,
                    };
                    send_part(&mut conn, &home, &request).await?;
                }
            }
        });
    }
    // The first failure stops the rest (dropping the set aborts them).
    while let Some(done) = workers.join_next().await {
        done.map_err(|e| other("upload worker", e))??;
    }
    Ok(total)
}

/// The uploaded file as an `InputFile` (big files have no checksum; small ones may leave it
/// empty).
pub(crate) fn input_file(file_id: i64, parts: u32, size: u64, name: &str) -> tl::enums::InputFile {
    if size > SMALL_FILE {
        tl::types::InputFileBig {
            id: file_id,
            parts: parts as i32,
            name: name.to_owned(),
        }
        .into()
    } else {
        tl::types::InputFile {
            id: file_id,
            parts: parts as i32,
            name: name.to_owned(),
            md5_checksum: String::new(),
        }
        .into()
    }
}
