//! Keyspaces, tables and rows, and the statements that act on them, with Scylla's rules.
//!
//! One node owning the whole ring: data lives in ordered maps (partition key, then clustering
//! key), values as the protocol encodes them. Writes apply in arrival order under one lock, so
//! write timestamps are not kept. Cells and row markers carry their expiry (`USING TTL`); reads
//! skip what has expired and a sweep every few thousand statements forgets it.

use crate::parse::{self, Conditions, InValues, Op, Relation, Selection, Statement, Term};
use crate::types::{self, Type};
use std::collections::{BTreeMap, HashMap};
use std::net::IpAddr;
use std::sync::Arc;

/// An error the protocol carries as an ERROR frame.
#[derive(Debug, Clone, PartialEq)]
pub struct CqlError {
    pub code: i32,
    pub message: String,
    pub extra: Extra,
}

#[derive(Debug, Clone, PartialEq)]
pub enum Extra {
    None,
    AlreadyExists {
        keyspace: String,
        table: String,
    },
    Unprepared([u8; 16]),
    Unavailable {
        consistency: u16,
        required: i32,
        alive: i32,
    },
}

pub const SERVER: i32 = 0x0000;
pub const PROTOCOL: i32 = 0x000A;
pub const UNAVAILABLE: i32 = 0x1000;
pub const SYNTAX: i32 = 0x2000;
pub const UNAUTHORIZED: i32 = 0x2100;
pub const INVALID: i32 = 0x2200;
pub const ALREADY_EXISTS: i32 = 0x2400;
pub const UNPREPARED: i32 = 0x2500;

impl CqlError {
    pub fn new(code: i32, message: impl Into<String>) -> Self {
        CqlError {
            code,
            message: message.into(),
            extra: Extra::None,
        }
    }
}

fn invalid(message: impl Into<String>) -> CqlError {
    CqlError::new(INVALID, message)
}

type R<T> = Result<T, CqlError>;

const FILTERING: &str = "Cannot execute this query as it might involve data filtering and thus \
    may have unpredictable performance. If you want to execute this query despite the \
    performance unpredictability, use ALLOW FILTERING";

const MAX_TTL: i32 = 630_720_000;
const DATACENTER: &str = "datacenter1";
const PREPARED_KEPT: usize = 10_000;
const SWEEP_EVERY: u64 = 4096;

/// A bind value as sent: a value, null, or (v4) unset.
#[derive(Debug, Clone, PartialEq)]
pub enum Bound {
    Value(Vec<u8>),
    Null,
    Unset,
}

/// What QUERY and EXECUTE carry besides the statement.
#[derive(Debug, Clone, Default)]
pub struct Exec {
    pub consistency: u16,
    pub serial: Option<u16>,
    pub values: Vec<Bound>,
    pub names: Option<Vec<String>>,
    pub page_size: Option<i32>,
    pub paging_state: Option<Vec<u8>>,
}

/// A statement of a BATCH (its text, or a prepared id: `Err`) with its values.
pub type BatchItem = (Result<String, Vec<u8>>, Vec<Bound>);

/// A column spec: (keyspace, table, name, type).
pub type Spec = (String, String, String, Type);

pub struct Rows {
    pub columns: Vec<Spec>,
    pub rows: Vec<Vec<Option<Vec<u8>>>>,
    pub paging_state: Option<Vec<u8>>,
}

pub enum Outcome {
    Void,
    Rows(Rows),
    SetKeyspace(String),
    SchemaChange {
        change: &'static str,
        target: &'static str,
        keyspace: String,
        name: Option<String>,
    },
}

pub struct PreparedInfo {
    pub id: [u8; 16],
    pub binds: Vec<Spec>,
    pub pk_indexes: Vec<u16>,
    pub result: Option<Vec<Spec>>,
}

struct Prepared {
    keyspace: Option<String>,
    statement: Statement,
    binds: Vec<Spec>,
}

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Kind {
    Partition,
    Clustering,
    Regular,
}

struct Column {
    name: String,
    ty: Type,
    frozen: bool,
    kind: Kind,
    position: i32,
}

#[derive(Clone, PartialEq, Eq, Debug)]
struct CKey(Vec<(Vec<u8>, bool)>);

impl Ord for CKey {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        for ((a, desc), (b, _)) in self.0.iter().zip(&other.0) {
            let o = a.cmp(b);
            let o = if *desc { o.reverse() } else { o };
            if o.is_ne() {
                return o;
            }
        }
        self.0.len().cmp(&other.0.len())
    }
}

impl PartialOrd for CKey {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}

struct Cell {
    value: Vec<u8>,
    expires: Option<i64>,
}

#[derive(Default)]
struct Row {
    /// The row marker an INSERT writes (`Some(expiry)`); UPDATE-made rows have none.
    marker: Option<Option<i64>>,
    cells: Vec<Option<Cell>>,
}

fn alive(expires: Option<i64>, now: i64) -> bool {
    expires.is_none_or(|e| e > now)
}

impl Row {
    fn live(&self, table: &Table, now: i64) -> bool {
        self.live_in(&table.columns, now)
    }

    /// A row lives while its marker or one of its regular cells does.
    fn live_in(&self, columns: &[Column], now: i64) -> bool {
        self.marker.is_some_and(|m| alive(m, now))
            || self.cells.iter().zip(columns).any(|(c, col)| {
                col.kind == Kind::Regular && c.as_ref().is_some_and(|c| alive(c.expires, now))
            })
    }

    fn get(&self, i: usize, now: i64) -> Option<&[u8]> {
        self.cells
            .get(i)?
            .as_ref()
            .filter(|c| alive(c.expires, now))
            .map(|c| c.value.as_slice())
    }
}

#[derive(Default)]
struct Partition {
    rows: BTreeMap<CKey, Row>,
}

struct Table {
    keyspace: String,
    name: String,
    id: [u8; 16],
    /// Partition key, clustering key (declared order), then the rest by name (as `*` lists them).
    columns: Vec<Column>,
    n_pk: usize,
    n_ck: usize,
    partitions: BTreeMap<Vec<Vec<u8>>, Partition>,
}

impl Table {
    fn column(&self, name: &str) -> Option<usize> {
        self.columns.iter().position(|c| c.name == name)
    }

    fn spec(&self, i: usize) -> Spec {
        (
            self.keyspace.clone(),
            self.name.clone(),
            self.columns[i].name.clone(),
            self.columns[i].ty.clone(),
        )
    }

    fn ckey(&self, values: &[Vec<u8>]) -> CKey {
        CKey(
            values
                .iter()
                .enumerate()
                .map(|(i, v)| {
                    let c = &self.columns[self.n_pk + i];
                    (c.ty.order_key(v), c.position < 0)
                })
                .collect(),
        )
    }

    fn pkey(&self, values: &[Vec<u8>]) -> Vec<Vec<u8>> {
        values
            .iter()
            .enumerate()
            .map(|(i, v)| self.columns[i].ty.order_key(v))
            .collect()
    }

    fn sweep(&mut self, now: i64) {
        let columns = &self.columns;
        for p in self.partitions.values_mut() {
            p.rows.retain(|_, r| r.live_in(columns, now));
        }
        self.partitions.retain(|_, p| !p.rows.is_empty());
    }
}

struct Keyspace {
    replication: Vec<(String, String)>,
    tables: BTreeMap<String, Table>,
    system: bool,
}

impl Keyspace {
    fn replication_factor(&self) -> i32 {
        let get = |k: &str| {
            self.replication
                .iter()
                .find(|(key, _)| key == k)
                .and_then(|(_, v)| v.parse::<i32>().ok())
        };
        if self.system {
            return 1;
        }
        let class = self
            .replication
            .iter()
            .find(|(k, _)| k == "class")
            .map_or("", |(_, v)| v.as_str());
        if class.ends_with("SimpleStrategy") {
            get("replication_factor").unwrap_or(0)
        } else {
            get(DATACENTER).unwrap_or(0)
        }
    }
}

pub struct Engine {
    keyspaces: BTreeMap<String, Keyspace>,
    prepared: HashMap<[u8; 16], Arc<Prepared>>,
    host_id: [u8; 16],
    rpc_address: IpAddr,
    statements: u64,
    clock: Box<dyn Fn() -> i64 + Send>,
}

fn wall_clock_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

