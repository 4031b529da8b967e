//! CQL text to statements: the part of Scylla's grammar (`cql3/Cql.g`) the stand-in runs.
//! Anything else is a syntax error or, where the grammar is Scylla's but the stand-in does not
//! run it, an error that names what is unsupported.

use crate::types::Type;
use std::fmt;

#[derive(Clone, Debug, PartialEq)]
pub enum Literal {
    Str(String),
    Int(i128),
    Float(f64),
    Bool(bool),
    Uuid([u8; 16]),
    Hex(Vec<u8>),
    List(Vec<Literal>),
    Set(Vec<Literal>),
    Map(Vec<(Literal, Literal)>),
}

impl Literal {
    /// The constant's kind as the server's errors name it.
    pub fn kind(&self) -> &'static str {
        match self {
            Literal::Str(_) => "STRING",
            Literal::Int(_) => "INTEGER",
            Literal::Float(_) => "FLOAT",
            Literal::Bool(_) => "BOOLEAN",
            Literal::Uuid(_) => "UUID",
            Literal::Hex(_) => "HEX",
            Literal::List(_) => "list literal",
            Literal::Set(_) => "set literal",
            Literal::Map(_) => "map literal",
        }
    }
}

impl fmt::Display for Literal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Literal::Str(s) => write!(f, "{s}"),
            Literal::Int(i) => write!(f, "{i}"),
            Literal::Float(x) => write!(f, "{x}"),
            Literal::Bool(b) => write!(f, "{b}"),
            Literal::Uuid(u) => write!(f, "{}", uuid::Uuid::from_bytes(*u)),
            Literal::Hex(b) => {
                write!(f, "0x")?;
                b.iter().try_for_each(|x| write!(f, "{x:02x}"))
            }
            Literal::List(_) | Literal::Set(_) | Literal::Map(_) => write!(f, "{}", self.kind()),
        }
    }
}

/// A value in a statement: a constant, `null`, or the n-th bind marker.
#[derive(Clone, Debug, PartialEq)]
pub enum Term {
    Lit(Literal),
    Null,
    Marker(usize),
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Op {
    Eq,
    Lt,
    Le,
    Gt,
    Ge,
    Ne,
}

impl Op {
    pub fn holds(self, o: std::cmp::Ordering) -> bool {
        use std::cmp::Ordering::*;
        match self {
            Op::Eq => o == Equal,
            Op::Ne => o != Equal,
            Op::Lt => o == Less,
            Op::Le => o != Greater,
            Op::Gt => o == Greater,
            Op::Ge => o != Less,
        }
    }

    pub fn text(self) -> &'static str {
        match self {
            Op::Eq => "=",
            Op::Lt => "<",
            Op::Le => "<=",
            Op::Gt => ">",
            Op::Ge => ">=",
            Op::Ne => "!=",
        }
    }
}

#[derive(Clone, Debug, PartialEq)]
pub enum InValues {
    List(Vec<Term>),
    Marker(usize),
}

#[derive(Clone, Debug, PartialEq)]
pub enum Relation {
    Single {
        col: String,
        op: Op,
        term: Term,
    },
    In {
        col: String,
        values: InValues,
    },
    Multi {
        cols: Vec<String>,
        op: Op,
        terms: Vec<Term>,
    },
}

impl Relation {
    pub fn columns(&self) -> Vec<&str> {
        match self {
            Relation::Single { col, .. } | Relation::In { col, .. } => vec![col],
            Relation::Multi { cols, .. } => cols.iter().map(String::as_str).collect(),
        }
    }
}

#[derive(Clone, Debug, PartialEq, Default)]
pub struct Using {
    pub ttl: Option<Term>,
    pub timestamp: Option<Term>,
}

#[derive(Clone, Debug, PartialEq)]
pub enum Conditions {
    None,
    Exists,
    NotExists,
    Columns(Vec<(String, Op, Term)>),
}

#[derive(Clone, Debug, PartialEq)]
pub enum Selection {
    Star,
    Columns(Vec<String>),
    CountStar,
}

#[derive(Clone, Debug, PartialEq)]
pub struct TableName {
    pub keyspace: Option<String>,
    pub name: String,
}

#[derive(Clone, Debug, PartialEq)]
pub struct ColumnDef {
    pub name: String,
    pub ty: Type,
    pub frozen: bool,
}

