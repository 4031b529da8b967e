//! The rules the stand-in keeps, pinned: what Scylla refuses is refused with its words.

use super::*;
use std::sync::atomic::{AtomicI64, Ordering};

fn engine() -> (Engine, Option<String>) {
    let mut e = Engine::new("127.0.0.1".parse().unwrap());
    let mut ks = None;
    for cql in [
        "CREATE KEYSPACE t WITH replication = {'class': 'NetworkTopologyStrategy', 'replication_factor': 1}",
        "USE t",
        "CREATE TABLE calls (bot bigint, day bigint, at bigint, id int, note text, \
         PRIMARY KEY ((bot, day), at, id))",
        "CREATE TABLE kv (k text PRIMARY KEY, v bigint, owner text)",
    ] {
        e.query(&mut ks, cql, &one()).unwrap();
    }
    (e, ks)
}

fn one() -> Exec {
    Exec {
        consistency: 1,
        ..Exec::default()
    }
}

fn run(e: &mut Engine, ks: &mut Option<String>, cql: &str) -> R<Vec<Vec<Option<Vec<u8>>>>> {
    match e.query(ks, cql, &one())? {
        Outcome::Rows(r) => Ok(r.rows),
        _ => Ok(Vec::new()),
    }
}

fn err(e: &mut Engine, ks: &mut Option<String>, cql: &str) -> String {
    match run(e, ks, cql) {
        Err(x) => x.message,
        Ok(_) => panic!("{cql} was accepted"),
    }
}

fn big(v: &Option<Vec<u8>>) -> i64 {
    i64::from_be_bytes(v.as_deref().unwrap().try_into().unwrap())
}

fn fill(e: &mut Engine, ks: &mut Option<String>) {
    for (day, at, id) in [(1, 10, 1), (1, 10, 2), (1, 20, 1), (1, 30, 1), (2, 5, 1)] {
        run(
            e,
            ks,
            &format!(
                "INSERT INTO calls (bot, day, at, id, note) VALUES (7, {day}, {at}, {id}, 'n')"
            ),
        )
        .unwrap();
    }
}

#[test]
fn selects_must_name_the_whole_partition_key() {
    let (mut e, mut ks) = engine();
    fill(&mut e, &mut ks);
    assert_eq!(
        err(&mut e, &mut ks, "SELECT * FROM calls WHERE bot = 7"),
        FILTERING
    );
    assert_eq!(
        err(&mut e, &mut ks, "SELECT * FROM calls WHERE at = 10"),
        FILTERING
    );
    assert_eq!(
        err(
            &mut e,
            &mut ks,
            "SELECT * FROM calls WHERE bot = 7 AND day = 1 AND note = 'n'"
        ),
        FILTERING
    );
    assert!(err(
        &mut e,
        &mut ks,
        "SELECT * FROM calls WHERE bot = 7 AND day > 1"
    )
    .starts_with("Only EQ and IN relation are supported on the partition key"));
    // A scan is allowed; filtering only when asked for.
    assert_eq!(
        run(&mut e, &mut ks, "SELECT * FROM calls").unwrap().len(),
        5
    );
    let rows = run(
        &mut e,
        &mut ks,
        "SELECT at FROM calls WHERE at = 10 ALLOW FILTERING",
    )
    .unwrap();
    assert_eq!(rows.len(), 2);
    let rows = run(
        &mut e,
        &mut ks,
        "SELECT at FROM calls WHERE bot = 7 AND day IN (1, 2)",
    )
    .unwrap();
    assert_eq!(rows.len(), 5);
}