/// The system tables the drivers read, as the stand-in defines them.
const SYSTEM_TABLES: &[&str] = &[
    "CREATE TABLE system.local (key text PRIMARY KEY, bootstrapped text, broadcast_address inet, \
     cluster_name text, cql_version text, data_center text, host_id uuid, listen_address inet, \
     native_protocol_version text, partitioner text, rack text, release_version text, \
     rpc_address inet, schema_version uuid, tokens set<text>)",
    "CREATE TABLE system.peers (peer inet PRIMARY KEY, data_center text, host_id uuid, \
     preferred_ip inet, rack text, release_version text, rpc_address inet, \
     schema_version uuid, tokens set<text>)",
    "CREATE TABLE system_schema.keyspaces (keyspace_name text PRIMARY KEY, \
     durable_writes boolean, replication map<text, text>)",
    "CREATE TABLE system_schema.tables (keyspace_name text, table_name text, comment text, \
     default_time_to_live int, flags set<text>, gc_grace_seconds int, id uuid, \
     PRIMARY KEY ((keyspace_name), table_name))",
    "CREATE TABLE system_schema.columns (keyspace_name text, table_name text, \
     column_name text, clustering_order text, column_name_bytes blob, kind text, \
     position int, type text, PRIMARY KEY ((keyspace_name), table_name, column_name))",
    "CREATE TABLE system_schema.types (keyspace_name text, type_name text, \
     field_names frozen<list<text>>, field_types frozen<list<text>>, \
     PRIMARY KEY ((keyspace_name), type_name))",
    "CREATE TABLE system_schema.functions (keyspace_name text, function_name text, \
     argument_types frozen<list<text>>, argument_names frozen<list<text>>, body text, \
     called_on_null_input boolean, language text, return_type text, \
     PRIMARY KEY ((keyspace_name), function_name, argument_types))",
    "CREATE TABLE system_schema.aggregates (keyspace_name text, aggregate_name text, \
     argument_types frozen<list<text>>, final_func text, initcond text, return_type text, \
     state_func text, state_type text, \
     PRIMARY KEY ((keyspace_name), aggregate_name, argument_types))",
    "CREATE TABLE system_schema.triggers (keyspace_name text, table_name text, \
     trigger_name text, options frozen<map<text, text>>, \
     PRIMARY KEY ((keyspace_name), table_name, trigger_name))",
    "CREATE TABLE system_schema.indexes (keyspace_name text, table_name text, \
     index_name text, kind text, options frozen<map<text, text>>, \
     PRIMARY KEY ((keyspace_name), table_name, index_name))",
    "CREATE TABLE system_schema.views (keyspace_name text, view_name text, \
     base_table_id uuid, base_table_name text, include_all_columns boolean, \
     where_clause text, PRIMARY KEY ((keyspace_name), view_name))",
    "CREATE TABLE system_schema.scylla_tables (keyspace_name text, table_name text, \
     partitioner text, PRIMARY KEY ((keyspace_name), table_name))",
    "CREATE TABLE system_schema.scylla_keyspaces (keyspace_name text PRIMARY KEY, \
     initial_tablets int)",
];

fn text(s: &str) -> Vec<u8> {
    s.as_bytes().to_vec()
}

fn inet(a: IpAddr) -> Vec<u8> {
    match a {
        IpAddr::V4(a) => a.octets().to_vec(),
        IpAddr::V6(a) => a.octets().to_vec(),
    }
}

fn random_id() -> [u8; 16] {
    *uuid::Uuid::now_v7().as_bytes()
}

fn consistency_name(cl: u16) -> &'static str {
    match cl {
        0 => "ANY",
        1 => "ONE",
        2 => "TWO",
        3 => "THREE",
        4 => "QUORUM",
        5 => "ALL",
        6 => "LOCAL_QUORUM",
        7 => "EACH_QUORUM",
        8 => "SERIAL",
        9 => "LOCAL_SERIAL",
        10 => "LOCAL_ONE",
        _ => "UNKNOWN",
    }
}

/// A restriction of a WHERE clause with its values resolved.
#[derive(Debug)]
enum Restr {
    Eq(usize, Vec<u8>),
    In(usize, Vec<Vec<u8>>),
    Cmp(usize, Op, Vec<u8>),
    Multi(Vec<usize>, Op, Vec<Vec<u8>>),
}

impl Restr {
    fn columns(&self) -> Vec<usize> {
        match self {
            Restr::Eq(c, _) | Restr::In(c, _) | Restr::Cmp(c, ..) => vec![*c],
            Restr::Multi(cs, ..) => cs.clone(),
        }
    }

    fn holds(&self, t: &Table, row: &Row, now: i64) -> bool {
        let key = |c: usize, v: &[u8]| t.columns[c].ty.order_key(v);
        let cell = |c: usize| row.get(c, now).map(|v| key(c, v));
        match self {
            Restr::Eq(c, v) => cell(*c) == Some(key(*c, v)),
            Restr::In(c, vs) => cell(*c).is_some_and(|k| vs.iter().any(|v| key(*c, v) == k)),
            Restr::Cmp(c, op, v) => cell(*c).is_some_and(|k| op.holds(k.cmp(&key(*c, v)))),
            Restr::Multi(cs, op, vs) => {
                let mut o = std::cmp::Ordering::Equal;
                for (c, v) in cs.iter().zip(vs) {
                    let Some(k) = cell(*c) else { return false };
                    o = k.cmp(&key(*c, v));
                    if o.is_ne() {
                        break;
                    }
                }
                op.holds(o)
            }
        }
    }
}

/// A statement's LWT condition with its values resolved.
enum Condition {
    Exists,
    NotExists,
    Columns(Vec<(usize, Op, Option<Vec<u8>>)>),
}

impl Engine {
    pub fn new(rpc_address: IpAddr) -> Self {
        let mut e = Engine {
            keyspaces: BTreeMap::new(),
            prepared: HashMap::new(),
            host_id: random_id(),
            rpc_address,
            statements: 0,
            clock: Box::new(wall_clock_ms),
        };
        for ks in ["system", "system_schema"] {
            e.keyspaces.insert(
                ks.into(),
                Keyspace {
                    replication: vec![(
                        "class".into(),
                        "org.apache.cassandra.locator.LocalStrategy".into(),
                    )],
                    tables: BTreeMap::new(),
                    system: true,
                },
            );
        }
        for cql in SYSTEM_TABLES {
            let (statement, _) = parse::parse(cql).expect("the system tables parse");
            e.create_table(&None, &statement, true)
                .expect("the system tables are valid");
        }
        e.schema_changed();
        e
    }

    /// Replaces the wall clock (tests of expiry).
    pub fn set_clock(&mut self, clock: impl Fn() -> i64 + Send + 'static) {
        self.clock = Box::new(clock);
    }

    fn now(&self) -> i64 {
        (self.clock)()
    }

    pub fn host_id(&self) -> [u8; 16] {
        self.host_id
    }

    pub fn query(&mut self, keyspace: &mut Option<String>, cql: &str, exec: &Exec) -> R<Outcome> {
        let (statement, markers) = parse_cql(cql)?;
        let binds = self.bind_specs(keyspace, &statement, markers)?;
        self.run(keyspace, &statement, &binds, exec)
    }

    pub fn prepare(&mut self, keyspace: &Option<String>, cql: &str) -> R<PreparedInfo> {
        use sha2::Digest;
        let (statement, markers) = parse_cql(cql)?;
        let binds = self.bind_specs(keyspace, &statement, markers)?;
        let mut h = sha2::Sha256::new();
        h.update(keyspace.as_deref().unwrap_or("").as_bytes());
        h.update([0]);
        h.update(cql.as_bytes());
        let id: [u8; 16] = h.finalize()[..16].try_into().expect("16 of 32 bytes");
        let pk_indexes = self.pk_indexes(keyspace, &statement);
        let result = self.result_metadata(keyspace, &statement)?;
        if self.prepared.len() >= PREPARED_KEPT && !self.prepared.contains_key(&id) {
            // Drivers re-prepare on Unprepared, with the same id.
            self.prepared.clear();
        }
        self.prepared.insert(
            id,
            Arc::new(Prepared {
                keyspace: keyspace.clone(),
                statement,
                binds: binds.clone(),
            }),
        );
        Ok(PreparedInfo {
            id,
            binds,
            pk_indexes,
            result,
        })
    }

    pub fn execute(&mut self, keyspace: &mut Option<String>, id: &[u8], exec: &Exec) -> R<Outcome> {
        let p = self.prepared_statement(id)?;
        // A prepared statement keeps the keyspace it was prepared in.
        let mut ks = p.keyspace.clone().or_else(|| keyspace.clone());
        let out = self.run(&mut ks, &p.statement, &p.binds, exec)?;
        if let Outcome::SetKeyspace(k) = &out {
            *keyspace = Some(k.clone());
        }
        Ok(out)
    }

    fn prepared_statement(&self, id: &[u8]) -> R<Arc<Prepared>> {
        let key: Option<[u8; 16]> = id.try_into().ok();
        match key.and_then(|k| self.prepared.get(&k)) {
            Some(p) => Ok(p.clone()),
            None => Err(CqlError {
                code: UNPREPARED,
                message: format!(
                    "Prepared query with ID {} not found (either the query was not prepared on \
                     this host (maybe the host has been restarted?) or you have prepared too \
                     many queries and it has been evicted from the internal cache)",
                    id.iter().map(|b| format!("{b:02x}")).collect::<String>()
                ),
                extra: Extra::Unprepared(key.unwrap_or_default()),
            }),
        }
    }

