//! The sandbox's CQL face: any statement text against a node with a table, as QUERY and as
//! PREPARE; and any bytes as a frame body of each opcode.
#![no_main]

use std::sync::{Mutex, OnceLock};

fn engine() -> &'static Mutex<sandbox_cql::engine::Engine> {
    static E: OnceLock<Mutex<sandbox_cql::engine::Engine>> = OnceLock::new();
    E.get_or_init(|| {
        let mut e = sandbox_cql::engine::Engine::new("127.0.0.1".parse().expect("an address"));
        let mut ks = None;
        let one = sandbox_cql::engine::Exec {
            consistency: 1,
            ..Default::default()
        };
        for cql in [
            "CREATE KEYSPACE f WITH replication = {'class': 'SimpleStrategy', 'replication_factor': 1}",
            "CREATE TABLE f.t (a bigint, b int, c text, d uuid, e boolean, s set<text>, \
             PRIMARY KEY ((a), b, c)) WITH CLUSTERING ORDER BY (b DESC)",
            "INSERT INTO f.t (a, b, c, e) VALUES (1, 2, 'x', true)",
        ] {
            e.query(&mut ks, cql, &one).expect("the fuzz schema");
        }
        Mutex::new(e)
    })
}

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let Some((&op, rest)) = data.split_first() else {
        return;
    };
    let mut e = engine().lock().unwrap_or_else(|p| p.into_inner());
    let mut ks = Some("f".to_owned());
    if op % 2 == 0 {
        let text = String::from_utf8_lossy(rest);
        let exec = sandbox_cql::engine::Exec {
            consistency: 1,
            page_size: Some(3),
            ..Default::default()
        };
        let _ = e.query(&mut ks, &text, &exec);
        if let Ok(p) = e.prepare(&ks, &text) {
            let _ = e.execute(&mut ks, &p.id, &exec);
        }
    } else {
        drop(e);
        let _ = sandbox_cql::fuzz_frame(op >> 1, rest);
    }
});