#[derive(Clone, Debug, PartialEq)]
pub enum Statement {
    CreateKeyspace {
        name: String,
        if_not_exists: bool,
        replication: Vec<(String, String)>,
    },
    CreateTable {
        table: TableName,
        if_not_exists: bool,
        columns: Vec<ColumnDef>,
        partition_key: Vec<String>,
        clustering: Vec<String>,
        order: Vec<(String, bool)>,
    },
    DropTable {
        table: TableName,
        if_exists: bool,
    },
    DropKeyspace {
        name: String,
        if_exists: bool,
    },
    Truncate {
        table: TableName,
    },
    Use(String),
    Insert {
        table: TableName,
        columns: Vec<String>,
        values: Vec<Term>,
        if_not_exists: bool,
        using: Using,
    },
    Update {
        table: TableName,
        using: Using,
        set: Vec<(String, Term)>,
        wheres: Vec<Relation>,
        conditions: Conditions,
    },
    Delete {
        table: TableName,
        columns: Vec<String>,
        using: Using,
        wheres: Vec<Relation>,
        conditions: Conditions,
    },
    Select {
        table: TableName,
        distinct: bool,
        selection: Selection,
        wheres: Vec<Relation>,
        order_by: Vec<(String, bool)>,
        limit: Option<Term>,
        allow_filtering: bool,
    },
}

/// Why a text is not a statement the stand-in runs.
#[derive(Debug, PartialEq)]
pub enum ParseError {
    /// Not CQL (protocol error 0x2000).
    Syntax(String),
    /// CQL, but not run by the stand-in (0x2200, naming the feature).
    Unsupported(String),
}

#[derive(Clone, Debug, PartialEq)]
enum Tok {
    Ident(String),
    Quoted(String),
    Str(String),
    Int(i128),
    Float(f64),
    Uuid([u8; 16]),
    Hex(Vec<u8>),
    Marker,
    Named(String),
    Sym(&'static str),
}

impl fmt::Display for Tok {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Tok::Ident(s) => write!(f, "{s}"),
            Tok::Quoted(s) => write!(f, "\"{s}\""),
            Tok::Str(s) => write!(f, "'{s}'"),
            Tok::Int(i) => write!(f, "{i}"),
            Tok::Float(x) => write!(f, "{x}"),
            Tok::Uuid(u) => write!(f, "{}", uuid::Uuid::from_bytes(*u)),
            Tok::Hex(_) => write!(f, "0x..."),
            Tok::Marker => write!(f, "?"),
            Tok::Named(n) => write!(f, ":{n}"),
            Tok::Sym(s) => write!(f, "{s}"),
        }
    }
}

/// Words of Cql.g that can never name a keyspace, table or column unquoted.
const RESERVED: &[&str] = &[
    "add",
    "allow",
    "alter",
    "and",
    "apply",
    "asc",
    "authorize",
    "batch",
    "begin",
    "by",
    "columnfamily",
    "create",
    "delete",
    "desc",
    "describe",
    "drop",
    "entries",
    "execute",
    "from",
    "full",
    "grant",
    "if",
    "in",
    "index",
    "infinity",
    "insert",
    "into",
    "keyspace",
    "limit",
    "modify",
    "nan",
    "norecursive",
    "not",
    "null",
    "of",
    "on",
    "or",
    "order",
    "primary",
    "rename",
    "revoke",
    "schema",
    "select",
    "set",
    "table",
    "to",
    "token",
    "truncate",
    "unlogged",
    "update",
    "use",
    "using",
    "where",
    "with",
];

const SYMBOLS: &[&str] = &[
    "<=", ">=", "!=", "(", ")", ",", ";", "=", "<", ">", "*", ".", "{", "}", "[", "]", ":", "+",
    "-",
];

fn uuid_at(b: &[u8]) -> Option<[u8; 16]> {
    let s = b.get(..36)?;
    let shape_ok = s.iter().enumerate().all(|(i, c)| match i {
        8 | 13 | 18 | 23 => *c == b'-',
        _ => c.is_ascii_hexdigit(),
    });
    let ends = b
        .get(36)
        .is_none_or(|c| !(c.is_ascii_alphanumeric() || *c == b'_'));
    if !shape_ok || !ends {
        return None;
    }
    uuid::Uuid::parse_str(std::str::from_utf8(s).ok()?)
        .ok()
        .map(|u| *u.as_bytes())
}

/// The text between `quote` at `at` and its closing one (a doubled quote is one quote), and
/// where after it the lexer goes on; `None` when it never closes.
fn quoted(text: &str, at: usize, quote: char) -> Option<(String, usize)> {
    let mut s = String::new();
    let mut j = at + 1;
    loop {
        let k = text[j..].find(quote)?;
        s.push_str(&text[j..j + k]);
        j += k + 1;
        if text[j..].starts_with(quote) {
            s.push(quote);
            j += 1;
        } else {
            return Some((s, j));
        }
    }
}

