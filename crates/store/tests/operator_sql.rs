//! The README's operator SQL (between its `operator-sql` markers), run
//! word for word on SQLite and on PostgreSQL over the same call records:
//! both answer the same rows.

use records::{
    Address, AddressType, Call, CallStatus, Direction, HangupBy, HangupReason, Timestamp, NIL,
};
use std::time::Duration;
use store::{Options, PgStore, SqliteStore, Store};
use uuid::Uuid;

const CUSTOMER: &str = "5e4a0680-804e-11ec-8477-2fea5968d85b";

/// The queries of the README, in order.
fn readme_queries() -> Vec<String> {
    let readme = include_str!("../../../README.md");
    let block = readme
        .split("<!-- operator-sql -->")
        .nth(1)
        .and_then(|b| b.split("<!-- /operator-sql -->").next())
        .expect("README.md has an operator-sql block");
    let sql: String = block
        .lines()
        .filter(|l| !l.starts_with("```") && !l.starts_with("--"))
        .collect::<Vec<_>>()
        .join("\n");
    sql.split(';').map(|q| q.trim().to_owned()).filter(|q| !q.is_empty()).collect()
}

fn at(day: u32, hour: i64) -> Timestamp {
    // 2024-05-01 00:00:00 UTC, plus days and hours.
    Timestamp::from_micros(1_714_521_600_000_000 + (i64::from(day - 1) * 24 + hour) * 3_600_000_000)
}

/// An ended call created on May `day`, 2024.
fn call(day: u32, direction: Direction, to: (AddressType, &str), reason: HangupReason) -> Call {
    let t = at(day, 10);
    Call {
        direction,
        status: CallStatus::Hangup,
        hangup_by: HangupBy::Remote,
        hangup_reason: reason,
        tm_hangup: Timestamp::from_micros(t.micros() + 5_000_000),
        tm_update: Timestamp::from_micros(t.micros() + 5_000_000),
        ..Call::dialing(
            Uuid::new_v4(),
            Uuid::parse_str(CUSTOMER).expect("uuid"),
            Address::new(AddressType::Tel, "+15551234567"),
            Address::new(to.0, to.1),
            t,
        )
    }
}

fn records() -> Vec<Call> {
    use Direction::*;
    use HangupReason::*;
    let group = (AddressType::Groupcall, "800@test");
    let mut v = vec![
        call(1, Incoming, group, Busy),
        call(1, Incoming, group, Busy),
        call(1, Incoming, group, Normal),
        call(2, Incoming, group, Busy),
        call(1, Outgoing, (AddressType::Endpoint, "test11@test"), Noanswer),
        call(1, Outgoing, (AddressType::Endpoint, "test11@test"), Busy),
        call(2, Outgoing, (AddressType::Endpoint, "test12@test"), Noanswer),
        call(2, Outgoing, (AddressType::Endpoint, "test12@test"), Normal),
        call(3, Outgoing, (AddressType::Endpoint, "test13@test"), Failed),
        call(9, Outgoing, (AddressType::Endpoint, "test13@test"), Failed),
    ];
    // Another customer's call, and one of April 30th.
    v.push(Call { customer_id: Uuid::new_v4(), ..call(1, Incoming, group, Busy) });
    v.push(Call { tm_create: at(1, -1), ..call(1, Incoming, group, Busy) });
    let _ = NIL;
    v
}

/// What the README says each query answers on [`records`], as
/// `|`-separated rows.
const EXPECTED: [&str; 3] = [
    "3",
    "2024-05-01|busy|2\n2024-05-01|normal|1\n2024-05-02|busy|1",
    "test11@test|2\ntest12@test|1\ntest13@test|1",
];

fn write(s: &dyn Store) {
    for c in records() {
        s.upsert_call(&c);
    }
    s.flush().expect("flush");
}

fn sqlite_rows(conn: &rusqlite::Connection, sql: &str) -> String {
    let mut stmt = conn.prepare(sql).expect("prepare");
    let n = stmt.column_count();
    let rows = stmt
        .query_map([], |r| {
            let cols: Vec<String> = (0..n)
                .map(|i| match r.get_ref(i).expect("col") {
                    rusqlite::types::ValueRef::Integer(i) => i.to_string(),
                    rusqlite::types::ValueRef::Text(t) => String::from_utf8_lossy(t).into_owned(),
                    other => format!("{other:?}"),
                })
                .collect();
            Ok(cols.join("|"))
        })
        .expect("query")
        .collect::<Result<Vec<_>, _>>()
        .expect("rows");
    rows.join("\n")
}

#[test]
fn readme_queries_answer_the_same_on_sqlite_and_postgres() {
    let queries = readme_queries();
    assert_eq!(queries.len(), 3, "{queries:#?}");
    let opts = || Options { max_delay: Duration::ZERO, ..Options::default() };

    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("forkswitch.db");
    write(&SqliteStore::open_with(&path, opts()).expect("sqlite"));
    let conn = rusqlite::Connection::open(&path).expect("open");

    let cluster = pgcluster::shared();
    let url = cluster.database();
    write(&PgStore::open_with(&url, opts()).expect("postgres"));
    let db = url.rsplit('/').next().expect("db name");

    for (q, want) in queries.iter().zip(EXPECTED) {
        assert_eq!(sqlite_rows(&conn, q), want, "SQLite: {q}");
        assert_eq!(cluster.psql_in(db, q).trim_end(), want, "PostgreSQL: {q}");
    }
}
