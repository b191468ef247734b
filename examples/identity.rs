//! A buffered producer authenticated by Microsoft Entra ID through `azure_identity`.
//!
//! ```text
//! az login
//! EVENTHUBS_NAMESPACE=my-namespace.servicebus.windows.net EVENTHUBS_NAME=telemetry \
//!     cargo run --example identity [-- --events N]
//! ```
//!
//! `DeveloperToolsCredential` takes the token of the Azure CLI (`az login`) or the Azure
//! Developer CLI (`azd auth login`); the signed-in identity needs the "Azure Event Hubs Data
//! Sender" role on the namespace or the event hub. In a deployed service, build the producer
//! with `azure_identity::ManagedIdentityCredential` instead (it calls the platform's identity
//! endpoint over HTTP, so it needs `azure_identity` with its default features, which bring an
//! HTTP client). Any `azure_core::credentials::TokenCredential` works the same way: the
//! producer asks it for a token for `https://eventhubs.azure.net/.default` and renews the
//! token before it expires.
//!
//! There is no emulator fallback: Entra ID tokens need a real namespace. Without
//! `EVENTHUBS_NAMESPACE` the example says how to run it and exits.

use std::env;

use azure_identity::DeveloperToolsCredential;
use eventhubs_buffered::{BufferedProducerClient, EnqueueOptions, EventData};

type BoxError = Box<dyn std::error::Error>;

/// The command line.
#[derive(clap::Parser)]
#[command(about = "Publish with an Entra ID credential (az login) to a real namespace")]
struct Args {
    /// How many events to publish.
    #[arg(long, default_value_t = 100, value_parser = clap::value_parser!(u32).range(1..))]
    events: u32,
}

#[tokio::main]
async fn main() -> Result<(), BoxError> {
    let args: Args = clap::Parser::parse();
    let (Ok(namespace), Ok(eventhub)) =
        (env::var("EVENTHUBS_NAMESPACE"), env::var("EVENTHUBS_NAME"))
    else {
        println!(
            "set EVENTHUBS_NAMESPACE (e.g. my-namespace.servicebus.windows.net) and EVENTHUBS_NAME, \
             sign in with `az login`, and run again; see the comment at the top of examples/identity.rs"
        );
        return Ok(());
    };
    let credential = DeveloperToolsCredential::new(None)?;
    let producer = BufferedProducerClient::with_credential(&namespace, &eventhub, credential)
        .on_send_failed(|context| async move {
            eprintln!("{} events failed: {}", context.events.len(), context.error);
        })
        .build()?;
    for i in 0..args.events {
        producer
            .enqueue_event(
                EventData::from(format!("event {i}")),
                EnqueueOptions::default(),
            )
            .await?;
    }
    producer.close().await?;
    let total = producer.metrics().total;
    println!(
        "published {} of {} events to {namespace}/{eventhub}",
        total.published, total.enqueued
    );
    Ok(())
}