fn lex(text: &str) -> Result<Vec<(Tok, usize, usize)>, ParseError> {
    let b = text.as_bytes();
    let (mut i, mut line, mut line_start) = (0, 1, 0);
    let mut out = Vec::new();
    let err = |line: usize, col: usize, what: String| {
        ParseError::Syntax(format!("line {line}:{col} {what}"))
    };
    while i < b.len() {
        let c = b[i];
        let col = i - line_start;
        if c == b'\n' {
            line += 1;
            i += 1;
            line_start = i;
            continue;
        }
        if c.is_ascii_whitespace() {
            i += 1;
            continue;
        }
        if b[i..].starts_with(b"--") || b[i..].starts_with(b"//") {
            while i < b.len() && b[i] != b'\n' {
                i += 1;
            }
            continue;
        }
        if b[i..].starts_with(b"/*") {
            let end = text[i + 2..]
                .find("*/")
                .ok_or_else(|| err(line, col, "unterminated comment".into()))?;
            line += text[i..i + 2 + end].matches('\n').count();
            i += end + 4;
            continue;
        }
        let tok = if c == b'\'' || c == b'"' {
            let (s, next) = quoted(text, i, c as char)
                .ok_or_else(|| err(line, col, format!("unterminated {}", c as char)))?;
            i = next;
            if c == b'"' {
                Tok::Quoted(s)
            } else {
                Tok::Str(s)
            }
        } else if let Some(u) = c.is_ascii_hexdigit().then(|| uuid_at(&b[i..])).flatten() {
            i += 36;
            Tok::Uuid(u)
        } else if c == b'0' && matches!(b.get(i + 1), Some(b'x' | b'X')) {
            let start = i + 2;
            let mut j = start;
            while j < b.len() && b[j].is_ascii_hexdigit() {
                j += 1;
            }
            let digits = &text[start..j];
            if !digits.len().is_multiple_of(2) {
                return Err(err(line, col, format!("odd hex constant 0x{digits}")));
            }
            i = j;
            Tok::Hex(
                (0..digits.len())
                    .step_by(2)
                    .map(|k| u8::from_str_radix(&digits[k..k + 2], 16).unwrap_or(0))
                    .collect(),
            )
        } else if c.is_ascii_digit() || (c == b'-' && b.get(i + 1).is_some_and(u8::is_ascii_digit))
        {
            let start = i;
            i += 1;
            while i < b.len() && b[i].is_ascii_digit() {
                i += 1;
            }
            let mut float = false;
            if b.get(i) == Some(&b'.') && b.get(i + 1).is_some_and(u8::is_ascii_digit) {
                float = true;
                i += 1;
                while i < b.len() && b[i].is_ascii_digit() {
                    i += 1;
                }
            }
            if matches!(b.get(i), Some(b'e' | b'E')) {
                float = true;
                i += 1;
                if matches!(b.get(i), Some(b'+' | b'-')) {
                    i += 1;
                }
                while i < b.len() && b[i].is_ascii_digit() {
                    i += 1;
                }
            }
            let s = &text[start..i];
            if float {
                Tok::Float(
                    s.parse()
                        .map_err(|_| err(line, col, format!("bad number {s}")))?,
                )
            } else {
                Tok::Int(
                    s.parse()
                        .map_err(|_| err(line, col, format!("bad number {s}")))?,
                )
            }
        } else if c.is_ascii_alphabetic() {
            let start = i;
            while i < b.len() && (b[i].is_ascii_alphanumeric() || b[i] == b'_') {
                i += 1;
            }
            Tok::Ident(text[start..i].to_ascii_lowercase())
        } else if c == b'?' {
            i += 1;
            Tok::Marker
        } else if c == b':' && b.get(i + 1).is_some_and(u8::is_ascii_alphabetic) {
            let start = i + 1;
            i += 1;
            while i < b.len() && (b[i].is_ascii_alphanumeric() || b[i] == b'_') {
                i += 1;
            }
            Tok::Named(text[start..i].to_ascii_lowercase())
        } else if let Some(s) = SYMBOLS.iter().find(|s| b[i..].starts_with(s.as_bytes())) {
            i += s.len();
            Tok::Sym(s)
        } else {
            let ch = text[i..].chars().next().unwrap_or('?');
            return Err(err(line, col, format!("character '{ch}' not recognised")));
        };
        out.push((tok, line, col));
    }
    Ok(out)
}

struct Parser {
    toks: Vec<(Tok, usize, usize)>,
    pos: usize,
    markers: usize,
    end: (usize, usize),
}

type P<T> = Result<T, ParseError>;

/// Parses one statement (a trailing `;` is allowed). Bind markers are numbered in order.
pub fn parse(text: &str) -> P<(Statement, usize)> {
    let toks = lex(text)?;
    let lines = text.split('\n').count();
    let end = (lines, text.rsplit('\n').next().map_or(0, str::len));
    let mut p = Parser {
        toks,
        pos: 0,
        markers: 0,
        end,
    };
    let s = p.statement()?;
    p.eat_sym(";");
    if p.pos < p.toks.len() {
        return Err(p.unexpected("end of statement"));
    }
    Ok((s, p.markers))
}

impl Parser {
    fn peek(&self) -> Option<&Tok> {
        self.toks.get(self.pos).map(|t| &t.0)
    }