#[test]
fn clustering_restrictions_follow_the_key() {
    let (mut e, mut ks) = engine();
    fill(&mut e, &mut ks);
    assert_eq!(
        err(&mut e, &mut ks, "SELECT * FROM calls WHERE bot = 7 AND day = 1 AND id = 1"),
        "PRIMARY KEY column \"id\" cannot be restricted as preceding column \"at\" is not restricted"
    );
    assert_eq!(
        err(&mut e, &mut ks, "SELECT * FROM calls WHERE bot = 7 AND day = 1 AND at > 1 AND id = 1"),
        "Clustering column \"id\" cannot be restricted (preceding column \"at\" is restricted by a non-EQ relation)"
    );
    let rows = run(
        &mut e,
        &mut ks,
        "SELECT at, id FROM calls WHERE bot = 7 AND day = 1 AND (at, id) > (10, 1) AND (at) < (30)",
    )
    .unwrap();
    let got: Vec<(i64, Vec<u8>)> = rows
        .iter()
        .map(|r| (big(&r[0]), r[1].clone().unwrap()))
        .collect();
    assert_eq!(
        got,
        vec![
            (10, 2i32.to_be_bytes().to_vec()),
            (20, 1i32.to_be_bytes().to_vec())
        ]
    );
    assert!(err(
        &mut e,
        &mut ks,
        "SELECT * FROM calls WHERE bot = 7 AND day = 1 AND (id, at) > (1, 1)"
    )
    .starts_with("Clustering columns must appear in the PRIMARY KEY order"));
    assert!(err(
        &mut e,
        &mut ks,
        "SELECT * FROM calls WHERE bot = 7 AND day = 1 AND (note) > ('a')"
    )
    .starts_with("Multi-column relations can only be applied to clustering columns"));
}

#[test]
fn order_by_and_limits() {
    let (mut e, mut ks) = engine();
    fill(&mut e, &mut ks);
    let rows = run(
        &mut e,
        &mut ks,
        "SELECT at FROM calls WHERE bot = 7 AND day = 1 ORDER BY at DESC, id DESC LIMIT 2",
    )
    .unwrap();
    assert_eq!(
        rows.iter().map(|r| big(&r[0])).collect::<Vec<_>>(),
        vec![30, 20]
    );
    assert!(
        err(&mut e, &mut ks, "SELECT at FROM calls ORDER BY at DESC")
            .starts_with("ORDER BY is only supported")
    );
    assert!(err(
        &mut e,
        &mut ks,
        "SELECT at FROM calls WHERE bot = 7 AND day = 1 ORDER BY id"
    )
    .starts_with("Order by currently only support"));
    assert!(err(
        &mut e,
        &mut ks,
        "SELECT at FROM calls WHERE bot = 7 AND day = 1 ORDER BY note"
    )
    .starts_with("Order by is currently only supported on the clustered columns"));
    assert_eq!(
        err(
            &mut e,
            &mut ks,
            "SELECT at FROM calls WHERE bot = 7 AND day = 1 LIMIT 0"
        ),
        "LIMIT must be strictly positive"
    );
    let count = run(
        &mut e,
        &mut ks,
        "SELECT COUNT(*) FROM calls WHERE bot = 7 AND day = 1",
    )
    .unwrap();
    assert_eq!(big(&count[0][0]), 4);
    let parts = run(&mut e, &mut ks, "SELECT DISTINCT bot, day FROM calls").unwrap();
    assert_eq!(parts.len(), 2);
    assert!(err(&mut e, &mut ks, "SELECT DISTINCT bot, at FROM calls")
        .starts_with("SELECT DISTINCT queries"));
}

#[test]
fn names_are_checked() {
    let (mut e, mut ks) = engine();
    assert_eq!(
        err(&mut e, &mut ks, "SELECT * FROM nope"),
        "unconfigured table nope"
    );
    assert_eq!(
        err(&mut e, &mut ks, "SELECT * FROM other.calls"),
        "Keyspace other does not exist"
    );
    assert_eq!(
        err(&mut e, &mut ks, "SELECT nope FROM kv"),
        "Undefined name nope in selection clause"
    );
    assert!(err(&mut e, &mut ks, "SELECT * FROM kv WHERE nope = 1")
        .starts_with("Undefined name nope in where clause"));
    assert_eq!(
        err(&mut e, &mut ks, "INSERT INTO kv (k, nope) VALUES ('a', 1)"),
        "Undefined column name nope"
    );
    assert_eq!(
        err(
            &mut e,
            &mut ks,
            "INSERT INTO calls (bot, at, id) VALUES (1, 2, 3)"
        ),
        "Some partition key parts are missing: day"
    );
    assert_eq!(
        err(&mut e, &mut ks, "UPDATE kv SET v = 1 WHERE owner = 'x'"),
        "Invalid where clause contains non PRIMARY KEY columns: owner"
    );
    assert_eq!(
        err(
            &mut e,
            &mut ks,
            "UPDATE calls SET note = 'x' WHERE bot = 1 AND day = 1 AND at = 1"
        ),
        "Missing mandatory PRIMARY KEY part id"
    );
    assert_eq!(
        err(
            &mut e,
            &mut ks,
            "INSERT INTO kv (k, v) VALUES ('a', 'text')"
        ),
        "Invalid STRING constant (text) for \"v\" of type bigint"
    );
    let x = e.query(&mut ks, "SELEC 1", &one()).err().unwrap();
    assert_eq!(x.code, SYNTAX);
    let x = e
        .query(&mut ks, "CREATE TABLE kv (k text PRIMARY KEY)", &one())
        .err()
        .unwrap();
    assert_eq!(x.code, ALREADY_EXISTS);
    let x = e
        .query(
            &mut ks,
            "INSERT INTO system.local (key) VALUES ('x')",
            &one(),
        )
        .err()
        .unwrap();
    assert_eq!(x.code, UNAUTHORIZED);
}

