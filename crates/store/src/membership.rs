//! [`Membership`]: one node's place in a cluster of forkswitch nodes on one
//! PostgreSQL (issue 25). The node holds a lease in `cluster_nodes`,
//! renewed every heartbeat; it reads the live nodes and every stored
//! binding; and it reaps the nodes whose lease ran out: their live records
//! are closed (as a restarted node's are, `hangup`, `local`, `failed`) and
//! their bindings marked unreachable, in one transaction whose first
//! statement flips the dead node's row from `live` to `dead`, so exactly one
//! survivor reaps each death.
//!
//! Leases are read against PostgreSQL's own clock (`now()`), the one clock
//! every node shares: nodes on machines whose clocks differ still agree on
//! whose lease ran out. The store's other times are passed in, as
//! everywhere else in this crate.
//!
//! Synchronous, with a connection of its own: the caller runs it on a
//! thread of its own (the shell's cluster thread), never on the SIP thread.
//! A broken connection is made again on the next call.

use crate::db::{collect, one, Db, DbError, Value};
use crate::postgres::PgConn;
use crate::{Closed, StoreError};
use records::{Binding, Provisioning, Timestamp};
use std::time::Duration;

/// A live node as `cluster_nodes` holds it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NodeLease {
    /// Its `[cluster] node_id`.
    pub node_id: String,
    /// Its `[cluster] advertise` address, as it wrote it.
    pub advertise: String,
    /// Its run: one more each time it (re)joins.
    pub incarnation: i64,
}

/// A dead node, reaped by this one.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Reaped {
    /// Its id.
    pub node_id: String,
    /// Its records closed.
    pub closed: Closed,
    /// Its bindings marked unreachable.
    pub bindings: u64,
}

/// This node's lease and its view of the others (see the module doc).
pub struct Membership {
    conn: PgConn,
    node_id: String,
    advertise: String,
    lease: Duration,
    incarnation: i64,
}

impl std::fmt::Debug for Membership {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Membership")
            .field("node_id", &self.node_id)
            .field("incarnation", &self.incarnation)
            .finish_non_exhaustive()
    }
}

fn millis(d: Duration) -> i64 {
    i64::try_from(d.as_millis()).unwrap_or(i64::MAX)
}

impl Membership {
    /// Connects to the PostgreSQL at `url` (migrated already, by the
    /// node's store). Nothing is written until [`Membership::join`].
    pub fn connect(
        url: &str,
        node_id: &str,
        advertise: &str,
        lease: Duration,
    ) -> Result<Membership, StoreError> {
        let config: tokio_postgres::Config =
            url.parse().map_err(|e| StoreError::BadUrl(format!("{url}: {e}")))?;
        Ok(Membership {
            conn: PgConn::new(config)?,
            node_id: node_id.to_owned(),
            advertise: advertise.to_owned(),
            lease,
            incarnation: 0,
        })
    }

    /// Takes this node's id (back, after a restart: one incarnation more)
    /// with a fresh lease, and returns the cluster's secret, made of
    /// `fresh_secret` by the first node that ever joined. Bindings this node
    /// owned over UDP are reachable again (its address is back); those over
    /// a connection are not (the connection died with the previous run).
    pub fn join(&mut self, fresh_secret: &str) -> Result<String, StoreError> {
        let lease = millis(self.lease);
        let db: &mut dyn Db = &mut self.conn;
        crate::db::begin(db)?;
        let r = (|| -> Result<(String, i64), DbError> {
            db.execute(
                "INSERT INTO cluster_secret (id, secret) VALUES (1, ?1) ON CONFLICT (id) DO NOTHING",
                &[Value::Text(fresh_secret)],
            )?;
            let secret =
                one(db, "SELECT secret FROM cluster_secret WHERE id = 1", &[], "secret", |r| {
                    r.text(0)
                })?
                .unwrap_or_default();
            let incarnation = one(
                db,
                "INSERT INTO cluster_nodes \
                 (node_id, advertise, incarnation, state, lease_until, started_at) \
                 VALUES (?1, ?2, 1, 'live', now() + ?3::bigint * interval '1 millisecond', now()) \
                 ON CONFLICT (node_id) DO UPDATE SET advertise = EXCLUDED.advertise, \
                 incarnation = cluster_nodes.incarnation + 1, state = 'live', \
                 lease_until = EXCLUDED.lease_until, started_at = now() \
                 RETURNING incarnation",
                &[Value::Text(&self.node_id), Value::Text(&self.advertise), Value::Int(lease)],
                "cluster_nodes",
                |r| r.int(0),
            )?
            .unwrap_or(1);
            db.execute(
                "UPDATE bindings SET unreachable = 0 WHERE node_id = ?1 AND conn IS NULL",
                &[Value::Text(&self.node_id)],
            )?;
            Ok((secret, incarnation))
        })();
        let (secret, incarnation) = crate::apply::finish(db, r)?;
        self.incarnation = incarnation;
        Ok(secret)
    }