    fn unexpected(&self, expecting: &str) -> ParseError {
        match self.toks.get(self.pos) {
            Some((t, line, col)) => ParseError::Syntax(format!(
                "line {line}:{col} mismatched input '{t}' expecting {expecting}"
            )),
            None => ParseError::Syntax(format!(
                "line {}:{} mismatched input '<EOF>' expecting {expecting}",
                self.end.0, self.end.1
            )),
        }
    }

    fn is_word(&self, w: &str) -> bool {
        matches!(self.peek(), Some(Tok::Ident(s)) if s == w)
    }

    fn eat_word(&mut self, w: &str) -> bool {
        let yes = self.is_word(w);
        if yes {
            self.pos += 1;
        }
        yes
    }

    fn word(&mut self, w: &str) -> P<()> {
        if self.eat_word(w) {
            Ok(())
        } else {
            Err(self.unexpected(&w.to_ascii_uppercase()))
        }
    }

    fn is_sym(&self, s: &str) -> bool {
        matches!(self.peek(), Some(Tok::Sym(x)) if *x == s)
    }

    fn eat_sym(&mut self, s: &str) -> bool {
        let yes = self.is_sym(s);
        if yes {
            self.pos += 1;
        }
        yes
    }

    fn sym(&mut self, s: &str) -> P<()> {
        if self.eat_sym(s) {
            Ok(())
        } else {
            Err(self.unexpected(&format!("'{s}'")))
        }
    }

    /// An identifier: unquoted (lower-cased, not a reserved word) or quoted (as written).
    fn ident(&mut self) -> P<String> {
        match self.peek().cloned() {
            Some(Tok::Ident(s)) if !RESERVED.contains(&s.as_str()) => {
                self.pos += 1;
                Ok(s)
            }
            Some(Tok::Quoted(s)) => {
                self.pos += 1;
                Ok(s)
            }
            _ => Err(self.unexpected("an identifier")),
        }
    }

    fn table_name(&mut self) -> P<TableName> {
        let first = self.ident()?;
        if self.eat_sym(".") {
            Ok(TableName {
                keyspace: Some(first),
                name: self.ident()?,
            })
        } else {
            Ok(TableName {
                keyspace: None,
                name: first,
            })
        }
    }

    fn if_not_exists(&mut self) -> P<bool> {
        if self.eat_word("if") {
            self.word("not")?;
            self.word("exists")?;
            return Ok(true);
        }
        Ok(false)
    }

    fn if_exists(&mut self) -> P<bool> {
        if self.eat_word("if") {
            self.word("exists")?;
            return Ok(true);
        }
        Ok(false)
    }

    fn statement(&mut self) -> P<Statement> {
        match self.peek() {
            Some(Tok::Ident(w)) => match w.as_str() {
                "select" => self.select(),
                "insert" => self.insert(),
                "update" => self.update(),
                "delete" => self.delete(),
                "create" => self.create(),
                "drop" => self.drop(),
                "truncate" => {
                    self.pos += 1;
                    self.eat_word("table");
                    Ok(Statement::Truncate {
                        table: self.table_name()?,
                    })
                }
                "use" => {
                    self.pos += 1;
                    Ok(Statement::Use(self.ident()?))
                }
                "alter" | "grant" | "revoke" | "list" | "begin" | "apply" | "describe" => Err(
                    ParseError::Unsupported(format!("{} statements", w.to_ascii_uppercase())),
                ),
                _ => Err(self.unexpected("a statement")),
            },
            _ => Err(self.unexpected("a statement")),
        }
    }

