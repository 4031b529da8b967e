//! The native protocol v4's notation (`[short]`, `[string]`, `[bytes]`, ...) and the bodies
//! of the requests and responses the stand-in speaks.

use crate::engine::{Bound, CqlError, Exec, Extra, Outcome, PreparedInfo, Rows, Spec, PROTOCOL};

pub const ERROR: u8 = 0x00;
pub const STARTUP: u8 = 0x01;
pub const READY: u8 = 0x02;
pub const OPTIONS: u8 = 0x05;
pub const SUPPORTED: u8 = 0x06;
pub const QUERY: u8 = 0x07;
pub const RESULT: u8 = 0x08;
pub const PREPARE: u8 = 0x09;
pub const EXECUTE: u8 = 0x0A;
pub const REGISTER: u8 = 0x0B;
pub const BATCH: u8 = 0x0D;

pub fn opcode_name(op: u8) -> &'static str {
    match op {
        STARTUP => "STARTUP",
        OPTIONS => "OPTIONS",
        QUERY => "QUERY",
        PREPARE => "PREPARE",
        EXECUTE => "EXECUTE",
        REGISTER => "REGISTER",
        BATCH => "BATCH",
        0x0F => "AUTH_RESPONSE",
        _ => "UNKNOWN",
    }
}

fn malformed(what: &str) -> CqlError {
    CqlError::new(PROTOCOL, format!("Malformed request: {what}"))
}

pub struct Reader<'a> {
    buf: &'a [u8],
    pos: usize,
}

type R<T> = Result<T, CqlError>;

impl<'a> Reader<'a> {
    pub fn new(buf: &'a [u8]) -> Self {
        Reader { buf, pos: 0 }
    }

    fn take(&mut self, n: usize) -> R<&'a [u8]> {
        let s = self
            .buf
            .get(self.pos..self.pos.saturating_add(n))
            .ok_or_else(|| malformed("body too short"))?;
        self.pos += n;
        Ok(s)
    }

    pub fn byte(&mut self) -> R<u8> {
        Ok(self.take(1)?[0])
    }

    pub fn short(&mut self) -> R<u16> {
        Ok(u16::from_be_bytes(
            self.take(2)?.try_into().expect("2 bytes"),
        ))
    }

    pub fn int(&mut self) -> R<i32> {
        Ok(i32::from_be_bytes(
            self.take(4)?.try_into().expect("4 bytes"),
        ))
    }

    pub fn long(&mut self) -> R<i64> {
        Ok(i64::from_be_bytes(
            self.take(8)?.try_into().expect("8 bytes"),
        ))
    }

    pub fn string(&mut self) -> R<String> {
        let n = self.short()? as usize;
        String::from_utf8(self.take(n)?.to_vec()).map_err(|_| malformed("a string is not UTF-8"))
    }

    pub fn long_string(&mut self) -> R<String> {
        let n = self.int()?;
        if n < 0 {
            return Err(malformed("negative length"));
        }
        String::from_utf8(self.take(n as usize)?.to_vec())
            .map_err(|_| malformed("a string is not UTF-8"))
    }

    pub fn short_bytes(&mut self) -> R<Vec<u8>> {
        let n = self.short()? as usize;
        Ok(self.take(n)?.to_vec())
    }

    pub fn value(&mut self) -> R<Bound> {
        Ok(match self.int()? {
            -1 => Bound::Null,
            -2 => Bound::Unset,
            n if n < 0 => return Err(malformed("negative length")),
            n => Bound::Value(self.take(n as usize)?.to_vec()),
        })
    }

    pub fn string_map(&mut self) -> R<Vec<(String, String)>> {
        let n = self.short()?;
        (0..n)
            .map(|_| Ok((self.string()?, self.string()?)))
            .collect()
    }

    /// A `[bytes map]` (a custom payload), skipped.
    pub fn skip_bytes_map(&mut self) -> R<()> {
        for _ in 0..self.short()? {
            self.string()?;
            self.value()?;
        }
        Ok(())
    }

    pub fn values(&mut self, named: bool) -> R<(Vec<Bound>, Option<Vec<String>>)> {
        let n = self.short()?;
        let mut values = Vec::with_capacity(n as usize);
        let mut names = named.then(Vec::new);
        for _ in 0..n {
            if let Some(names) = &mut names {
                names.push(self.string()?);
            }
            values.push(self.value()?);
        }
        Ok((values, names))
    }

    /// QUERY and EXECUTE parameters; whether the client asked to skip result metadata.
    pub fn params(&mut self) -> R<(Exec, bool)> {
        let consistency = self.short()?;
        let flags = self.byte()?;
        let mut exec = Exec {
            consistency,
            ..Exec::default()
        };
        if flags & 0x01 != 0 {
            let (values, names) = self.values(flags & 0x40 != 0)?;
            exec.values = values;
            exec.names = names;
        }
        if flags & 0x04 != 0 {
            exec.page_size = Some(self.int()?);
        }
        if flags & 0x08 != 0 {
            exec.paging_state = match self.value()? {
                Bound::Value(v) => Some(v),
                _ => None,
            };
        }
        if flags & 0x10 != 0 {
            exec.serial = Some(self.short()?);
        }
        if flags & 0x20 != 0 {
            self.long()?;
        }
        Ok((exec, flags & 0x02 != 0))
    }
}

