mod common;
use std::time::Duration;

use common::*;
use fe2o3_amqp::sasl_profile::SaslProfile;
use fe2o3_amqp::{Connection, Session};
use tokio::time::{timeout, Instant};

#[tokio::test(start_paused = true)]
async fn probe_paused() {
    let emulator = emulator().await;
    let t0 = Instant::now();
    let addr = emulator.local_addr();
    let url = format!("amqp://{}:{}", addr.ip(), addr.port());
    let r = Connection::builder()
        .container_id("emulator-test")
        .sasl_profile(SaslProfile::Anonymous)
        .open(url.as_str()).await;
    println!("open {:?} after {:?}", r.is_ok(), t0.elapsed());
    let mut c = r.unwrap();
    let s = Session::begin(&mut c).await;
    println!("begin {:?} after {:?}", s.as_ref().err(), t0.elapsed());
    let _ = timeout(Duration::from_secs(1), async {}).await;
}
