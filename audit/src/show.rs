//! The record shown: a readable table, or JSON lines. Neither shows a token: rows carry a
//! token's fingerprint only, parameters are redacted, and the sealed request is left out.

use crate::format_time;
use std::io::Write;
use store::CallRow;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Format {
    Table,
    Json,
}

impl std::str::FromStr for Format {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "table" => Ok(Format::Table),
            "json" => Ok(Format::Json),
            other => Err(format!("--format is table or json, not {other:?}")),
        }
    }
}

/// The table's header line.
pub fn header(out: &mut impl Write) -> std::io::Result<()> {
    writeln!(
        out,
        "{:<24}  {:>12}  {:<24}  {:<9}  {:>6}  {:>7}  DESCRIPTION",
        "TIME", "BOT", "METHOD", "ENCODING", "STATUS", "MS"
    )
}

/// One row, in `format`.
pub fn row(out: &mut impl Write, format: Format, r: &CallRow) -> std::io::Result<()> {
    match format {
        Format::Table => {
            let status = r
                .http_status
                .map(|s| s.to_string())
                .unwrap_or_else(|| "-".into());
            let ms = r
                .latency_ms
                .map(|s| s.to_string())
                .unwrap_or_else(|| "-".into());
            let mut description = r.description.clone().unwrap_or_default();
            if description.len() > 60 {
                let mut cut = 57;
                while !description.is_char_boundary(cut) {
                    cut -= 1;
                }
                description.truncate(cut);
                description.push_str("...");
            }
            writeln!(
                out,
                "{:<24}  {:>12}  {:<24}  {:<9}  {:>6}  {:>7}  {}",
                format_time(r.received_ms),
                r.bot_id.0,
                r.method,
                r.encoding.as_str(),
                status,
                ms,
                description
            )
        }
        Format::Json => {
            serde_json::to_writer(&mut *out, &json(r))?;
            writeln!(out)
        }
    }
}

/// A row as its JSON line: everything but the sealed request.
pub fn json(r: &CallRow) -> serde_json::Value {
    let mut v = serde_json::to_value(r).unwrap_or_default();
    if let Some(m) = v.as_object_mut() {
        m.remove("request");
        m.insert("time".into(), format_time(r.received_ms).into());
        m.insert("replayable".into(), r.request.is_some().into());
    }
    v
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rows_show_no_sealed_request_and_fit_the_table() {
        let mut r = store::testsuite::call_row(42, 1_796_119_200_123, "sendMessage");
        r.description = Some("é".repeat(40));
        let mut out = Vec::new();
        row(&mut out, Format::Table, &r).unwrap();
        let line = String::from_utf8(out).unwrap();
        assert!(line.starts_with("2026-12-01T10:00:00.123Z"));
        assert!(line.contains("sendMessage") && line.trim_end().ends_with("..."));
        let mut out = Vec::new();
        row(&mut out, Format::Json, &r).unwrap();
        let v: serde_json::Value = serde_json::from_slice(&out).unwrap();
        assert!(v.get("request").is_none());
        assert_eq!(v["replayable"], true);
        assert_eq!(v["encoding"], "form");
        assert_eq!(v["params"]["text"], "hi");
    }
}