#[derive(Default)]
pub struct Writer(pub Vec<u8>);

impl Writer {
    pub fn short(&mut self, v: u16) -> &mut Self {
        self.0.extend_from_slice(&v.to_be_bytes());
        self
    }

    pub fn int(&mut self, v: i32) -> &mut Self {
        self.0.extend_from_slice(&v.to_be_bytes());
        self
    }

    pub fn string(&mut self, s: &str) -> &mut Self {
        self.short(s.len().min(u16::MAX as usize) as u16);
        self.0
            .extend_from_slice(&s.as_bytes()[..s.len().min(u16::MAX as usize)]);
        self
    }

    pub fn short_bytes(&mut self, b: &[u8]) -> &mut Self {
        self.short(b.len() as u16);
        self.0.extend_from_slice(b);
        self
    }

    pub fn bytes(&mut self, b: Option<&[u8]>) -> &mut Self {
        match b {
            None => self.int(-1),
            Some(b) => {
                self.int(b.len() as i32);
                self.0.extend_from_slice(b);
                self
            }
        }
    }

    pub fn string_multimap(&mut self, m: &[(&str, &[&str])]) -> &mut Self {
        self.short(m.len() as u16);
        for (k, vs) in m {
            self.string(k);
            self.short(vs.len() as u16);
            for v in *vs {
                self.string(v);
            }
        }
        self
    }

    /// Rows (and prepared result) metadata.
    fn metadata(&mut self, specs: &[Spec], paging_state: Option<&[u8]>, skip: bool) {
        let global = specs
            .first()
            .filter(|f| specs.iter().all(|s| s.0 == f.0 && s.1 == f.1));
        let mut flags = 0;
        if global.is_some() {
            flags |= 0x0001;
        }
        if paging_state.is_some() {
            flags |= 0x0002;
        }
        if skip || specs.is_empty() {
            flags |= 0x0004;
        }
        self.int(flags).int(specs.len() as i32);
        if let Some(p) = paging_state {
            self.bytes(Some(p));
        }
        if flags & 0x0004 != 0 {
            return;
        }
        if let Some(g) = global {
            self.string(&g.0).string(&g.1);
        }
        for s in specs {
            if global.is_none() {
                self.string(&s.0).string(&s.1);
            }
            self.string(&s.2);
            s.3.write_option(&mut self.0);
        }
    }

    pub fn result(&mut self, outcome: &Outcome, skip_metadata: bool) {
        match outcome {
            Outcome::Void => {
                self.int(1);
            }
            Outcome::Rows(Rows {
                columns,
                rows,
                paging_state,
            }) => {
                self.int(2);
                self.metadata(columns, paging_state.as_deref(), skip_metadata);
                self.int(rows.len() as i32);
                for row in rows {
                    for cell in row {
                        self.bytes(cell.as_deref());
                    }
                }
            }
            Outcome::SetKeyspace(ks) => {
                self.int(3).string(ks);
            }
            Outcome::SchemaChange {
                change,
                target,
                keyspace,
                name,
            } => {
                self.int(5).string(change).string(target).string(keyspace);
                if let Some(n) = name {
                    self.string(n);
                }
            }
        }
    }

    pub fn prepared(&mut self, p: &PreparedInfo) {
        self.int(4).short_bytes(&p.id);
        let global = p
            .binds
            .first()
            .filter(|f| p.binds.iter().all(|s| s.0 == f.0 && s.1 == f.1));
        self.int(i32::from(global.is_some()))
            .int(p.binds.len() as i32)
            .int(p.pk_indexes.len() as i32);
        for i in &p.pk_indexes {
            self.short(*i);
        }
        if let Some(g) = global {
            self.string(&g.0).string(&g.1);
        }
        for s in &p.binds {
            if global.is_none() {
                self.string(&s.0).string(&s.1);
            }
            self.string(&s.2);
            s.3.write_option(&mut self.0);
        }
        self.metadata(p.result.as_deref().unwrap_or(&[]), None, false);
    }

    pub fn error(&mut self, e: &CqlError) {
        self.int(e.code).string(&e.message);
        match &e.extra {
            Extra::None => {}
            Extra::AlreadyExists { keyspace, table } => {
                self.string(keyspace).string(table);
            }
            Extra::Unprepared(id) => {
                self.short_bytes(id);
            }
            Extra::Unavailable {
                consistency,
                required,
                alive,
            } => {
                self.short(*consistency).int(*required).int(*alive);
            }
        }
    }
}