    fn create(&mut self) -> P<Statement> {
        self.word("create")?;
        if self.eat_word("keyspace") || self.eat_word("schema") {
            let if_not_exists = self.if_not_exists()?;
            let name = self.ident()?;
            self.word("with")?;
            let mut replication = None;
            loop {
                let option = self.ident()?;
                self.sym("=")?;
                match option.as_str() {
                    "replication" => {
                        let Literal::Map(m) = self.literal()? else {
                            return Err(ParseError::Syntax(
                                "replication must be a map".to_string(),
                            ));
                        };
                        let mut pairs = Vec::new();
                        for (k, v) in m {
                            pairs.push((k.to_string(), v.to_string()));
                        }
                        replication = Some(pairs);
                    }
                    "durable_writes" => {
                        self.literal()?;
                    }
                    other => {
                        return Err(ParseError::Unsupported(format!("keyspace option {other}")))
                    }
                }
                if !self.eat_word("and") {
                    break;
                }
            }
            let replication = replication.ok_or_else(|| {
                ParseError::Syntax("Missing mandatory replication strategy class".into())
            })?;
            return Ok(Statement::CreateKeyspace {
                name,
                if_not_exists,
                replication,
            });
        }
        if !(self.eat_word("table") || self.eat_word("columnfamily")) {
            if self.is_word("index") || self.is_word("type") || self.is_word("materialized") {
                return Err(ParseError::Unsupported(format!(
                    "CREATE {}",
                    self.peek().map(|t| t.to_string()).unwrap_or_default()
                )));
            }
            return Err(self.unexpected("KEYSPACE or TABLE"));
        }
        let if_not_exists = self.if_not_exists()?;
        let table = self.table_name()?;
        self.sym("(")?;
        let mut columns = Vec::new();
        let mut keys: Vec<(Vec<String>, Vec<String>)> = Vec::new();
        loop {
            if self.eat_word("primary") {
                self.word("key")?;
                self.sym("(")?;
                let partition = if self.eat_sym("(") {
                    let mut p = vec![self.ident()?];
                    while self.eat_sym(",") {
                        p.push(self.ident()?);
                    }
                    self.sym(")")?;
                    p
                } else {
                    vec![self.ident()?]
                };
                let mut clustering = Vec::new();
                while self.eat_sym(",") {
                    clustering.push(self.ident()?);
                }
                self.sym(")")?;
                keys.push((partition, clustering));
            } else {
                let name = self.ident()?;
                let (ty, frozen) = self.cql_type()?;
                if self.eat_word("primary") {
                    self.word("key")?;
                    keys.push((vec![name.clone()], Vec::new()));
                }
                if self.is_word("static") {
                    return Err(ParseError::Unsupported("static columns".into()));
                }
                columns.push(ColumnDef { name, ty, frozen });
            }
            if !self.eat_sym(",") {
                break;
            }
            if self.is_sym(")") {
                break;
            }
        }
        self.sym(")")?;
        let mut order = Vec::new();
        if self.eat_word("with") {
            loop {
                if self.eat_word("clustering") {
                    self.word("order")?;
                    self.word("by")?;
                    self.sym("(")?;
                    loop {
                        let c = self.ident()?;
                        let desc = if self.eat_word("desc") {
                            true
                        } else {
                            self.eat_word("asc");
                            false
                        };
                        order.push((c, desc));
                        if !self.eat_sym(",") {
                            break;
                        }
                    }
                    self.sym(")")?;
                } else {
                    let option = self.ident()?;
                    return Err(ParseError::Unsupported(format!("table option {option}")));
                }
                if !self.eat_word("and") {
                    break;
                }
            }
        }
        let (partition_key, clustering) = match keys.len() {
            0 => {
                return Err(ParseError::Syntax(
                    "No PRIMARY KEY specifed (exactly one required)".into(),
                ))
            }
            1 => keys.remove(0),
            _ => {
                return Err(ParseError::Syntax(
                    "Multiple PRIMARY KEYs specifed (exactly one required)".into(),
                ))
            }
        };
        Ok(Statement::CreateTable {
            table,
            if_not_exists,
            columns,
            partition_key,
            clustering,
            order,
        })
    }

    fn cql_type(&mut self) -> P<(Type, bool)> {
        let name = match self.peek().cloned() {
            Some(Tok::Ident(s)) => {
                self.pos += 1;
                s
            }
            _ => return Err(self.unexpected("a type")),
        };
        let ty = match name.as_str() {
            "frozen" => {
                self.sym("<")?;
                let (t, _) = self.cql_type()?;
                self.sym(">")?;
                return Ok((t, true));
            }
            "list" | "set" => {
                self.sym("<")?;
                let (e, _) = self.cql_type()?;
                self.sym(">")?;
                if name == "list" {
                    Type::List(Box::new(e))
                } else {
                    Type::Set(Box::new(e))
                }
            }
            "map" => {
                self.sym("<")?;
                let (k, _) = self.cql_type()?;
                self.sym(",")?;
                let (v, _) = self.cql_type()?;
                self.sym(">")?;
                Type::Map(Box::new(k), Box::new(v))
            }
            other => match Type::scalar(other) {
                Some(t) => t,
                None if matches!(
                    other,
                    "varint" | "decimal" | "duration" | "time" | "tuple" | "vector"
                ) =>
                {
                    return Err(ParseError::Unsupported(format!("type {other}")))
                }
                None => return Err(ParseError::Syntax(format!("Unknown type {other}"))),
            },
        };
        Ok((ty, false))
    }

    fn drop(&mut self) -> P<Statement> {
        self.word("drop")?;
        if self.eat_word("keyspace") {
            let if_exists = self.if_exists()?;
            return Ok(Statement::DropKeyspace {
                name: self.ident()?,
                if_exists,
            });
        }
        self.word("table")?;
        let if_exists = self.if_exists()?;
        Ok(Statement::DropTable {
            table: self.table_name()?,
            if_exists,
        })
    }

    fn marker(&mut self) -> usize {
        self.markers += 1;
        self.markers - 1
    }

