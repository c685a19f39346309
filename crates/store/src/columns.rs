//! Groupcall and call records as typed columns, the same in both databases:
//! every scalar field is a column (statuses and kinds as their JSON names,
//! ids as UUIDs, times as times), the source and destination addresses are
//! five columns each, and the lists (`destinations`, `call_ids`,
//! `groupcall_ids`) are JSON arrays (`jsonb` in PostgreSQL).

use crate::db::Row;
use records::{
    Address, AddressType, AnswerMethod, Call, CallStatus, Direction, Groupcall, GroupcallStatus,
    HangupBy, HangupReason, RingMethod, Timestamp,
};
use serde::de::IntoDeserializer;
use uuid::Uuid;

/// One column value of a record.
#[derive(Clone, Debug, PartialEq)]
pub(crate) enum Col<'a> {
    Uuid(Uuid),
    Text(&'a str),
    Time(Timestamp),
    Json(String),
}

/// The columns of `groupcalls`, in the order of [`groupcall_cols`].
pub(crate) const GROUPCALL_COLUMNS: [&str; 21] = [
    "id",
    "customer_id",
    "source_type",
    "source_target",
    "source_target_name",
    "source_name",
    "source_detail",
    "destinations",
    "ring_method",
    "answer_method",
    "status",
    "answer_call_id",
    "answer_groupcall_id",
    "call_ids",
    "groupcall_ids",
    "master_call_id",
    "master_groupcall_id",
    "tm_create",
    "tm_update",
    "tm_delete",
    "node_id",
];

/// The columns of `calls`, in the order of [`call_cols`].
pub(crate) const CALL_COLUMNS: [&str; 28] = [
    "id",
    "customer_id",
    "groupcall_id",
    "source_type",
    "source_target",
    "source_target_name",
    "source_name",
    "source_detail",
    "destination_type",
    "destination_target",
    "destination_target_name",
    "destination_name",
    "destination_detail",
    "direction",
    "status",
    "hangup_by",
    "hangup_reason",
    "sip_call_id",
    "tm_ringing",
    "tm_progressing",
    "tm_hangup",
    "tm_create",
    "tm_update",
    "tm_delete",
    "node_id",
    "relay_node_id",
    "media_anchor",
    "media_address",
];

fn json(v: &impl serde::Serialize) -> String {
    serde_json::to_string(v).unwrap_or_else(|_| "[]".into())
}

fn address(a: &Address) -> [Col<'_>; 5] {
    [
        Col::Text(address_type(a.kind)),
        Col::Text(&a.target),
        Col::Text(&a.target_name),
        Col::Text(&a.name),
        Col::Text(&a.detail),
    ]
}

/// A groupcall's column values.
pub(crate) fn groupcall_cols(g: &Groupcall) -> [Col<'_>; 21] {
    let [st, sg, sn, sname, sd] = address(&g.source);
    [
        Col::Uuid(g.id),
        Col::Uuid(g.customer_id),
        st,
        sg,
        sn,
        sname,
        sd,
        Col::Json(json(&g.destinations)),
        Col::Text(ring_method(g.ring_method)),
        Col::Text(answer_method(g.answer_method)),
        Col::Text(groupcall_status(g.status)),
        Col::Uuid(g.answer_call_id),
        Col::Uuid(g.answer_groupcall_id),
        Col::Json(json(&g.call_ids)),
        Col::Json(json(&g.groupcall_ids)),
        Col::Uuid(g.master_call_id),
        Col::Uuid(g.master_groupcall_id),
        Col::Time(g.tm_create),
        Col::Time(g.tm_update),
        Col::Time(g.tm_delete),
        Col::Text(&g.node_id),
    ]
}

/// A call's column values.
pub(crate) fn call_cols(c: &Call) -> [Col<'_>; 28] {
    let [st, sg, sn, sname, sd] = address(&c.source);
    let [dt, dg, dn, dname, dd] = address(&c.destination);
    [
        Col::Uuid(c.id),
        Col::Uuid(c.customer_id),
        Col::Uuid(c.groupcall_id),
        st,
        sg,
        sn,
        sname,
        sd,
        dt,
        dg,
        dn,
        dname,
        dd,
        Col::Text(direction(c.direction)),
        Col::Text(call_status(c.status)),
        Col::Text(hangup_by(c.hangup_by)),
        Col::Text(hangup_reason(c.hangup_reason)),
        Col::Text(&c.sip_call_id),
        Col::Time(c.tm_ringing),
        Col::Time(c.tm_progressing),
        Col::Time(c.tm_hangup),
        Col::Time(c.tm_create),
        Col::Time(c.tm_update),
        Col::Time(c.tm_delete),
        Col::Text(&c.node_id),
        Col::Text(&c.relay_node_id),
        Col::Text(&c.media_anchor),
        Col::Text(&c.media_address),
    ]
}