    /// A BATCH: each statement in turn, all under the one lock (so all or, on the first
    /// error before anything is written, nothing: statements are checked first).
    pub fn batch(
        &mut self,
        keyspace: &mut Option<String>,
        items: Vec<BatchItem>,
        consistency: u16,
    ) -> R<Outcome> {
        let mut planned = Vec::new();
        for (what, values) in items {
            let (statement, binds, ks) = match what {
                Ok(cql) => {
                    let (s, markers) = parse_cql(&cql)?;
                    let binds = self.bind_specs(keyspace, &s, markers)?;
                    (s, binds, keyspace.clone())
                }
                Err(id) => {
                    let p = self.prepared_statement(&id)?;
                    (
                        p.statement.clone(),
                        p.binds.clone(),
                        p.keyspace.clone().or_else(|| keyspace.clone()),
                    )
                }
            };
            match &statement {
                Statement::Insert { if_not_exists, .. } if *if_not_exists => {
                    return Err(invalid("unsupported by the stand-in: conditional BATCH"))
                }
                Statement::Update { conditions, .. } | Statement::Delete { conditions, .. }
                    if *conditions != Conditions::None =>
                {
                    return Err(invalid("unsupported by the stand-in: conditional BATCH"))
                }
                Statement::Insert { .. } | Statement::Update { .. } | Statement::Delete { .. } => {}
                _ => {
                    return Err(invalid(
                        "Invalid statement in batch: only UPDATE, INSERT and DELETE statements \
                         are allowed.",
                    ))
                }
            }
            let exec = Exec {
                consistency,
                values,
                ..Exec::default()
            };
            check_values(&binds, &exec)?;
            planned.push((statement, binds, ks, exec));
        }
        for (statement, binds, mut ks, exec) in planned {
            self.run(&mut ks, &statement, &binds, &exec)?;
        }
        Ok(Outcome::Void)
    }

    fn run(
        &mut self,
        keyspace: &mut Option<String>,
        statement: &Statement,
        binds: &[Spec],
        exec: &Exec,
    ) -> R<Outcome> {
        let values = check_values(binds, exec)?;
        self.statements += 1;
        if self.statements.is_multiple_of(SWEEP_EVERY) {
            let now = self.now();
            for ks in self.keyspaces.values_mut() {
                ks.tables.values_mut().for_each(|t| t.sweep(now));
            }
        }
        match statement {
            Statement::Use(name) => {
                if !self.keyspaces.contains_key(name) {
                    return Err(invalid(format!("Keyspace '{name}' does not exist")));
                }
                *keyspace = Some(name.clone());
                Ok(Outcome::SetKeyspace(name.clone()))
            }
            Statement::CreateKeyspace { .. }
            | Statement::CreateTable { .. }
            | Statement::DropTable { .. }
            | Statement::DropKeyspace { .. } => {
                let out = match statement {
                    Statement::CreateKeyspace {
                        name,
                        if_not_exists,
                        replication,
                    } => self.create_keyspace(name, *if_not_exists, replication)?,
                    Statement::CreateTable { .. } => {
                        self.create_table(keyspace, statement, false)?
                    }
                    Statement::DropTable { table, if_exists } => {
                        let ks = self.keyspace_of(keyspace, &table.keyspace)?;
                        self.writable(&ks)?;
                        let gone = self
                            .keyspaces
                            .get_mut(&ks)
                            .and_then(|k| k.tables.remove(&table.name));
                        match (gone, if_exists) {
                            (Some(_), _) => Outcome::SchemaChange {
                                change: "DROPPED",
                                target: "TABLE",
                                keyspace: ks,
                                name: Some(table.name.clone()),
                            },
                            (None, true) => Outcome::Void,
                            (None, false) => {
                                return Err(invalid(format!("unconfigured table {}", table.name)))
                            }
                        }
                    }
                    Statement::DropKeyspace { name, if_exists } => {
                        self.writable(name)?;
                        match (self.keyspaces.remove(name), if_exists) {
                            (Some(_), _) => Outcome::SchemaChange {
                                change: "DROPPED",
                                target: "KEYSPACE",
                                keyspace: name.clone(),
                                name: None,
                            },
                            (None, true) => Outcome::Void,
                            (None, false) => {
                                return Err(invalid(format!(
                                    "Cannot drop non existing keyspace '{name}'."
                                )))
                            }
                        }
                    }
                    _ => unreachable!("matched above"),
                };
                if matches!(out, Outcome::SchemaChange { .. }) {
                    self.schema_changed();
                }
                Ok(out)
            }
            Statement::Truncate { table } => {
                let t = self.table_mut(keyspace, table)?;
                if t.keyspace.starts_with("system") {
                    return Err(CqlError::new(
                        UNAUTHORIZED,
                        format!("{} keyspace is not user-modifiable.", t.keyspace),
                    ));
                }
                t.partitions.clear();
                Ok(Outcome::Void)
            }
            Statement::Select { .. } => self.select(keyspace, statement, &values, exec),
            Statement::Insert { .. } | Statement::Update { .. } | Statement::Delete { .. } => {
                self.modify(keyspace, statement, &values, exec)
            }
        }
    }

    fn keyspace_of(&self, session: &Option<String>, named: &Option<String>) -> R<String> {
        let ks = named.clone().or_else(|| session.clone()).ok_or_else(|| {
            invalid(
                "No keyspace has been specified. USE a keyspace, or explicitly specify \
                 keyspace.tablename",
            )
        })?;
        if !self.keyspaces.contains_key(&ks) {
            return Err(invalid(format!("Keyspace {ks} does not exist")));
        }
        Ok(ks)
    }

    fn writable(&self, ks: &str) -> R<()> {
        if self.keyspaces.get(ks).is_some_and(|k| k.system) || ks == "system" {
            return Err(CqlError::new(
                UNAUTHORIZED,
                format!("{ks} keyspace is not user-modifiable."),
            ));
        }
        Ok(())
    }

    fn table(&self, session: &Option<String>, t: &parse::TableName) -> R<&Table> {
        let ks = self.keyspace_of(session, &t.keyspace)?;
        self.keyspaces[&ks]
            .tables
            .get(&t.name)
            .ok_or_else(|| invalid(format!("unconfigured table {}", t.name)))
    }

    fn table_mut(&mut self, session: &Option<String>, t: &parse::TableName) -> R<&mut Table> {
        let ks = self.keyspace_of(session, &t.keyspace)?;
        self.keyspaces
            .get_mut(&ks)
            .and_then(|k| k.tables.get_mut(&t.name))
            .ok_or_else(|| invalid(format!("unconfigured table {}", t.name)))
    }

    fn create_keyspace(
        &mut self,
        name: &str,
        if_not_exists: bool,
        replication: &[(String, String)],
    ) -> R<Outcome> {
        valid_name(name, "Keyspace")?;
        if name.starts_with("system") {
            return Err(CqlError::new(
                UNAUTHORIZED,
                format!("{name} keyspace is not user-modifiable."),
            ));
        }
        if self.keyspaces.contains_key(name) {
            if if_not_exists {
                return Ok(Outcome::Void);
            }
            return Err(CqlError {
                code: ALREADY_EXISTS,
                message: format!("Cannot add existing keyspace \"{name}\""),
                extra: Extra::AlreadyExists {
                    keyspace: name.into(),
                    table: String::new(),
                },
            });
        }
        let class = replication
            .iter()
            .find(|(k, _)| k == "class")
            .map(|(_, v)| v.as_str())
            .ok_or_else(|| CqlError::new(0x2300, "Missing replication strategy class"))?;
        let short = class.rsplit('.').next().unwrap_or(class);
        let rf_of = |v: &str| {
            v.parse::<i32>().ok().filter(|n| *n >= 0).ok_or_else(|| {
                CqlError::new(
                    0x2300,
                    format!("Replication factor must be non-negative integer; found {v}"),
                )
            })
        };
        let mut kept = vec![(
            "class".to_string(),
            format!("org.apache.cassandra.locator.{short}"),
        )];
        match short {
            "SimpleStrategy" => {
                let rf = replication
                    .iter()
                    .find(|(k, _)| k == "replication_factor")
                    .ok_or_else(|| {
                        CqlError::new(
                            0x2300,
                            "SimpleStrategy requires a replication_factor strategy option.",
                        )
                    })?;
                kept.push(("replication_factor".into(), rf_of(&rf.1)?.to_string()));
            }
            "NetworkTopologyStrategy" => {
                for (k, v) in replication.iter().filter(|(k, _)| k != "class") {
                    // Scylla expands replication_factor into every datacenter it knows.
                    let dc = if k == "replication_factor" {
                        DATACENTER
                    } else {
                        k
                    };
                    kept.push((dc.to_string(), rf_of(v)?.to_string()));
                }
            }
            _ => {
                return Err(CqlError::new(
                    0x2300,
                    format!("Unable to find replication strategy class '{class}'"),
                ))
            }
        }
        self.keyspaces.insert(
            name.into(),
            Keyspace {
                replication: kept,
                tables: BTreeMap::new(),
                system: false,
            },
        );
        Ok(Outcome::SchemaChange {
            change: "CREATED",
            target: "KEYSPACE",
            keyspace: name.into(),
            name: None,
        })
    }