    fn term(&mut self) -> P<Term> {
        match self.peek() {
            Some(Tok::Marker) => {
                self.pos += 1;
                Ok(Term::Marker(self.marker()))
            }
            Some(Tok::Named(_)) => Err(ParseError::Unsupported("named bind markers".into())),
            Some(Tok::Ident(w)) if w == "null" => {
                self.pos += 1;
                Ok(Term::Null)
            }
            _ => Ok(Term::Lit(self.literal()?)),
        }
    }

    fn literal(&mut self) -> P<Literal> {
        let lit = match self.peek().cloned() {
            Some(Tok::Str(s)) => Literal::Str(s),
            Some(Tok::Int(i)) => Literal::Int(i),
            Some(Tok::Float(f)) => Literal::Float(f),
            Some(Tok::Uuid(u)) => Literal::Uuid(u),
            Some(Tok::Hex(h)) => Literal::Hex(h),
            Some(Tok::Ident(w)) if w == "true" || w == "false" => Literal::Bool(w == "true"),
            Some(Tok::Sym("[")) => {
                self.pos += 1;
                let mut items = Vec::new();
                if !self.eat_sym("]") {
                    loop {
                        items.push(self.literal()?);
                        if !self.eat_sym(",") {
                            break;
                        }
                    }
                    self.sym("]")?;
                }
                return Ok(Literal::List(items));
            }
            Some(Tok::Sym("{")) => {
                self.pos += 1;
                if self.eat_sym("}") {
                    return Ok(Literal::Map(Vec::new()));
                }
                let first = self.literal()?;
                if self.eat_sym(":") {
                    let mut entries = vec![(first, self.literal()?)];
                    while self.eat_sym(",") {
                        let k = self.literal()?;
                        self.sym(":")?;
                        entries.push((k, self.literal()?));
                    }
                    self.sym("}")?;
                    return Ok(Literal::Map(entries));
                }
                let mut items = vec![first];
                while self.eat_sym(",") {
                    items.push(self.literal()?);
                }
                self.sym("}")?;
                return Ok(Literal::Set(items));
            }
            _ => return Err(self.unexpected("a constant")),
        };
        self.pos += 1;
        Ok(lit)
    }

    fn op(&mut self) -> P<Op> {
        let op = match self.peek() {
            Some(Tok::Sym("=")) => Op::Eq,
            Some(Tok::Sym("<")) => Op::Lt,
            Some(Tok::Sym("<=")) => Op::Le,
            Some(Tok::Sym(">")) => Op::Gt,
            Some(Tok::Sym(">=")) => Op::Ge,
            Some(Tok::Sym("!=")) => Op::Ne,
            Some(Tok::Ident(w)) if w == "contains" || w == "like" => {
                return Err(ParseError::Unsupported(format!(
                    "{} relations",
                    w.to_ascii_uppercase()
                )))
            }
            _ => return Err(self.unexpected("an operator")),
        };
        self.pos += 1;
        Ok(op)
    }

    fn relation(&mut self) -> P<Relation> {
        if self.is_word("token") {
            return Err(ParseError::Unsupported("token() restrictions".into()));
        }
        if self.eat_sym("(") {
            let mut cols = vec![self.ident()?];
            while self.eat_sym(",") {
                cols.push(self.ident()?);
            }
            self.sym(")")?;
            if self.is_word("in") {
                return Err(ParseError::Unsupported("multi-column IN".into()));
            }
            let op = self.op()?;
            if op == Op::Ne {
                return Err(self.unexpected("a comparison"));
            }
            let terms = if self.eat_sym("(") {
                let mut t = vec![self.term()?];
                while self.eat_sym(",") {
                    t.push(self.term()?);
                }
                self.sym(")")?;
                t
            } else {
                return Err(ParseError::Unsupported(
                    "a tuple bound as one marker".into(),
                ));
            };
            return Ok(Relation::Multi { cols, op, terms });
        }
        let col = self.ident()?;
        if self.eat_word("in") {
            if matches!(self.peek(), Some(Tok::Marker)) {
                self.pos += 1;
                return Ok(Relation::In {
                    col,
                    values: InValues::Marker(self.marker()),
                });
            }
            self.sym("(")?;
            let mut t = Vec::new();
            if !self.eat_sym(")") {
                loop {
                    t.push(self.term()?);
                    if !self.eat_sym(",") {
                        break;
                    }
                }
                self.sym(")")?;
            }
            return Ok(Relation::In {
                col,
                values: InValues::List(t),
            });
        }
        let op = self.op()?;
        Ok(Relation::Single {
            col,
            op,
            term: self.term()?,
        })
    }

    fn wheres(&mut self) -> P<Vec<Relation>> {
        let mut out = vec![self.relation()?];
        while self.eat_word("and") {
            out.push(self.relation()?);
        }
        Ok(out)
    }

