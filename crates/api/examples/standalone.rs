//! The API alone, without a switch: a store (SQLite file, or memory), one
//! customer with an API key and a domain, and a stand-in switch that
//! accepts account and group changes, refuses click-to-call and knows no
//! live call. For trying the API by hand and for schema-driven testing
//! (schemathesis) of `/v1.0/openapi.json` against a live server:
//!
//! ```text
//! cargo run -p api --example standalone -- 127.0.0.1:8080 [forkswitch.db]
//! curl -H 'Authorization: Bearer standalone-key' http://127.0.0.1:8080/v1.0/groupcalls
//! ```

use api::{
    ApiOptions, ApiState, BoxFuture, Snapshot, SwitchPort, Unavailable, WebhookOptions, Webhooks,
};
use records::{Customer, Domain, ExtensionRecord, Timestamp};
use std::sync::Arc;
use store::Store;
use switch::{Command, CommandOutcome};

/// The API key of the standalone customer.
const KEY: &str = "standalone-key";

struct NoSwitch;

impl SwitchPort for NoSwitch {
    fn command(&self, c: Command) -> BoxFuture<Result<CommandOutcome, Unavailable>> {
        let outcome = match c {
            Command::StartGroupcall(_) => {
                CommandOutcome::Refused("no switch in standalone mode".into())
            }
            Command::HangupGroupcall { .. } | Command::HangupCall { .. } => {
                CommandOutcome::NotFound
            }
            _ => CommandOutcome::Done,
        };
        Box::pin(async move { Ok(outcome) })
    }

    fn snapshot(&self) -> BoxFuture<Result<Snapshot, Unavailable>> {
        Box::pin(async { Ok(Snapshot::default()) })
    }
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let addr = args.next().unwrap_or_else(|| "127.0.0.1:8080".into());
    let db: Arc<dyn Store> = match args.next() {
        Some(path) => Arc::new(store::SqliteStore::open(path)?),
        None => Arc::new(store::MemoryStore::new()),
    };
    let customer = uuid::Uuid::from_u128(1);
    db.upsert_customer(&Customer {
        id: customer,
        name: "standalone".into(),
        api_keys: vec![KEY.into()],
    });
    db.upsert_domain(&Domain { name: "test".into(), aliases: vec![], customer_id: customer });
    let now = Timestamp::from_system(std::time::SystemTime::now());
    let ext = registrar::extension_with_password("test11", "test", "test11");
    db.replace_config_extensions(&[ExtensionRecord::from_config(ext, customer, now)]);
    db.flush()?;
    let webhooks = Webhooks::new(WebhookOptions::default(), tokio::runtime::Handle::current());
    webhooks.load(db.as_ref())?;
    let state = ApiState::new(db, Arc::new(NoSwitch), webhooks, ApiOptions::default());
    let listener = tokio::net::TcpListener::bind(&addr).await?;
    eprintln!("serving on http://{} (API key {KEY})", listener.local_addr()?);
    api::serve(listener, api::router(state), None, async {
        let _ = tokio::signal::ctrl_c().await;
    })
    .await?;
    Ok(())
}