    fn create_table(
        &mut self,
        session: &Option<String>,
        statement: &Statement,
        internal: bool,
    ) -> R<Outcome> {
        let Statement::CreateTable {
            table,
            if_not_exists,
            columns,
            partition_key,
            clustering,
            order,
        } = statement
        else {
            return Err(invalid("not a CREATE TABLE"));
        };
        let ks = self.keyspace_of(session, &table.keyspace)?;
        if !internal {
            self.writable(&ks)?;
        }
        valid_name(&table.name, "Table")?;
        if self.keyspaces[&ks].tables.contains_key(&table.name) {
            if *if_not_exists {
                return Ok(Outcome::Void);
            }
            return Err(CqlError {
                code: ALREADY_EXISTS,
                message: format!(
                    "Cannot add already existing table \"{}\" to keyspace \"{ks}\"",
                    table.name
                ),
                extra: Extra::AlreadyExists {
                    keyspace: ks,
                    table: table.name.clone(),
                },
            });
        }
        let mut seen = std::collections::HashSet::new();
        for c in columns {
            if !seen.insert(c.name.as_str()) {
                return Err(invalid(format!(
                    "Multiple definition of identifier {}",
                    c.name
                )));
            }
        }
        let def = |name: &String| {
            columns.iter().find(|c| &c.name == name).ok_or_else(|| {
                invalid(format!(
                    "Unknown definition {name} referenced in PRIMARY KEY"
                ))
            })
        };
        let mut keyed = std::collections::HashSet::new();
        let mut out = Vec::new();
        for (kind, names) in [
            (Kind::Partition, partition_key),
            (Kind::Clustering, clustering),
        ] {
            for (i, name) in names.iter().enumerate() {
                let c = def(name)?;
                if !keyed.insert(name.as_str()) {
                    return Err(invalid(format!("Multiple definition of identifier {name}")));
                }
                if c.ty.is_collection() && !c.frozen {
                    return Err(invalid(format!(
                        "Invalid non-frozen collection type for PRIMARY KEY component {name}"
                    )));
                }
                let desc = kind == Kind::Clustering && order.iter().any(|(o, d)| o == name && *d);
                out.push(Column {
                    name: name.clone(),
                    ty: c.ty.clone(),
                    frozen: c.frozen,
                    kind,
                    // A descending clustering column is kept as a negative position.
                    position: if desc { -(i as i32) - 1 } else { i as i32 },
                });
            }
        }
        if !order.is_empty() {
            let named: Vec<&String> = order.iter().map(|(c, _)| c).collect();
            if named.iter().any(|c| !clustering.contains(c)) {
                return Err(invalid(
                    "Only clustering key columns can be defined in CLUSTERING ORDER directive",
                ));
            }
            if named.iter().zip(clustering).any(|(a, b)| *a != b) {
                return Err(invalid(
                    "The order of columns in the CLUSTERING ORDER directive must be the one of \
                     the clustering key",
                ));
            }
        }
        let mut rest: Vec<_> = columns
            .iter()
            .filter(|c| !keyed.contains(c.name.as_str()))
            .collect();
        rest.sort_by(|a, b| a.name.cmp(&b.name));
        for c in rest {
            out.push(Column {
                name: c.name.clone(),
                ty: c.ty.clone(),
                frozen: c.frozen,
                kind: Kind::Regular,
                position: -1,
            });
        }
        let t = Table {
            keyspace: ks.clone(),
            name: table.name.clone(),
            id: random_id(),
            columns: out,
            n_pk: partition_key.len(),
            n_ck: clustering.len(),
            partitions: BTreeMap::new(),
        };
        self.keyspaces
            .get_mut(&ks)
            .expect("checked above")
            .tables
            .insert(table.name.clone(), t);
        Ok(Outcome::SchemaChange {
            change: "CREATED",
            target: "TABLE",
            keyspace: ks,
            name: Some(table.name.clone()),
        })
    }

    /// A new schema version: system_schema and system.local say what there is now.
    fn schema_changed(&mut self) {
        let version = random_id();
        let mut keyspaces = Vec::new();
        let mut tables = Vec::new();
        let mut columns = Vec::new();
        for (name, ks) in &self.keyspaces {
            keyspaces.push(vec![
                ("keyspace_name", text(name)),
                ("durable_writes", vec![1]),
                (
                    "replication",
                    types::collection(
                        ks.replication
                            .iter()
                            .map(|(k, v)| vec![k.as_bytes(), v.as_bytes()])
                            .collect::<Vec<_>>()
                            .into_iter(),
                    ),
                ),
            ]);
            for t in ks.tables.values() {
                tables.push(vec![
                    ("keyspace_name", text(name)),
                    ("table_name", text(&t.name)),
                    ("comment", text("")),
                    ("default_time_to_live", 0i32.to_be_bytes().to_vec()),
                    (
                        "flags",
                        types::collection([vec![b"compound".as_slice()]].into_iter()),
                    ),
                    ("gc_grace_seconds", 864_000i32.to_be_bytes().to_vec()),
                    ("id", t.id.to_vec()),
                ]);
                for c in &t.columns {
                    let (kind, order) = match c.kind {
                        Kind::Partition => ("partition_key", "none"),
                        Kind::Clustering if c.position < 0 => ("clustering", "desc"),
                        Kind::Clustering => ("clustering", "asc"),
                        Kind::Regular => ("regular", "none"),
                    };
                    let position = match c.kind {
                        Kind::Regular => -1,
                        _ if c.position < 0 => -c.position - 1,
                        _ => c.position,
                    };
                    let ty = if c.frozen && c.ty.is_collection() {
                        format!("frozen<{}>", c.ty.cql_name())
                    } else {
                        c.ty.cql_name()
                    };
                    columns.push(vec![
                        ("keyspace_name", text(name)),
                        ("table_name", text(&t.name)),
                        ("column_name", text(&c.name)),
                        ("clustering_order", text(order)),
                        ("column_name_bytes", text(&c.name)),
                        ("kind", text(kind)),
                        ("position", position.to_be_bytes().to_vec()),
                        ("type", text(&ty)),
                    ]);
                }
            }
        }
        let local = vec![
            ("key", text("local")),
            ("bootstrapped", text("COMPLETED")),
            ("broadcast_address", inet(self.rpc_address)),
            ("cluster_name", text("telepipe sandbox")),
            ("cql_version", text("3.3.1")),
            ("data_center", text(DATACENTER)),
            ("host_id", self.host_id.to_vec()),
            ("listen_address", inet(self.rpc_address)),
            ("native_protocol_version", text("4")),
            (
                "partitioner",
                text("org.apache.cassandra.dht.Murmur3Partitioner"),
            ),
            ("rack", text("rack1")),
            ("release_version", text("3.0.8")),
            ("rpc_address", inet(self.rpc_address)),
            ("schema_version", version.to_vec()),
            // One node owns the whole ring.
            (
                "tokens",
                types::collection([vec![b"0".as_slice()]].into_iter()),
            ),
        ];
        self.replace_rows("system_schema", "keyspaces", keyspaces);
        self.replace_rows("system_schema", "tables", tables);
        self.replace_rows("system_schema", "columns", columns);
        self.replace_rows("system", "local", vec![local]);
    }

    fn replace_rows(&mut self, ks: &str, table: &str, rows: Vec<Vec<(&str, Vec<u8>)>>) {
        let Some(t) = self
            .keyspaces
            .get_mut(ks)
            .and_then(|k| k.tables.get_mut(table))
        else {
            return;
        };
        t.partitions.clear();
        for row in rows {
            let mut cells: Vec<Option<Vec<u8>>> = vec![None; t.columns.len()];
            for (name, v) in row {
                if let Some(i) = t.column(name) {
                    cells[i] = Some(v);
                }
            }
            let keys: Vec<Vec<u8>> = cells[..t.n_pk + t.n_ck]
                .iter()
                .map(|c| c.clone().unwrap_or_default())
                .collect();
            let (pk, ck) = keys.split_at(t.n_pk);
            let (pkey, ckey) = (t.pkey(pk), t.ckey(ck));
            let row = Row {
                marker: Some(None),
                cells: cells
                    .into_iter()
                    .map(|v| {
                        v.map(|value| Cell {
                            value,
                            expires: None,
                        })
                    })
                    .collect(),
            };
            t.partitions.entry(pkey).or_default().rows.insert(ckey, row);
        }
    }

