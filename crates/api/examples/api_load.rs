//! A fixed-rate HTTP load for the API benchmark (tests/bench/api.sh):
//! `GET URL` with `Authorization: Bearer KEY` at RATE requests per second
//! for SECS seconds (open loop: a request is sent on schedule whether or
//! not the previous one came back), then prints
//! `api_requests=N ok=M errors=E p50_ms=.. p99_ms=.. max_ms=..`.
//!
//! Also: `api_load seed DB CUSTOMER N` writes N groupcalls of CUSTOMER into
//! DB (a `[database] url`, `sqlite:PATH` or `postgres://...`, or a SQLite
//! file path; three share each tm_create, as ties do in real traffic)
//! before the switch starts.

use records::{Address, AddressType, Groupcall, GroupcallStatus, Timestamp, NIL};
use std::sync::Arc;
use std::time::{Duration, Instant};
use uuid::Uuid;

fn seed(db: &str, customer: &str, n: usize) -> Result<(), Box<dyn std::error::Error>> {
    let url = if store::parse_url(db).is_ok() { db.to_owned() } else { format!("sqlite:{db}") };
    let s = store::open(&url, store::Options::default())?;
    let customer = Uuid::parse_str(customer)?;
    let base = 1_700_000_000_000_000i64;
    for i in 0..n {
        let t = Timestamp::from_micros(base + (i / 3) as i64 * 1000);
        let src = Address::new(AddressType::Tel, "+15550000000");
        let g = Groupcall {
            id: Uuid::from_u128(0xbe_0000_0000 + i as u128),
            customer_id: customer,
            source: src,
            destinations: vec![Address::new(AddressType::Endpoint, "test11@test")],
            ring_method: Default::default(),
            answer_method: Default::default(),
            status: GroupcallStatus::Hangup,
            answer_call_id: NIL,
            answer_groupcall_id: NIL,
            call_ids: vec![Uuid::from_u128(0xca_0000_0000 + i as u128)],
            groupcall_ids: Vec::new(),
            master_call_id: NIL,
            master_groupcall_id: NIL,
            tm_create: t,
            tm_update: t,
            tm_delete: Timestamp::NOT_YET,
            node_id: String::new(),
        };
        s.upsert_groupcall(&g);
        if i % 10_000 == 9_999 {
            s.flush()?;
        }
    }
    s.flush()?;
    println!("seeded {n} groupcalls");
    Ok(())
}

async fn load(url: String, key: String, rate: f64, secs: f64) {
    let client = reqwest::Client::builder().no_proxy().build().unwrap_or_default();
    let client = Arc::new(client);
    let total = (rate * secs) as usize;
    let start = Instant::now();
    let mut tasks = Vec::with_capacity(total);
    for i in 0..total {
        let due = start + Duration::from_secs_f64(i as f64 / rate);
        tokio::time::sleep_until(due.into()).await;
        let (c, url, key) = (client.clone(), url.clone(), key.clone());
        tasks.push(tokio::spawn(async move {
            let t = Instant::now();
            let ok = match c.get(&url).bearer_auth(&key).send().await {
                Ok(r) => r.status().is_success() && r.bytes().await.is_ok(),
                Err(_) => false,
            };
            (ok, t.elapsed())
        }));
    }
    let mut lat = Vec::with_capacity(total);
    let mut errors = 0;
    for t in tasks {
        match t.await {
            Ok((true, d)) => lat.push(d),
            _ => errors += 1,
        }
    }
    lat.sort();
    let ms = |q: f64| {
        lat.get(((lat.len() as f64 * q) as usize).min(lat.len().saturating_sub(1)))
            .map_or(f64::NAN, |d| d.as_secs_f64() * 1000.0)
    };
    println!(
        "api_requests={total} ok={} errors={errors} p50_ms={:.2} p99_ms={:.2} max_ms={:.2}",
        lat.len(),
        ms(0.5),
        ms(0.99),
        lat.last().map_or(f64::NAN, |d| d.as_secs_f64() * 1000.0)
    );
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.first().map(String::as_str) == Some("seed") {
        let n = args.get(3).and_then(|n| n.parse().ok()).unwrap_or(100_000);
        return seed(&args[1], &args[2], n);
    }
    let [url, key, rate, secs] = args.as_slice() else {
        eprintln!("usage: api_load URL KEY RATE SECS | api_load seed DB CUSTOMER N");
        std::process::exit(2);
    };
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(1).enable_all().build()?;
    rt.block_on(load(url.clone(), key.clone(), rate.parse()?, secs.parse()?));
    Ok(())
}