#[test]
fn what_is_not_supported_says_so() {
    let (mut e, mut ks) = engine();
    for cql in [
        "SELECT * FROM kv PER PARTITION LIMIT 1",
        "SELECT token(k) FROM kv",
        "UPDATE kv SET v = v + 1 WHERE k = 'a'",
        "CREATE INDEX ON kv (v)",
        "ALTER TABLE kv ADD x int",
        "SELECT * FROM kv WHERE k = 'a' USING TIMEOUT 10ms",
    ] {
        let m = err(&mut e, &mut ks, cql);
        assert!(m.starts_with("unsupported by the stand-in"), "{cql}: {m}");
    }
}

#[test]
fn ttls_expire_rows_and_cells() {
    let (mut e, mut ks) = engine();
    let now = Arc::new(AtomicI64::new(1_000_000));
    let clock = now.clone();
    e.set_clock(move || clock.load(Ordering::SeqCst));
    run(
        &mut e,
        &mut ks,
        "INSERT INTO kv (k, v) VALUES ('a', 1) USING TTL 10",
    )
    .unwrap();
    run(&mut e, &mut ks, "INSERT INTO kv (k, v) VALUES ('b', 2)").unwrap();
    run(
        &mut e,
        &mut ks,
        "UPDATE kv USING TTL 5 SET owner = 'o' WHERE k = 'b'",
    )
    .unwrap();
    now.fetch_add(6_000, Ordering::SeqCst);
    let rows = run(&mut e, &mut ks, "SELECT k, owner FROM kv").unwrap();
    assert_eq!(rows.len(), 2);
    assert!(
        rows.iter().all(|r| r[1].is_none()),
        "the owner cell expired"
    );
    now.fetch_add(5_000, Ordering::SeqCst);
    let rows = run(&mut e, &mut ks, "SELECT k FROM kv").unwrap();
    assert_eq!(rows, vec![vec![Some(b"b".to_vec())]]);
    // A row made by UPDATE alone goes when its cells do.
    run(
        &mut e,
        &mut ks,
        "UPDATE kv USING TTL 1 SET v = 3 WHERE k = 'c'",
    )
    .unwrap();
    now.fetch_add(1_000, Ordering::SeqCst);
    assert_eq!(
        run(&mut e, &mut ks, "SELECT k FROM kv WHERE k = 'c'")
            .unwrap()
            .len(),
        0
    );
    assert!(err(
        &mut e,
        &mut ks,
        "INSERT INTO kv (k) VALUES ('x') USING TTL 630720001"
    )
    .starts_with("ttl is too large"));
    assert!(err(
        &mut e,
        &mut ks,
        "INSERT INTO kv (k) VALUES ('x') USING TTL -1"
    )
    .starts_with("A TTL must be greater"));
}