    /// The name and type of each bind marker, by where it stands.
    fn bind_specs(
        &self,
        session: &Option<String>,
        statement: &Statement,
        markers: usize,
    ) -> R<Vec<Spec>> {
        let mut specs: Vec<Option<Spec>> = vec![None; markers];
        let (table_name, using, limit) = match statement {
            Statement::Insert { table, using, .. }
            | Statement::Update { table, using, .. }
            | Statement::Delete { table, using, .. } => (table, Some(using), None),
            Statement::Select { table, limit, .. } => (table, None, limit.as_ref()),
            _ if markers == 0 => return Ok(Vec::new()),
            _ => return Err(invalid("Bind variables are not allowed in this statement")),
        };
        let t = self.table(session, table_name)?;
        let named =
            |name: &str, ty: Type| (t.keyspace.clone(), t.name.clone(), name.to_string(), ty);
        let mut put = |term: &Term, spec: Spec| {
            if let Term::Marker(i) = term {
                specs[*i] = Some(spec);
            }
        };
        if let Some(u) = using {
            if let Some(term) = &u.ttl {
                put(term, named("[ttl]", Type::Int));
            }
            if let Some(term) = &u.timestamp {
                put(term, named("[timestamp]", Type::BigInt));
            }
        }
        if let Some(term) = limit {
            put(term, named("[limit]", Type::Int));
        }
        let column = |name: &str, clause: &str| {
            t.column(name).ok_or_else(|| match clause {
                "where" => invalid(format!("Undefined name {name} in where clause ('{name}')")),
                "selection" => invalid(format!("Undefined name {name} in selection clause")),
                _ => invalid(format!("Undefined column name {name}")),
            })
        };
        let wheres: &[Relation] = match statement {
            Statement::Update { wheres, .. }
            | Statement::Delete { wheres, .. }
            | Statement::Select { wheres, .. } => wheres,
            _ => &[],
        };
        for r in wheres {
            match r {
                Relation::Single { col, term, .. } => put(term, t.spec(column(col, "where")?)),
                Relation::In { col, values } => {
                    let c = column(col, "where")?;
                    match values {
                        InValues::List(terms) => terms.iter().for_each(|x| put(x, t.spec(c))),
                        InValues::Marker(i) => put(
                            &Term::Marker(*i),
                            named(
                                &format!("in({col})"),
                                Type::List(Box::new(t.columns[c].ty.clone())),
                            ),
                        ),
                    }
                }
                Relation::Multi { cols, terms, .. } => {
                    if cols.len() != terms.len() {
                        return Err(invalid(format!(
                            "Expected {} elements in value tuple, but got {}",
                            cols.len(),
                            terms.len()
                        )));
                    }
                    for (col, term) in cols.iter().zip(terms) {
                        put(term, t.spec(column(col, "where")?));
                    }
                }
            }
        }
        match statement {
            Statement::Insert {
                columns, values, ..
            } => {
                if columns.len() != values.len() {
                    return Err(invalid("Unmatched column names/values"));
                }
                for (col, term) in columns.iter().zip(values) {
                    put(term, t.spec(column(col, "")?));
                }
            }
            Statement::Update { set, .. } => {
                for (col, term) in set {
                    put(term, t.spec(column(col, "")?));
                }
            }
            Statement::Select {
                selection: Selection::Columns(cols),
                ..
            } => {
                for c in cols {
                    column(c, "selection")?;
                }
            }
            _ => {}
        }
        if let Statement::Update { conditions, .. } | Statement::Delete { conditions, .. } =
            statement
        {
            if let Conditions::Columns(conds) = conditions {
                for (col, _, term) in conds {
                    put(term, t.spec(column(col, "")?));
                }
            }
        }
        specs
            .into_iter()
            .map(|s| s.ok_or_else(|| invalid("unsupported by the stand-in: a bind marker here")))
            .collect()
    }

    fn pk_indexes(&self, session: &Option<String>, statement: &Statement) -> Vec<u16> {
        let (table, found): (&parse::TableName, Vec<(String, usize)>) = match statement {
            Statement::Insert {
                table,
                columns,
                values,
                ..
            } => (
                table,
                columns
                    .iter()
                    .zip(values)
                    .filter_map(|(c, v)| match v {
                        Term::Marker(i) => Some((c.clone(), *i)),
                        _ => None,
                    })
                    .collect(),
            ),
            Statement::Update { table, wheres, .. }
            | Statement::Delete { table, wheres, .. }
            | Statement::Select { table, wheres, .. } => (
                table,
                wheres
                    .iter()
                    .filter_map(|r| match r {
                        Relation::Single {
                            col,
                            op: Op::Eq,
                            term: Term::Marker(i),
                        } => Some((col.clone(), *i)),
                        _ => None,
                    })
                    .collect(),
            ),
            _ => return Vec::new(),
        };
        let Ok(t) = self.table(session, table) else {
            return Vec::new();
        };
        let mut out = Vec::new();
        for c in &t.columns[..t.n_pk] {
            match found.iter().find(|(name, _)| *name == c.name) {
                Some((_, i)) => out.push(*i as u16),
                None => return Vec::new(),
            }
        }
        out
    }

    fn result_metadata(
        &self,
        session: &Option<String>,
        statement: &Statement,
    ) -> R<Option<Vec<Spec>>> {
        Ok(match statement {
            Statement::Select {
                table, selection, ..
            } => {
                let t = self.table(session, table)?;
                Some(selection_specs(t, selection)?.1)
            }
            Statement::Insert {
                table,
                if_not_exists: true,
                ..
            } => Some(lwt_specs(
                self.table(session, table)?,
                &Conditions::NotExists,
            )),
            Statement::Update {
                table, conditions, ..
            }
            | Statement::Delete {
                table, conditions, ..
            } if *conditions != Conditions::None => {
                Some(lwt_specs(self.table(session, table)?, conditions))
            }
            _ => None,
        })
    }

    fn check_consistency(&self, ks: &str, cl: u16) -> R<()> {
        let rf = self
            .keyspaces
            .get(ks)
            .map_or(1, Keyspace::replication_factor);
        let required = match cl {
            0 | 1 | 10 => 1,
            2 => 2,
            3 => 3,
            5 => rf,
            _ => rf / 2 + 1,
        }
        .max(1);
        let alive = i32::from(rf > 0);
        if required > alive {
            return Err(CqlError {
                code: UNAVAILABLE,
                message: format!("Cannot achieve consistency level {}", consistency_name(cl)),
                extra: Extra::Unavailable {
                    consistency: cl,
                    required,
                    alive,
                },
            });
        }
        Ok(())
    }