    fn using(&mut self, using: &mut Using) -> P<()> {
        loop {
            if self.eat_word("ttl") {
                using.ttl = Some(self.term()?);
            } else if self.eat_word("timestamp") {
                using.timestamp = Some(self.term()?);
            } else if self.is_word("timeout") {
                return Err(ParseError::Unsupported("USING TIMEOUT".into()));
            } else {
                return Err(self.unexpected("TTL or TIMESTAMP"));
            }
            if !self.eat_word("and") {
                return Ok(());
            }
        }
    }

    fn conditions(&mut self) -> P<Conditions> {
        if !self.eat_word("if") {
            return Ok(Conditions::None);
        }
        if self.eat_word("exists") {
            return Ok(Conditions::Exists);
        }
        let mut out = Vec::new();
        loop {
            let col = self.ident()?;
            if self.is_sym("[") || self.is_sym(".") {
                return Err(ParseError::Unsupported(
                    "conditions on collection elements".into(),
                ));
            }
            if self.is_word("in") {
                return Err(ParseError::Unsupported("IN conditions".into()));
            }
            let op = self.op()?;
            out.push((col, op, self.term()?));
            if !self.eat_word("and") {
                return Ok(Conditions::Columns(out));
            }
        }
    }

    fn insert(&mut self) -> P<Statement> {
        self.word("insert")?;
        self.word("into")?;
        let table = self.table_name()?;
        if self.is_word("json") {
            return Err(ParseError::Unsupported("INSERT JSON".into()));
        }
        self.sym("(")?;
        let mut columns = vec![self.ident()?];
        while self.eat_sym(",") {
            columns.push(self.ident()?);
        }
        self.sym(")")?;
        self.word("values")?;
        self.sym("(")?;
        let mut values = vec![self.term()?];
        while self.eat_sym(",") {
            values.push(self.term()?);
        }
        self.sym(")")?;
        let mut if_not_exists = false;
        let mut using = Using::default();
        // Cql.g: IF NOT EXISTS comes before USING.
        if self.eat_word("if") {
            self.word("not")?;
            self.word("exists")?;
            if_not_exists = true;
        }
        if self.eat_word("using") {
            self.using(&mut using)?;
        }
        Ok(Statement::Insert {
            table,
            columns,
            values,
            if_not_exists,
            using,
        })
    }

    fn update(&mut self) -> P<Statement> {
        self.word("update")?;
        let table = self.table_name()?;
        let mut using = Using::default();
        if self.eat_word("using") {
            self.using(&mut using)?;
        }
        self.word("set")?;
        let mut set = Vec::new();
        loop {
            let col = self.ident()?;
            if self.is_sym("[") || self.is_sym(".") {
                return Err(ParseError::Unsupported(
                    "setting collection elements".into(),
                ));
            }
            self.sym("=")?;
            if matches!(self.peek(), Some(Tok::Ident(w)) if *w == col) {
                return Err(ParseError::Unsupported(
                    "counter and collection arithmetic".into(),
                ));
            }
            let term = self.term()?;
            if self.is_sym("+") || self.is_sym("-") {
                return Err(ParseError::Unsupported(
                    "counter and collection arithmetic".into(),
                ));
            }
            set.push((col, term));
            if !self.eat_sym(",") {
                break;
            }
        }
        self.word("where")?;
        let wheres = self.wheres()?;
        let conditions = self.conditions()?;
        Ok(Statement::Update {
            table,
            using,
            set,
            wheres,
            conditions,
        })
    }

    fn delete(&mut self) -> P<Statement> {
        self.word("delete")?;
        let mut columns = Vec::new();
        if !self.is_word("from") {
            loop {
                columns.push(self.ident()?);
                if self.is_sym("[") || self.is_sym(".") {
                    return Err(ParseError::Unsupported(
                        "deleting collection elements".into(),
                    ));
                }
                if !self.eat_sym(",") {
                    break;
                }
            }
        }
        self.word("from")?;
        let table = self.table_name()?;
        let mut using = Using::default();
        if self.eat_word("using") {
            self.using(&mut using)?;
        }
        self.word("where")?;
        let wheres = self.wheres()?;
        let conditions = self.conditions()?;
        Ok(Statement::Delete {
            table,
            columns,
            using,
            wheres,
            conditions,
        })
    }