#[test]
fn conditional_writes_answer_applied() {
    let (mut e, mut ks) = engine();
    let applied = |rows: Vec<Vec<Option<Vec<u8>>>>| rows[0][0] == Some(vec![1]);
    assert!(applied(
        run(
            &mut e,
            &mut ks,
            "INSERT INTO kv (k, v) VALUES ('a', 1) IF NOT EXISTS"
        )
        .unwrap()
    ));
    let again = run(
        &mut e,
        &mut ks,
        "INSERT INTO kv (k, v) VALUES ('a', 2) IF NOT EXISTS",
    )
    .unwrap();
    assert!(!applied(again.clone()));
    // Scylla answers the row as it is: [applied], k, owner, v.
    assert_eq!(big(&again[0][3]), 1);
    assert!(applied(
        run(
            &mut e,
            &mut ks,
            "UPDATE kv SET owner = 'x' WHERE k = 'a' IF owner = null"
        )
        .unwrap()
    ));
    assert!(!applied(
        run(
            &mut e,
            &mut ks,
            "UPDATE kv SET owner = 'y' WHERE k = 'a' IF owner = null"
        )
        .unwrap()
    ));
    assert!(applied(
        run(
            &mut e,
            &mut ks,
            "UPDATE kv SET owner = 'y' WHERE k = 'a' IF owner = 'x' AND v < 5"
        )
        .unwrap()
    ));
    assert!(!applied(
        run(
            &mut e,
            &mut ks,
            "UPDATE kv SET v = 9 WHERE k = 'nope' IF EXISTS"
        )
        .unwrap()
    ));
    assert!(!applied(
        run(
            &mut e,
            &mut ks,
            "UPDATE kv SET v = 9 WHERE k = 'nope' IF v != null"
        )
        .unwrap()
    ));
    assert_eq!(
        run(&mut e, &mut ks, "SELECT * FROM kv WHERE k = 'nope'")
            .unwrap()
            .len(),
        0
    );
    assert!(applied(
        run(&mut e, &mut ks, "DELETE FROM kv WHERE k = 'a' IF EXISTS").unwrap()
    ));
    assert_eq!(
        err(
            &mut e,
            &mut ks,
            "UPDATE kv USING TIMESTAMP 5 SET v = 1 WHERE k = 'a' IF EXISTS"
        ),
        "Cannot provide custom timestamp for conditional updates"
    );
    assert_eq!(
        err(
            &mut e,
            &mut ks,
            "UPDATE kv SET v = 1 WHERE k = 'a' IF k = 'a'"
        ),
        "PRIMARY KEY column 'k' cannot have IF conditions"
    );
    assert!(err(
        &mut e,
        &mut ks,
        "UPDATE kv SET v = 1 WHERE k = 'a' IF v < null"
    )
    .starts_with("Invalid comparison with null"));
}

#[test]
fn prepared_statements_check_their_values() {
    let (mut e, mut ks) = engine();
    let p = e
        .prepare(&ks, "INSERT INTO kv (k, v) VALUES (?, ?) USING TTL ?")
        .unwrap();
    let names: Vec<&str> = p.binds.iter().map(|s| s.2.as_str()).collect();
    assert_eq!(names, vec!["k", "v", "[ttl]"]);
    assert_eq!(p.pk_indexes, vec![0]);
    let exec = |values: Vec<Bound>| Exec {
        consistency: 6,
        values,
        ..Exec::default()
    };
    let good = exec(vec![
        Bound::Value(b"a".to_vec()),
        Bound::Value(5i64.to_be_bytes().to_vec()),
        Bound::Value(60i32.to_be_bytes().to_vec()),
    ]);
    assert!(e.execute(&mut ks, &p.id, &good).is_ok());
    let bad = exec(vec![
        Bound::Value(b"a".to_vec()),
        Bound::Value(5i32.to_be_bytes().to_vec()),
        Bound::Value(60i32.to_be_bytes().to_vec()),
    ]);
    let x = e.execute(&mut ks, &p.id, &bad).err().unwrap();
    assert!(x.message.contains("binding column v"), "{}", x.message);
    assert_eq!(
        e.execute(&mut ks, &p.id, &exec(vec![])).err().unwrap().code,
        INVALID
    );
    assert_eq!(
        e.execute(&mut ks, &[1; 16], &good).err().unwrap().code,
        UNPREPARED
    );
    // The same text in the same keyspace is the same id (drivers re-prepare and compare).
    assert_eq!(
        e.prepare(&ks, "INSERT INTO kv (k, v) VALUES (?, ?) USING TTL ?")
            .unwrap()
            .id,
        p.id
    );
    let lwt = e
        .prepare(&ks, "UPDATE kv SET v = ? WHERE k = ? IF owner = ?")
        .unwrap();
    let cols: Vec<&str> = lwt
        .result
        .as_ref()
        .unwrap()
        .iter()
        .map(|s| s.2.as_str())
        .collect();
    assert_eq!(cols, vec!["[applied]", "owner"]);
    assert_eq!(lwt.pk_indexes, vec![1]);
}