    fn select(
        &mut self,
        session: &Option<String>,
        statement: &Statement,
        values: &[Bound],
        exec: &Exec,
    ) -> R<Outcome> {
        let Statement::Select {
            table,
            distinct,
            selection,
            wheres,
            order_by,
            limit,
            allow_filtering,
        } = statement
        else {
            return Err(invalid("not a SELECT"));
        };
        let now = self.now();
        let t = self.table(session, table)?;
        self.check_consistency(&t.keyspace, exec.consistency)?;
        let (picked, specs) = selection_specs(t, selection)?;
        if *distinct {
            if let Some(c) = picked.iter().find(|c| **c >= t.n_pk) {
                return Err(invalid(format!(
                    "SELECT DISTINCT queries must only request partition key columns and/or \
                     static columns (not {})",
                    t.columns[*c].name
                )));
            }
            if let Some(c) = (0..t.n_pk).find(|c| !picked.contains(c)) {
                return Err(invalid(format!(
                    "SELECT DISTINCT queries must request all the partition key columns \
                     (missing {})",
                    t.columns[c].name
                )));
            }
        }
        let restrictions = resolve(t, wheres, values)?;
        let plan = plan(t, &restrictions, *allow_filtering)?;
        let reversed = order(t, order_by, plan.partitions.is_some())?;
        let limit = match limit {
            None => usize::MAX,
            Some(term) => {
                let v = term_value(term, &Type::Int, "[limit]", values)?;
                let n = v
                    .as_deref()
                    .and_then(|b| b.try_into().ok())
                    .map(i32::from_be_bytes)
                    .ok_or_else(|| invalid("Invalid null value of limit"))?;
                if n <= 0 {
                    return Err(invalid("LIMIT must be strictly positive"));
                }
                n as usize
            }
        };
        let mut parts: Vec<&Partition> = match &plan.partitions {
            Some(keys) => keys.iter().filter_map(|k| t.partitions.get(k)).collect(),
            None => t.partitions.values().collect(),
        };
        if reversed {
            parts.reverse();
        }
        let mut rows: Vec<Vec<Option<Vec<u8>>>> = Vec::new();
        let mut count: i64 = 0;
        'parts: for p in parts {
            let iter: Box<dyn Iterator<Item = &Row>> = if reversed {
                Box::new(p.rows.values().rev())
            } else {
                Box::new(p.rows.values())
            };
            for row in iter {
                if !row.live(t, now) || !restrictions.iter().all(|r| r.holds(t, row, now)) {
                    continue;
                }
                if *selection == Selection::CountStar {
                    count += 1;
                    continue;
                }
                rows.push(
                    picked
                        .iter()
                        .map(|c| row.get(*c, now).map(<[u8]>::to_vec))
                        .collect(),
                );
                if *distinct || rows.len() >= limit {
                    if rows.len() >= limit {
                        break 'parts;
                    }
                    continue 'parts;
                }
            }
        }
        if *selection == Selection::CountStar {
            rows = vec![vec![Some(count.to_be_bytes().to_vec())]];
        }
        // Pages by position in the result: a page is what follows the previous one's end.
        let mut paging_state = None;
        if let Some(size) = exec.page_size.filter(|s| *s > 0) {
            let from = match &exec.paging_state {
                None => 0,
                Some(s) => s
                    .as_slice()
                    .try_into()
                    .map(u64::from_be_bytes)
                    .map_err(|_| CqlError::new(PROTOCOL, "Invalid value for the paging state"))?
                    as usize,
            };
            let end = from.saturating_add(size as usize);
            if end < rows.len() {
                paging_state = Some((end as u64).to_be_bytes().to_vec());
            }
            rows = rows.into_iter().skip(from).take(size as usize).collect();
        }
        Ok(Outcome::Rows(Rows {
            columns: specs,
            rows,
            paging_state,
        }))
    }

    fn modify(
        &mut self,
        session: &Option<String>,
        statement: &Statement,
        values: &[Bound],
        exec: &Exec,
    ) -> R<Outcome> {
        let now = self.now();
        let (table, using, conditions_ast) = match statement {
            Statement::Insert {
                table,
                using,
                if_not_exists,
                ..
            } => (
                table,
                using,
                if *if_not_exists {
                    Conditions::NotExists
                } else {
                    Conditions::None
                },
            ),
            Statement::Update {
                table,
                using,
                conditions,
                ..
            }
            | Statement::Delete {
                table,
                using,
                conditions,
                ..
            } => (table, using, conditions.clone()),
            _ => return Err(invalid("not a modification")),
        };
        let ks = self.keyspace_of(session, &table.keyspace)?;
        self.writable(&ks)?;
        let t = self.table(session, table)?;
        let conditional = conditions_ast != Conditions::None;
        if conditional && using.timestamp.is_some() {
            return Err(invalid(
                "Cannot provide custom timestamp for conditional updates",
            ));
        }
        self.check_consistency(&ks, exec.consistency)?;
        if conditional {
            self.check_consistency(&ks, exec.serial.unwrap_or(9))?;
        }
        let ttl = match &using.ttl {
            None => 0,
            Some(term) => match term_value(term, &Type::Int, "[ttl]", values)? {
                None => 0,
                Some(v) => {
                    let n = v
                        .as_slice()
                        .try_into()
                        .map(i32::from_be_bytes)
                        .map_err(|_| invalid("Invalid TTL value"))?;
                    if n < 0 {
                        return Err(invalid(format!(
                            "A TTL must be greater or equal to 0, but was {n}"
                        )));
                    }
                    if n > MAX_TTL {
                        return Err(invalid(format!(
                            "ttl is too large. requested ({n}) maximum ({MAX_TTL})"
                        )));
                    }
                    n
                }
            },
        };
        let expires = (ttl > 0).then(|| now + i64::from(ttl) * 1000);
        if let Statement::Delete {
            columns, wheres, ..
        } = statement
        {
            if columns.is_empty() && !conditional {
                return self.delete_range(session, table, wheres, values, now);
            }
        }
        // The key, and what to write.
        let mut key: Vec<Option<Vec<u8>>> = vec![None; t.n_pk + t.n_ck];
        let mut sets: Vec<(usize, Bound)> = Vec::new();
        let mut marker = false;
        let mut delete_cols: Vec<usize> = Vec::new();
        match statement {
            Statement::Insert {
                columns,
                values: terms,
                ..
            } => {
                marker = true;
                let mut seen = Vec::new();
                for (name, term) in columns.iter().zip(terms) {
                    let c = t
                        .column(name)
                        .ok_or_else(|| invalid(format!("Undefined column name {name}")))?;
                    if seen.contains(&c) {
                        return Err(invalid(format!(
                            "Multiple definitions found for column {name}"
                        )));
                    }
                    seen.push(c);
                    let col = &t.columns[c];
                    if col.ty == Type::Counter {
                        return Err(invalid(format!(
                            "Cannot set the value of counter column {name} (counters can only be \
                             incremented/decremented, not set)"
                        )));
                    }
                    let v = term_bound(term, &col.ty, name, values)?;
                    if c < t.n_pk + t.n_ck {
                        key[c] = Some(key_value(col, v)?);
                    } else {
                        sets.push((c, v));
                    }
                }
                let missing = |range: std::ops::Range<usize>| {
                    range
                        .filter(|i| key[*i].is_none())
                        .map(|i| t.columns[i].name.clone())
                        .collect::<Vec<_>>()
                        .join(", ")
                };
                let pk = missing(0..t.n_pk);
                if !pk.is_empty() {
                    return Err(invalid(format!(
                        "Some partition key parts are missing: {pk}"
                    )));
                }
                let ck = missing(t.n_pk..t.n_pk + t.n_ck);
                if !ck.is_empty() {
                    return Err(invalid(format!("Some clustering keys are missing: {ck}")));
                }
            }
            Statement::Update { set, wheres, .. } => {
                key_from_where(t, wheres, values, &mut key, true)?;
                for (name, term) in set {
                    let c = t
                        .column(name)
                        .ok_or_else(|| invalid(format!("Undefined column name {name}")))?;
                    if c < t.n_pk + t.n_ck {
                        return Err(invalid(format!(
                            "PRIMARY KEY part {name} found in SET part"
                        )));
                    }
                    sets.push((c, term_bound(term, &t.columns[c].ty, name, values)?));
                }
            }
            Statement::Delete {
                columns, wheres, ..
            } => {
                let whole = !columns.is_empty() || conditional;
                key_from_where(t, wheres, values, &mut key, whole)?;
                for name in columns {
                    let c = t
                        .column(name)
                        .ok_or_else(|| invalid(format!("Undefined column name {name}")))?;
                    if c < t.n_pk + t.n_ck {
                        return Err(invalid(format!(
                            "Invalid identifier {name} for deletion (should not be a PRIMARY KEY \
                             part)"
                        )));
                    }
                    delete_cols.push(c);
                }
            }
            _ => {}
        }
        let conditions = match &conditions_ast {
            Conditions::None => None,
            Conditions::Exists => Some(Condition::Exists),
            Conditions::NotExists => Some(Condition::NotExists),
            Conditions::Columns(cs) => {
                let mut out = Vec::new();
                for (name, op, term) in cs {
                    let c = t
                        .column(name)
                        .ok_or_else(|| invalid(format!("Undefined column name {name}")))?;
                    if c < t.n_pk + t.n_ck {
                        return Err(invalid(format!(
                            "PRIMARY KEY column '{name}' cannot have IF conditions"
                        )));
                    }
                    let v = term_value(term, &t.columns[c].ty, name, values)?;
                    if v.is_none() && !matches!(op, Op::Eq | Op::Ne) {
                        return Err(invalid(format!(
                            "Invalid comparison with null for operator \"{}\"",
                            op.text()
                        )));
                    }
                    out.push((c, *op, v));
                }
                Some(Condition::Columns(out))
            }
        };
        let pk: Vec<Vec<u8>> = key[..t.n_pk]
            .iter()
            .map(|k| k.clone().unwrap_or_default())
            .collect();
        let ck_given: Vec<Vec<u8>> = key[t.n_pk..].iter().map_while(Clone::clone).collect();
        let pkey = t.pkey(&pk);
        let specs = lwt_specs(t, &conditions_ast);
        let t = self.table_mut(session, table)?;
        // Conditions see the row as it is (a missing row reads as all null).
        let mut lwt_row: Option<Vec<Option<Vec<u8>>>> = None;
        if let Some(cond) = &conditions {
            let ckey = t.ckey(&ck_given);
            let current = t
                .partitions
                .get(&pkey)
                .and_then(|p| p.rows.get(&ckey))
                .filter(|r| r.live(t, now));
            let cell = |c: usize| current.and_then(|r| r.get(c, now)).map(<[u8]>::to_vec);
            let applied = match cond {
                Condition::Exists => current.is_some(),
                Condition::NotExists => current.is_none(),
                Condition::Columns(cs) => cs.iter().all(|(c, op, v)| {
                    let cur = cell(*c);
                    match (cur, v) {
                        (cur, None) => (*op == Op::Eq) == cur.is_none(),
                        (None, Some(_)) => *op == Op::Ne,
                        (Some(a), Some(b)) => {
                            let ty = &t.columns[*c].ty;
                            op.holds(ty.order_key(&a).cmp(&ty.order_key(b)))
                        }
                    }
                }),
            };
            let mut row = vec![Some(vec![u8::from(applied)])];
            for (_, _, name, _) in &specs[1..] {
                let c = t.column(name).expect("a column of the table");
                row.push(if c < t.n_pk + t.n_ck {
                    key[c].clone()
                } else {
                    cell(c)
                });
            }
            if !applied {
                return Ok(Outcome::Rows(Rows {
                    columns: specs,
                    rows: vec![row],
                    paging_state: None,
                }));
            }
            lwt_row = Some(row);
        }
        let n_columns = t.columns.len();
        match statement {
            Statement::Delete { .. } if delete_cols.is_empty() => {
                let prefix = t.ckey(&ck_given);
                if let Some(p) = t.partitions.get_mut(&pkey) {
                    // The whole key names a row; a prefix (or none) a range of them.
                    p.rows.retain(|k, _| k.0[..prefix.0.len()] != prefix.0[..]);
                    if p.rows.is_empty() {
                        t.partitions.remove(&pkey);
                    }
                }
            }
            _ => {
                let ckey = t.ckey(&ck_given);
                let columns = &t.columns;
                let row = t
                    .partitions
                    .entry(pkey.clone())
                    .or_default()
                    .rows
                    .entry(ckey.clone())
                    .or_insert_with(|| Row {
                        marker: None,
                        cells: (0..n_columns).map(|_| None).collect(),
                    });
                for (i, k) in key.iter().enumerate() {
                    if let Some(v) = k {
                        row.cells[i] = Some(Cell {
                            value: v.clone(),
                            expires: None,
                        });
                    }
                }
                if marker {
                    row.marker = Some(expires);
                }
                for (c, v) in sets {
                    match v {
                        Bound::Value(value) => row.cells[c] = Some(Cell { value, expires }),
                        Bound::Null => row.cells[c] = None,
                        Bound::Unset => {}
                    }
                }
                for c in &delete_cols {
                    row.cells[*c] = None;
                }
                if !row.live_in(columns, now) {
                    let p = t.partitions.get_mut(&pkey).expect("just written");
                    p.rows.remove(&ckey);
                    if p.rows.is_empty() {
                        t.partitions.remove(&pkey);
                    }
                }
            }
        }
        Ok(match lwt_row {
            Some(row) => Outcome::Rows(Rows {
                columns: specs,
                rows: vec![row],
                paging_state: None,
            }),
            None => Outcome::Void,
        })
    }
}