    fn select(&mut self) -> P<Statement> {
        self.word("select")?;
        if self.is_word("json") {
            return Err(ParseError::Unsupported("SELECT JSON".into()));
        }
        let distinct = self.eat_word("distinct");
        let selection = if self.eat_sym("*") {
            Selection::Star
        } else if self.is_word("count")
            && matches!(self.toks.get(self.pos + 1), Some((Tok::Sym("("), ..)))
        {
            self.pos += 2;
            if !self.eat_sym("*") {
                match self.peek() {
                    Some(Tok::Int(1)) => self.pos += 1,
                    _ => return Err(ParseError::Unsupported("COUNT of a column".into())),
                }
            }
            self.sym(")")?;
            Selection::CountStar
        } else {
            let mut cols = Vec::new();
            loop {
                if let (Some(Tok::Ident(f)), Some((Tok::Sym("("), ..))) =
                    (self.peek(), self.toks.get(self.pos + 1))
                {
                    return Err(ParseError::Unsupported(format!("function {f}()")));
                }
                let c = self.ident()?;
                if self.is_word("as") {
                    return Err(ParseError::Unsupported("selection aliases".into()));
                }
                cols.push(c);
                if !self.eat_sym(",") {
                    break;
                }
            }
            Selection::Columns(cols)
        };
        self.word("from")?;
        let table = self.table_name()?;
        let wheres = if self.eat_word("where") {
            self.wheres()?
        } else {
            Vec::new()
        };
        if self.is_word("group") {
            return Err(ParseError::Unsupported("GROUP BY".into()));
        }
        let mut order_by = Vec::new();
        if self.eat_word("order") {
            self.word("by")?;
            loop {
                let c = self.ident()?;
                let desc = if self.eat_word("desc") {
                    true
                } else {
                    self.eat_word("asc");
                    false
                };
                order_by.push((c, desc));
                if !self.eat_sym(",") {
                    break;
                }
            }
        }
        if self.is_word("per") {
            return Err(ParseError::Unsupported("PER PARTITION LIMIT".into()));
        }
        let limit = if self.eat_word("limit") {
            Some(self.term()?)
        } else {
            None
        };
        let allow_filtering = if self.eat_word("allow") {
            self.word("filtering")?;
            true
        } else {
            false
        };
        if self.is_word("bypass") || self.is_word("using") {
            return Err(ParseError::Unsupported(
                "BYPASS CACHE and USING TIMEOUT".into(),
            ));
        }
        Ok(Statement::Select {
            table,
            distinct,
            selection,
            wheres,
            order_by,
            limit,
            allow_filtering,
        })
    }
}

/// Parses a type name as `system_schema.columns` writes it (`map<text, text>`).
pub fn type_name(text: &str) -> Option<Type> {
    let mut p = Parser {
        toks: lex(text).ok()?,
        pos: 0,
        markers: 0,
        end: (1, 0),
    };
    let (t, _) = p.cql_type().ok()?;
    (p.pos == p.toks.len()).then_some(t)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_the_stores_hardest_statements() {
        let (s, n) = parse(
            "SELECT bot_id, received_ms FROM calls \
             WHERE bot_id = ? AND day = ? AND (received_ms, call_id) > (?, ?) \
             AND (received_ms) < (?) LIMIT ?",
        )
        .unwrap();
        assert_eq!(n, 6);
        let Statement::Select { wheres, limit, .. } = s else {
            panic!("a select")
        };
        assert_eq!(wheres.len(), 4);
        assert_eq!(limit, Some(Term::Marker(5)));
        let (s, n) = parse(
            "UPDATE webhooks SET lease_owner = ?, lease_until = ? WHERE bot_id = ?\n \
             IF url != null AND lease_owner = null",
        )
        .unwrap();
        assert_eq!(n, 3);
        let Statement::Update { conditions, .. } = s else {
            panic!("an update")
        };
        assert_eq!(
            conditions,
            Conditions::Columns(vec![
                ("url".into(), Op::Ne, Term::Null),
                ("lease_owner".into(), Op::Eq, Term::Null)
            ])
        );
        assert!(parse("SELECT schema_version FROM system.local WHERE key='local'").is_ok());
        assert!(parse("SELECT COUNT(*) FROM calls WHERE bot_id = ? AND day = ?").is_ok());
    }

    #[test]
    fn names_what_is_wrong() {
        assert_eq!(
            parse("SELEC * FROM t"),
            Err(ParseError::Syntax(
                "line 1:0 mismatched input 'selec' expecting a statement".into()
            ))
        );
        assert!(matches!(
            parse("SELECT * FROM select"),
            Err(ParseError::Syntax(_))
        ));
        assert!(matches!(
            parse("SELECT * FROM t PER PARTITION LIMIT 1"),
            Err(ParseError::Unsupported(_))
        ));
        assert!(matches!(
            parse("INSERT INTO t (a) VALUES (1) USING TTL 5 IF NOT EXISTS"),
            Err(ParseError::Syntax(_))
        ));
    }

    #[test]
    fn reads_types_and_literals() {
        assert_eq!(
            type_name("map<text, text>"),
            Some(Type::Map(Box::new(Type::Text), Box::new(Type::Text)))
        );
        let (s, _) = parse(
            "INSERT INTO t (a, b, c) VALUES (123e4567-e89b-12d3-a456-426614174000, -5, {'x': 'y'})",
        )
        .unwrap();
        let Statement::Insert { values, .. } = s else {
            panic!("an insert")
        };
        assert!(matches!(values[0], Term::Lit(Literal::Uuid(_))));
        assert_eq!(values[1], Term::Lit(Literal::Int(-5)));
    }
}