#[test]
fn pages_and_consistency() {
    let (mut e, mut ks) = engine();
    fill(&mut e, &mut ks);
    let mut exec = Exec {
        consistency: 1,
        page_size: Some(2),
        ..Exec::default()
    };
    let mut seen = 0;
    loop {
        let Outcome::Rows(r) = e.query(&mut ks, "SELECT * FROM calls", &exec).unwrap() else {
            panic!("rows")
        };
        seen += r.rows.len();
        match r.paging_state {
            Some(s) => exec.paging_state = Some(s),
            None => break,
        }
    }
    assert_eq!(seen, 5);
    run(&mut e, &mut ks, "CREATE KEYSPACE three WITH replication = {'class': 'SimpleStrategy', 'replication_factor': 3}").unwrap();
    run(&mut e, &mut ks, "CREATE TABLE three.x (k int PRIMARY KEY)").unwrap();
    let quorum = Exec {
        consistency: 6,
        ..Exec::default()
    };
    let x = e
        .query(&mut ks, "SELECT * FROM three.x", &quorum)
        .err()
        .unwrap();
    assert_eq!(x.code, UNAVAILABLE);
    assert_eq!(x.message, "Cannot achieve consistency level LOCAL_QUORUM");
    assert!(e.query(&mut ks, "SELECT * FROM three.x", &one()).is_ok());
}

#[test]
fn the_schema_is_in_the_system_tables() {
    let (mut e, mut ks) = engine();
    let rows = run(
        &mut e,
        &mut ks,
        "SELECT column_name, kind, position FROM system_schema.columns \
         WHERE keyspace_name = 't' AND table_name = 'calls'",
    )
    .unwrap();
    let named: Vec<String> = rows
        .iter()
        .map(|r| String::from_utf8(r[0].clone().unwrap()).unwrap())
        .collect();
    assert_eq!(named, vec!["at", "bot", "day", "id", "note"]);
    let local = run(
        &mut e,
        &mut ks,
        "SELECT schema_version FROM system.local WHERE key='local'",
    )
    .unwrap();
    let before = local[0][0].clone();
    run(&mut e, &mut ks, "DROP TABLE kv").unwrap();
    let local = run(
        &mut e,
        &mut ks,
        "SELECT schema_version FROM system.local WHERE key='local'",
    )
    .unwrap();
    assert_ne!(local[0][0], before);
}

#[test]
fn deletes_rows_partitions_and_ranges() {
    let (mut e, mut ks) = engine();
    fill(&mut e, &mut ks);
    run(
        &mut e,
        &mut ks,
        "DELETE FROM calls WHERE bot = 7 AND day = 1 AND at < 20",
    )
    .unwrap();
    let rows = run(
        &mut e,
        &mut ks,
        "SELECT at FROM calls WHERE bot = 7 AND day = 1",
    )
    .unwrap();
    assert_eq!(
        rows.iter().map(|r| big(&r[0])).collect::<Vec<_>>(),
        vec![20, 30]
    );
    run(
        &mut e,
        &mut ks,
        "DELETE FROM calls WHERE bot = 7 AND day = 1 AND at = 30 AND id = 1",
    )
    .unwrap();
    run(
        &mut e,
        &mut ks,
        "DELETE FROM calls WHERE bot = 7 AND day = 2",
    )
    .unwrap();
    assert_eq!(
        run(&mut e, &mut ks, "SELECT at FROM calls").unwrap().len(),
        1
    );
    assert_eq!(
        err(&mut e, &mut ks, "DELETE FROM calls WHERE bot = 7"),
        "Missing mandatory PRIMARY KEY part day"
    );
    assert_eq!(
        err(
            &mut e,
            &mut ks,
            "DELETE FROM calls WHERE bot = 7 AND day = 1 AND note = 'n'"
        ),
        "Invalid where clause contains non PRIMARY KEY columns: note"
    );
    assert!(err(
        &mut e,
        &mut ks,
        "DELETE FROM calls WHERE bot = 7 AND day = 1 AND id = 1"
    )
    .starts_with("PRIMARY KEY column \"id\" cannot be restricted"));
}