/// The column values of a set's groupcalls and calls (in key order), for
/// a bulk upsert.
pub(crate) type Rows<'a> = (Vec<[Col<'a>; 21]>, Vec<[Col<'a>; 28]>);

/// [`Rows`] of `set`.
pub(crate) fn rows(set: &crate::window::RecordSet) -> Rows<'_> {
    (
        set.groupcalls.values().map(|g| groupcall_cols(g)).collect(),
        set.calls.values().map(|c| call_cols(c)).collect(),
    )
}

/// An enum from its JSON name (serde's, aliases included).
fn named<T: serde::de::DeserializeOwned>(r: &dyn Row, i: usize) -> Result<T, String> {
    let text = r.text(i)?;
    let de: serde::de::value::StringDeserializer<serde::de::value::Error> =
        text.clone().into_deserializer();
    T::deserialize(de).map_err(|e| format!("column {i}: {text:?}: {e}"))
}

fn list<T: serde::de::DeserializeOwned>(r: &dyn Row, i: usize) -> Result<T, String> {
    serde_json::from_str(&r.json(i)?).map_err(|e| format!("column {i}: {e}"))
}

fn address_at(r: &dyn Row, i: usize) -> Result<Address, String> {
    Ok(Address {
        kind: named(r, i)?,
        target: r.text(i + 1)?,
        target_name: r.text(i + 2)?,
        name: r.text(i + 3)?,
        detail: r.text(i + 4)?,
    })
}

/// A groupcall from a row of [`GROUPCALL_COLUMNS`].
pub(crate) fn groupcall_from_row(r: &dyn Row) -> Result<Groupcall, String> {
    let id = r.uuid(0)?;
    let ctx = |e: String| format!("groupcall {id}: {e}");
    (|| {
        Ok(Groupcall {
            id,
            customer_id: r.uuid(1)?,
            source: address_at(r, 2)?,
            destinations: list(r, 7)?,
            ring_method: named(r, 8)?,
            answer_method: named(r, 9)?,
            status: named(r, 10)?,
            answer_call_id: r.uuid(11)?,
            answer_groupcall_id: r.uuid(12)?,
            call_ids: list(r, 13)?,
            groupcall_ids: list(r, 14)?,
            master_call_id: r.uuid(15)?,
            master_groupcall_id: r.uuid(16)?,
            tm_create: r.time(17)?,
            tm_update: r.time(18)?,
            tm_delete: r.time(19)?,
            node_id: r.text(20)?,
        })
    })()
    .map_err(ctx)
}

/// A call from a row of [`CALL_COLUMNS`].
pub(crate) fn call_from_row(r: &dyn Row) -> Result<Call, String> {
    let id = r.uuid(0)?;
    let ctx = |e: String| format!("call {id}: {e}");
    (|| {
        Ok(Call {
            id,
            customer_id: r.uuid(1)?,
            groupcall_id: r.uuid(2)?,
            source: address_at(r, 3)?,
            destination: address_at(r, 8)?,
            direction: named(r, 13)?,
            status: named(r, 14)?,
            hangup_by: named(r, 15)?,
            hangup_reason: named(r, 16)?,
            sip_call_id: r.text(17)?,
            tm_ringing: r.time(18)?,
            tm_progressing: r.time(19)?,
            tm_hangup: r.time(20)?,
            tm_create: r.time(21)?,
            tm_update: r.time(22)?,
            tm_delete: r.time(23)?,
            node_id: r.text(24)?,
            relay_node_id: r.text(25)?,
            media_anchor: r.text(26)?,
            media_address: r.text(27)?,
        })
    })()
    .map_err(ctx)
}

// The JSON names of the enums (what serde writes; checked in the tests).

pub(crate) fn address_type(v: AddressType) -> &'static str {
    match v {
        AddressType::Endpoint => "endpoint",
        AddressType::Tel => "tel",
        AddressType::Sip => "sip",
        AddressType::Groupcall => "groupcall",
    }
}

pub(crate) fn ring_method(v: RingMethod) -> &'static str {
    match v {
        RingMethod::RingAll => "ring_all",
        RingMethod::Linear => "linear",
        RingMethod::MemoryHunt => "memory_hunt",
        RingMethod::RoundRobin => "round_robin",
        RingMethod::LeastRecent => "least_recent",
        RingMethod::Random => "random",
    }
}

pub(crate) fn answer_method(v: AnswerMethod) -> &'static str {
    match v {
        AnswerMethod::HangupOthers => "hangup_others",
    }
}

pub(crate) fn groupcall_status(v: GroupcallStatus) -> &'static str {
    match v {
        GroupcallStatus::Progressing => "progressing",
        GroupcallStatus::Hangingup => "hangingup",
        GroupcallStatus::Hangup => "hangup",
    }
}

pub(crate) fn call_status(v: CallStatus) -> &'static str {
    match v {
        CallStatus::Dialing => "dialing",
        CallStatus::Ringing => "ringing",
        CallStatus::Progressing => "progressing",
        CallStatus::Canceling => "canceling",
        CallStatus::Terminating => "terminating",
        CallStatus::Hangup => "hangup",
    }
}

pub(crate) fn direction(v: Direction) -> &'static str {
    match v {
        Direction::Incoming => "incoming",
        Direction::Outgoing => "outgoing",
    }
}