impl Engine {
    /// A DELETE of rows: a partition, a row, or a range of rows (`=` on a clustering prefix,
    /// then at most a slice of the next column), as Scylla's range deletions allow.
    fn delete_range(
        &mut self,
        session: &Option<String>,
        table: &parse::TableName,
        wheres: &[Relation],
        values: &[Bound],
        now: i64,
    ) -> R<Outcome> {
        let t = self.table(session, table)?;
        let rs = resolve(t, wheres, values)?;
        let mut key: Vec<Option<Vec<u8>>> = vec![None; t.n_pk];
        let mut slice_on: Option<usize> = None;
        for r in &rs {
            match r {
                Restr::Eq(c, v) if *c < t.n_pk => key[*c] = Some(v.clone()),
                Restr::Eq(c, _) | Restr::Cmp(c, ..) | Restr::In(c, _) if *c >= t.n_pk + t.n_ck => {
                    return Err(invalid(format!(
                        "Invalid where clause contains non PRIMARY KEY columns: {}",
                        t.columns[*c].name
                    )))
                }
                Restr::Eq(c, _) => {
                    if slice_on.is_some_and(|s| s < *c) {
                        return Err(invalid(format!(
                            "Clustering column \"{}\" cannot be restricted (preceding column \
                             is restricted by a non-EQ relation)",
                            t.columns[*c].name
                        )));
                    }
                }
                Restr::Cmp(c, ..) if *c >= t.n_pk => {
                    if slice_on.is_some_and(|s| s != *c) {
                        return Err(invalid(format!(
                            "unsupported by the stand-in: range deletions on two columns ({})",
                            t.columns[*c].name
                        )));
                    }
                    slice_on = Some(*c);
                }
                _ => {
                    return Err(invalid(format!(
                        "unsupported by the stand-in: this restriction in a DELETE ({:?})",
                        r.columns()
                            .iter()
                            .map(|c| t.columns[*c].name.as_str())
                            .collect::<Vec<_>>()
                    )))
                }
            }
        }
        if let Some(i) = (0..t.n_pk).find(|i| key[*i].is_none()) {
            return Err(invalid(format!(
                "Missing mandatory PRIMARY KEY part {}",
                t.columns[i].name
            )));
        }
        // Clustering restrictions: `=` on a prefix, a slice only after it.
        let restricted: Vec<usize> = rs
            .iter()
            .flat_map(Restr::columns)
            .filter(|c| *c >= t.n_pk)
            .collect();
        for c in &restricted {
            if let Some(gap) = (t.n_pk..*c).find(|g| !restricted.contains(g)) {
                return Err(invalid(format!(
                    "PRIMARY KEY column \"{}\" cannot be restricted as preceding column \"{}\" \
                     is not restricted",
                    t.columns[*c].name, t.columns[gap].name
                )));
            }
        }
        let pk: Vec<Vec<u8>> = key.into_iter().flatten().collect();
        let pkey = t.pkey(&pk);
        let t = self.table_mut(session, table)?;
        let Some(mut p) = t.partitions.remove(&pkey) else {
            return Ok(Outcome::Void);
        };
        p.rows
            .retain(|_, row| !rs.iter().all(|r| r.holds(t, row, now)));
        if !p.rows.is_empty() {
            t.partitions.insert(pkey, p);
        }
        Ok(Outcome::Void)
    }
}

fn parse_cql(cql: &str) -> R<(Statement, usize)> {
    parse::parse(cql).map_err(|e| match e {
        parse::ParseError::Syntax(m) => CqlError::new(SYNTAX, m),
        parse::ParseError::Unsupported(m) => invalid(format!("unsupported by the stand-in: {m}")),
    })
}

fn valid_name(name: &str, what: &str) -> R<()> {
    if name.is_empty()
        || name.len() > 48
        || !name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_')
    {
        return Err(invalid(format!(
            "{what} name must not be empty, more than 48 characters long, or contain \
             non-alphanumeric-underscore characters (got \"{name}\")"
        )));
    }
    Ok(())
}

/// The values as bound: positional, or by name (flag 0x40), each checked against its spec.
fn check_values(binds: &[Spec], exec: &Exec) -> R<Vec<Bound>> {
    let values = match &exec.names {
        None => exec.values.clone(),
        Some(names) => {
            let mut out = vec![Bound::Unset; binds.len()];
            for (name, v) in names.iter().zip(&exec.values) {
                let i = binds
                    .iter()
                    .position(|s| s.2 == *name)
                    .ok_or_else(|| invalid(format!("Invalid value name {name}")))?;
                out[i] = v.clone();
            }
            out
        }
    };
    if values.len() != binds.len() {
        return Err(invalid(format!(
            "Invalid amount of bind variables: expected {} but got {}",
            binds.len(),
            values.len()
        )));
    }
    for (spec, v) in binds.iter().zip(&values) {
        if let Bound::Value(bytes) = v {
            spec.3
                .validate(bytes)
                .map_err(|m| invalid(format!("Exception while binding column {}: {m}", spec.2)))?;
        }
    }
    Ok(values)
}

fn term_bound(term: &Term, ty: &Type, col: &str, values: &[Bound]) -> R<Bound> {
    Ok(match term {
        Term::Null => Bound::Null,
        Term::Marker(i) => values.get(*i).cloned().unwrap_or(Bound::Unset),
        Term::Lit(l) => Bound::Value(ty.encode(l, col).map_err(invalid)?),
    })
}

/// A term's value (`None` for null); unset is refused.
fn term_value(term: &Term, ty: &Type, col: &str, values: &[Bound]) -> R<Option<Vec<u8>>> {
    match term_bound(term, ty, col, values)? {
        Bound::Value(v) => Ok(Some(v)),
        Bound::Null => Ok(None),
        Bound::Unset => Err(invalid(format!("Invalid unset value for column {col}"))),
    }
}

fn key_value(col: &Column, v: Bound) -> R<Vec<u8>> {
    match v {
        Bound::Value(v) if v.is_empty() && col.kind == Kind::Partition => {
            Err(invalid("Key may not be empty"))
        }
        Bound::Value(v) => Ok(v),
        Bound::Null => Err(invalid(format!(
            "Invalid null value in condition for column {}",
            col.name
        ))),
        Bound::Unset => Err(invalid(format!(
            "Invalid unset value for column {}",
            col.name
        ))),
    }
}

/// An UPDATE's or DELETE's key: `=` on every partition key column and (when `whole`) every
/// clustering column; a DELETE of a range may name a prefix of the clustering key.
fn key_from_where(
    t: &Table,
    wheres: &[Relation],
    values: &[Bound],
    key: &mut [Option<Vec<u8>>],
    whole: bool,
) -> R<()> {
    for r in wheres {
        let Relation::Single { col, op, term } = r else {
            let name = r
                .columns()
                .first()
                .map(|c| c.to_string())
                .unwrap_or_default();
            return Err(invalid(format!(
                "unsupported by the stand-in: IN or multi-column relations on {name} in a \
                 modification"
            )));
        };
        let c = t
            .column(col)
            .ok_or_else(|| invalid(format!("Undefined name {col} in where clause ('{col}')")))?;
        if c >= t.n_pk + t.n_ck {
            return Err(invalid(format!(
                "Invalid where clause contains non PRIMARY KEY columns: {col}"
            )));
        }
        if *op != Op::Eq {
            return Err(invalid(format!(
                "Invalid operator {} for PRIMARY KEY part {col}",
                op.text()
            )));
        }
        if key[c].is_some() {
            return Err(invalid(format!(
                "{col} cannot be restricted by more than one relation if it includes an Equal"
            )));
        }
        let col_def = &t.columns[c];
        key[c] = Some(key_value(
            col_def,
            term_bound(term, &col_def.ty, col, values)?,
        )?);
    }
    let needed = if whole { t.n_pk + t.n_ck } else { t.n_pk };
    if let Some(i) = (0..needed).find(|i| key[*i].is_none()) {
        return Err(invalid(format!(
            "Missing mandatory PRIMARY KEY part {}",
            t.columns[i].name
        )));
    }
    // A range deletion names a prefix of the clustering key, without gaps.
    if let Some(gap) = (t.n_pk..t.n_pk + t.n_ck).find(|i| key[*i].is_none()) {
        if let Some(after) = (gap..t.n_pk + t.n_ck).find(|i| key[*i].is_some()) {
            return Err(invalid(format!(
                "PRIMARY KEY column \"{}\" cannot be restricted as preceding column \"{}\" is \
                 not restricted",
                t.columns[after].name, t.columns[gap].name
            )));
        }
    }
    Ok(())
}

fn selection_specs(t: &Table, selection: &Selection) -> R<(Vec<usize>, Vec<Spec>)> {
    let picked: Vec<usize> = match selection {
        Selection::Star => (0..t.columns.len()).collect(),
        Selection::CountStar => {
            return Ok((
                Vec::new(),
                vec![(
                    t.keyspace.clone(),
                    t.name.clone(),
                    "count".into(),
                    Type::BigInt,
                )],
            ))
        }
        Selection::Columns(cols) => cols
            .iter()
            .map(|c| {
                t.column(c)
                    .ok_or_else(|| invalid(format!("Undefined name {c} in selection clause")))
            })
            .collect::<R<_>>()?,
    };
    let specs = picked.iter().map(|c| t.spec(*c)).collect();
    Ok((picked, specs))
}