    /// This node's run, as [`Membership::join`] took it.
    pub fn incarnation(&self) -> i64 {
        self.incarnation
    }

    /// Renews the lease. `Ok(false)`: this run's lease had run out and
    /// another node reaped it (its records closed): join again.
    pub fn renew(&mut self) -> Result<bool, StoreError> {
        let n = self.conn.execute(
            "UPDATE cluster_nodes SET lease_until = now() + ?3::bigint * interval '1 millisecond' \
             WHERE node_id = ?1 AND incarnation = ?2 AND state = 'live'",
            &[
                Value::Text(&self.node_id),
                Value::Int(self.incarnation),
                Value::Int(millis(self.lease)),
            ],
        )?;
        Ok(n == 1)
    }

    /// The nodes whose lease runs now (this one included), by id.
    pub fn live(&mut self) -> Result<Vec<NodeLease>, StoreError> {
        Ok(collect(
            &mut self.conn,
            "SELECT node_id, advertise, incarnation FROM cluster_nodes \
             WHERE state = 'live' AND lease_until > now() ORDER BY node_id",
            &[],
            "cluster_nodes",
            |r| {
                Ok(NodeLease { node_id: r.text(0)?, advertise: r.text(1)?, incarnation: r.int(2)? })
            },
        )?)
    }

    /// Reaps every other node whose lease ran out: marks it dead, closes
    /// its live records at `at` and makes its bindings unreachable.
    pub fn reap(&mut self, at: Timestamp) -> Result<Vec<Reaped>, StoreError> {
        let db: &mut dyn Db = &mut self.conn;
        crate::db::begin(db)?;
        let r = (|| -> Result<Vec<Reaped>, DbError> {
            let dead = collect(
                db,
                "UPDATE cluster_nodes SET state = 'dead' \
                 WHERE state = 'live' AND lease_until <= now() AND node_id <> ?1 \
                 RETURNING node_id",
                &[Value::Text(&self.node_id)],
                "cluster_nodes",
                |r| r.text(0),
            )?;
            let mut reaped = Vec::new();
            for node_id in dead {
                let closed = crate::apply::close_live_in(db, at, Some(&node_id))?;
                let bindings = db.execute(
                    "UPDATE bindings SET unreachable = 1 WHERE node_id = ?1",
                    &[Value::Text(&node_id)],
                )?;
                reaped.push(Reaped { node_id, closed, bindings });
            }
            Ok(reaped)
        })();
        Ok(crate::apply::finish(db, r)?)
    }

    /// Accounts and ring groups as stored now.
    pub fn provisioned(&mut self) -> Result<Provisioning, StoreError> {
        let db: &mut dyn Db = &mut self.conn;
        Ok(Provisioning {
            customers: crate::reads::customers(db)?,
            domains: crate::reads::domains(db)?,
            extensions: crate::reads::extensions(db)?,
            ring_groups: crate::reads::ringgroups(db)?,
        })
    }

    /// Every unexpired binding, whatever node made it (expired ones are
    /// deleted first).
    pub fn bindings(&mut self, now: Timestamp) -> Result<Vec<Binding>, StoreError> {
        Ok(crate::reads::load_bindings(&mut self.conn, now)?)
    }
}