pub(crate) fn hangup_by(v: HangupBy) -> &'static str {
    match v {
        HangupBy::None => "",
        HangupBy::Local => "local",
        HangupBy::Remote => "remote",
    }
}

pub(crate) fn hangup_reason(v: HangupReason) -> &'static str {
    match v {
        HangupReason::None => "",
        HangupReason::Normal => "normal",
        HangupReason::Failed => "failed",
        HangupReason::Busy => "busy",
        HangupReason::Cancel => "cancel",
        HangupReason::Timeout => "timeout",
        HangupReason::Noanswer => "noanswer",
        HangupReason::Dialout => "dialout",
    }
}

/// `SELECT` lists and statements built from the column lists once.
pub(crate) mod sql {
    use super::{CALL_COLUMNS, GROUPCALL_COLUMNS};
    use std::sync::OnceLock;

    fn cached(cell: &'static OnceLock<String>, f: impl FnOnce() -> String) -> &'static str {
        cell.get_or_init(f).as_str()
    }

    /// `table`'s columns, comma-separated.
    pub(crate) fn columns(table: &str) -> &'static str {
        static G: OnceLock<String> = OnceLock::new();
        static C: OnceLock<String> = OnceLock::new();
        match table {
            "groupcalls" => cached(&G, || GROUPCALL_COLUMNS.join(", ")),
            _ => cached(&C, || CALL_COLUMNS.join(", ")),
        }
    }

    /// One record by id.
    pub(crate) fn by_id(table: &str) -> &'static str {
        static G: OnceLock<String> = OnceLock::new();
        static C: OnceLock<String> = OnceLock::new();
        let f = || format!("SELECT {} FROM {table} WHERE id = ?1", columns(table));
        match table {
            "groupcalls" => cached(&G, f),
            _ => cached(&C, f),
        }
    }

    /// A page of a customer's records not deleted, newest first. The
    /// row-value comparison walks the `(customer_id, tm_create DESC, id
    /// DESC)` index from the cursor: no record outside the page is read.
    pub(crate) fn page(table: &str) -> &'static str {
        static G: OnceLock<String> = OnceLock::new();
        static C: OnceLock<String> = OnceLock::new();
        let f = || {
            format!(
                "SELECT {} FROM {table} WHERE customer_id = ?1 AND tm_delete = ?2 \
                 AND (tm_create, id) < (?3, ?4) ORDER BY tm_create DESC, id DESC LIMIT ?5",
                columns(table)
            )
        };
        match table {
            "groupcalls" => cached(&G, f),
            _ => cached(&C, f),
        }
    }

    /// `ON CONFLICT (id) DO UPDATE SET ...` of an upsert into `table`: every
    /// column from the new row, but a record once deleted stays deleted.
    pub(crate) fn on_conflict(table: &str, cols: &[&str], not_yet: &str) -> String {
        let set: Vec<String> = cols
            .iter()
            .filter(|c| **c != "id")
            .map(|c| match *c {
                "tm_delete" => format!(
                    "tm_delete = CASE WHEN {table}.tm_delete <> {not_yet} THEN {table}.tm_delete \
                     ELSE excluded.tm_delete END"
                ),
                c => format!("{c} = excluded.{c}"),
            })
            .collect();
        format!(" ON CONFLICT (id) DO UPDATE SET {}", set.join(", "))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn serde_name(v: impl serde::Serialize) -> String {
        serde_json::to_value(v).expect("json").as_str().expect("a string").to_owned()
    }

    #[test]
    fn names_are_serdes() {
        for v in [AddressType::Endpoint, AddressType::Tel, AddressType::Sip, AddressType::Groupcall]
        {
            assert_eq!(address_type(v), serde_name(v));
        }
        use RingMethod::*;
        for v in [RingAll, Linear, MemoryHunt, RoundRobin, LeastRecent, Random] {
            assert_eq!(ring_method(v), serde_name(v));
        }
        assert_eq!(
            answer_method(AnswerMethod::HangupOthers),
            serde_name(AnswerMethod::HangupOthers)
        );
        for v in [GroupcallStatus::Progressing, GroupcallStatus::Hangingup, GroupcallStatus::Hangup]
        {
            assert_eq!(groupcall_status(v), serde_name(v));
        }
        use CallStatus::*;
        for v in [Dialing, Ringing, CallStatus::Progressing, Canceling, Terminating, Hangup] {
            assert_eq!(call_status(v), serde_name(v));
        }
        for v in [Direction::Incoming, Direction::Outgoing] {
            assert_eq!(direction(v), serde_name(v));
        }
        for v in [HangupBy::None, HangupBy::Local, HangupBy::Remote] {
            assert_eq!(hangup_by(v), serde_name(v));
        }
        use HangupReason as R;
        for v in
            [R::None, R::Normal, R::Failed, R::Busy, R::Cancel, R::Timeout, R::Noanswer, R::Dialout]
        {
            assert_eq!(hangup_reason(v), serde_name(v));
        }
    }
}