/// Scylla's fixed LWT result: `[applied]`, then every column (`IF [NOT] EXISTS`) or the
/// condition's columns.
fn lwt_specs(t: &Table, conditions: &Conditions) -> Vec<Spec> {
    let mut out = vec![(
        t.keyspace.clone(),
        t.name.clone(),
        "[applied]".to_string(),
        Type::Boolean,
    )];
    match conditions {
        Conditions::None => {}
        Conditions::Exists | Conditions::NotExists => {
            out.extend((0..t.columns.len()).map(|c| t.spec(c)));
        }
        Conditions::Columns(cs) => {
            let mut seen = Vec::new();
            for (name, ..) in cs {
                if let Some(c) = t.column(name) {
                    if !seen.contains(&c) {
                        seen.push(c);
                        out.push(t.spec(c));
                    }
                }
            }
        }
    }
    out
}

fn resolve(t: &Table, wheres: &[Relation], values: &[Bound]) -> R<Vec<Restr>> {
    let mut out = Vec::new();
    let not_null = |v: Option<Vec<u8>>, col: &str| {
        v.ok_or_else(|| invalid(format!("Invalid null value in condition for column {col}")))
    };
    for r in wheres {
        match r {
            Relation::Single { col, op, term } => {
                let c = t.column(col).ok_or_else(|| {
                    invalid(format!("Undefined name {col} in where clause ('{col}')"))
                })?;
                if *op == Op::Ne {
                    return Err(invalid(format!(
                        "Unsupported \"!=\" relation: {col} != ..."
                    )));
                }
                let v = not_null(term_value(term, &t.columns[c].ty, col, values)?, col)?;
                out.push(if *op == Op::Eq {
                    Restr::Eq(c, v)
                } else {
                    Restr::Cmp(c, *op, v)
                });
            }
            Relation::In { col, values: vs } => {
                let c = t.column(col).ok_or_else(|| {
                    invalid(format!("Undefined name {col} in where clause ('{col}')"))
                })?;
                let ty = &t.columns[c].ty;
                let list = match vs {
                    InValues::List(terms) => terms
                        .iter()
                        .map(|x| not_null(term_value(x, ty, col, values)?, col))
                        .collect::<R<Vec<_>>>()?,
                    InValues::Marker(i) => match values.get(*i) {
                        Some(Bound::Value(v)) => types::elements(v, 1)
                            .map_err(invalid)?
                            .into_iter()
                            .map(|e| e[0].to_vec())
                            .collect(),
                        _ => {
                            return Err(invalid(format!(
                                "Invalid null value for IN restriction on {col}"
                            )))
                        }
                    },
                };
                out.push(Restr::In(c, list));
            }
            Relation::Multi { cols, op, terms } => {
                let mut cs = Vec::new();
                let mut vs = Vec::new();
                for (col, term) in cols.iter().zip(terms) {
                    let c = t.column(col).ok_or_else(|| {
                        invalid(format!("Undefined name {col} in where clause ('{col}')"))
                    })?;
                    let is_ck = (t.n_pk..t.n_pk + t.n_ck).contains(&c);
                    if !is_ck {
                        return Err(invalid(format!(
                            "Multi-column relations can only be applied to clustering columns but \
                             was applied to: {col}"
                        )));
                    }
                    cs.push(c);
                    vs.push(not_null(
                        term_value(term, &t.columns[c].ty, col, values)?,
                        col,
                    )?);
                }
                if cs.windows(2).any(|w| w[1] != w[0] + 1) {
                    return Err(invalid(format!(
                        "Clustering columns must appear in the PRIMARY KEY order in multi-column \
                         relations: ({})",
                        cols.join(", ")
                    )));
                }
                out.push(if *op == Op::Eq && cs.len() == 1 {
                    Restr::Eq(cs[0], vs.remove(0))
                } else {
                    Restr::Multi(cs, *op, vs)
                });
            }
        }
    }
    Ok(out)
}

struct Plan {
    /// The partitions to read, when the partition key is given by `=`/`IN` (else a scan).
    partitions: Option<Vec<Vec<Vec<u8>>>>,
}

/// Scylla's rules for what a SELECT may restrict without ALLOW FILTERING.
fn plan(t: &Table, rs: &[Restr], allow_filtering: bool) -> R<Plan> {
    let on = |c: usize| rs.iter().filter(move |r| r.columns().contains(&c));
    let mut filtering = false;
    // Partition key: every column by = or IN, or none (a scan).
    let mut choices: Vec<Vec<Vec<u8>>> = Vec::new();
    let mut pk_complete = true;
    let mut pk_any = false;
    for c in 0..t.n_pk {
        let mut eq = None;
        for r in on(c) {
            pk_any = true;
            match r {
                Restr::Eq(_, v) => eq = Some(vec![v.clone()]),
                Restr::In(_, vs) => eq = Some(vs.clone()),
                _ if !allow_filtering => {
                    return Err(invalid(
                        "Only EQ and IN relation are supported on the partition key (unless you \
                         use the token() function or allow filtering)",
                    ))
                }
                _ => {}
            }
        }
        match eq {
            Some(vs) => choices.push(vs),
            None => pk_complete = false,
        }
    }
    if pk_any && !pk_complete {
        filtering = true;
    }
    // Clustering key: `=` on a prefix, then at most one slice.
    let first_ck = t.n_pk;
    let mut slice_at: Option<usize> = None;
    let mut gap_at: Option<usize> = None;
    let mut multi = false;
    let mut single = false;
    for c in first_ck..first_ck + t.n_ck {
        let here: Vec<&Restr> = on(c).collect();
        if here.is_empty() {
            if gap_at.is_none() && slice_at.is_none() {
                gap_at = Some(c);
            }
            continue;
        }
        for r in &here {
            match r {
                Restr::Multi(..) => multi = true,
                _ => single = true,
            }
        }
        if let Some(g) = gap_at {
            if !allow_filtering {
                return Err(invalid(format!(
                    "PRIMARY KEY column \"{}\" cannot be restricted as preceding column \"{}\" \
                     is not restricted",
                    t.columns[c].name, t.columns[g].name
                )));
            }
            filtering = true;
            continue;
        }
        if let Some(s) = slice_at {
            // A multi-column slice covers the columns it names.
            let covered = here
                .iter()
                .all(|r| matches!(r, Restr::Multi(cs, ..) if cs[0] == s));
            if !covered {
                if !allow_filtering {
                    return Err(invalid(format!(
                        "Clustering column \"{}\" cannot be restricted (preceding column \"{}\" \
                         is restricted by a non-EQ relation)",
                        t.columns[c].name, t.columns[s].name
                    )));
                }
                filtering = true;
            }
            continue;
        }
        if here
            .iter()
            .any(|r| matches!(r, Restr::Cmp(..) | Restr::Multi(..)))
        {
            slice_at = Some(c);
        }
    }
    if multi && single {
        return Err(invalid(
            "Mixing single column relations and multi column relations on clustering columns is \
             not allowed",
        ));
    }
    let ck_any = (first_ck..first_ck + t.n_ck).any(|c| on(c).next().is_some());
    if ck_any && !pk_complete {
        filtering = true;
    }
    if (first_ck + t.n_ck..t.columns.len()).any(|c| on(c).next().is_some()) {
        filtering = true;
    }
    if filtering && !allow_filtering {
        return Err(invalid(FILTERING));
    }
    if !pk_complete {
        return Ok(Plan { partitions: None });
    }
    let mut keys: Vec<Vec<Vec<u8>>> = vec![Vec::new()];
    for vs in &choices {
        keys = keys
            .into_iter()
            .flat_map(|k| {
                vs.iter().map(move |v| {
                    let mut k = k.clone();
                    k.push(v.clone());
                    k
                })
            })
            .collect();
    }
    let mut keys: Vec<Vec<Vec<u8>>> = keys.iter().map(|k| t.pkey(k)).collect();
    keys.sort();
    keys.dedup();
    Ok(Plan {
        partitions: Some(keys),
    })
}

/// Whether ORDER BY reverses the clustering order (Scylla's rules for what it may name).
fn order(t: &Table, order_by: &[(String, bool)], pk_restricted: bool) -> R<bool> {
    if order_by.is_empty() {
        return Ok(false);
    }
    if !pk_restricted {
        return Err(invalid(
            "ORDER BY is only supported when the partition key is restricted by an EQ or an IN.",
        ));
    }
    let mut reversed = None;
    for (i, (name, desc)) in order_by.iter().enumerate() {
        let c = t
            .column(name)
            .ok_or_else(|| invalid(format!("Undefined name {name} in order by clause")))?;
        if !(t.n_pk..t.n_pk + t.n_ck).contains(&c) {
            return Err(invalid(format!(
                "Order by is currently only supported on the clustered columns of the PRIMARY \
                 KEY, got {name}"
            )));
        }
        if c != t.n_pk + i {
            return Err(invalid(
                "Order by currently only support the ordering of columns following their \
                 declared order in the PRIMARY KEY",
            ));
        }
        let declared_desc = t.columns[c].position < 0;
        let r = *desc != declared_desc;
        if reversed.is_some_and(|x| x != r) {
            return Err(invalid("Unsupported order by relation"));
        }
        reversed = Some(r);
    }
    Ok(reversed.unwrap_or(false))
}

#[cfg(test)]
mod tests;
