//! Making a [`BufferedProducerClient`]: the constructors that name the event hub and the
//! credential, and the builder that takes the options and the handlers.

use std::future::Future;
use std::sync::Arc;

use azure_core::credentials::TokenCredential;

use super::client::BufferedProducerClient;
use super::context::{SendFailedContext, SendSucceededContext};
use super::handler::{
    boxed_failed, boxed_succeeded, BufferedProducerHandler, ClosureHandler, DynHandler, FailedFn,
    SucceededFn,
};
use super::options::BufferedProducerOptions;
use super::reporter::Reporters;
use super::sender::{BatchSender, SharedProducer};
use crate::auth::{SasCredential, SharedAccessKey};
use crate::error::{Error, ErrorKind, Result};
use crate::producer::ProducerClient;

enum Credentials {
    ConnectionString {
        connection_string: String,
        eventhub: Option<String>,
    },
    TokenCredential {
        namespace: String,
        eventhub: String,
        credential: Arc<dyn TokenCredential>,
    },
    /// The application's own client, whose connection the buffered producer shares.
    Shared(ProducerClient),
    Key {
        namespace: String,
        eventhub: String,
        key: SharedAccessKey,
    },
    Signature {
        namespace: String,
        eventhub: String,
        credential: SasCredential,
    },
}

/// Builds a [`BufferedProducerClient`]. A failure handler is required.
pub struct BufferedProducerBuilder {
    credentials: Credentials,
    options: BufferedProducerOptions,
    handler: Option<Arc<dyn DynHandler>>,
    succeeded: Option<Box<SucceededFn>>,
    failed: Option<Box<FailedFn>>,
}

impl std::fmt::Debug for BufferedProducerBuilder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BufferedProducerBuilder")
            .field("options", &self.options)
            .field(
                "has_handler",
                &(self.handler.is_some() || self.failed.is_some()),
            )
            .finish()
    }
}

impl BufferedProducerBuilder {
    /// Sets every option at once.
    pub fn options(mut self, options: BufferedProducerOptions) -> Self {
        self.options = options;
        self
    }

    /// Registers a handler for both outcomes.
    pub fn handler(mut self, handler: impl BufferedProducerHandler) -> Self {
        self.handler = Some(Arc::new(handler));
        self
    }

    /// Registers a closure called with every published batch.
    pub fn on_send_succeeded<F, Fut>(mut self, f: F) -> Self
    where
        F: Fn(SendSucceededContext) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = ()> + Send + 'static,
    {
        self.succeeded = Some(boxed_succeeded(f));
        self
    }

    /// Registers a closure called with every batch (or event) that was not published.
    pub fn on_send_failed<F, Fut>(mut self, f: F) -> Self
    where
        F: Fn(SendFailedContext) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = ()> + Send + 'static,
    {
        self.failed = Some(boxed_failed(f));
        self
    }

    /// Checks the options and makes the producer. It connects on the first enqueue.
    pub fn build(self) -> Result<BufferedProducerClient> {
        self.options.validate()?;
        let handler: Arc<dyn DynHandler> = match (self.handler, self.failed) {
            (Some(_), Some(_)) => {
                return Err(Error::new(
                    ErrorKind::InvalidArgument,
                    "register either a handler or closures, not both",
                ))
            }
            (Some(handler), None) => {
                if self.succeeded.is_some() {
                    return Err(Error::new(
                        ErrorKind::InvalidArgument,
                        "register either a handler or closures, not both",
                    ));
                }
                handler
            }
            (None, Some(failed)) => Arc::new(ClosureHandler {
                succeeded: self.succeeded,
                failed,
            }),
            (None, None) => {
                return Err(Error::new(
                    ErrorKind::InvalidArgument,
                    "a failure handler is required: register one with on_send_failed or handler, so that no failed event goes unnoticed",
                ))
            }
        };
        let mut client_options = self.options.client.clone();
        client_options.idempotent_partitions = self.options.enable_idempotent_retries;
        if let Credentials::Shared(producer) = self.credentials {
            if self.options.enable_idempotent_retries {
                return Err(Error::new(
                    ErrorKind::InvalidArgument,
                    "enable_idempotent_retries needs a connection of the buffered producer's own: on a shared ProducerClient, the client's own batches would go to idempotent partition links unnumbered (build the buffered producer from a connection string or credential instead)",
                ));
            }
            let sender: Arc<dyn BatchSender> = Arc::new(SharedProducer(producer.clone()));
            return Ok(BufferedProducerClient::from_parts(
                self.options,
                Some(producer),
                sender,
                handler,
            ));
        }
        let producer = match self.credentials {
            Credentials::ConnectionString {
                connection_string,
                eventhub,
            } => ProducerClient::from_connection_string(
                &connection_string,
                eventhub.as_deref(),
                client_options,
            )?,
            Credentials::TokenCredential {
                namespace,
                eventhub,
                credential,
            } => ProducerClient::new(&namespace, &eventhub, credential, client_options)?,
            Credentials::Shared(producer) => producer,
            Credentials::Key {
                namespace,
                eventhub,
                key,
            } => {
                ProducerClient::with_shared_access_key(&namespace, &eventhub, key, client_options)?
            }
            Credentials::Signature {
                namespace,
                eventhub,
                credential,
            } => ProducerClient::with_sas_credential(
                &namespace,
                &eventhub,
                credential,
                client_options,
            )?,
        };
        let sender: Arc<dyn BatchSender> = Arc::new(producer.clone());
        Ok(BufferedProducerClient::from_parts(
            self.options,
            Some(producer),
            sender,
            handler,
        ))
    }
}

impl BufferedProducerClient {
    /// A builder for the event hub named by the connection string's `EntityPath` or by
    /// `eventhub` (both given and different: an error at build).
    pub fn from_connection_string(
        connection_string: &str,
        eventhub: Option<&str>,
    ) -> BufferedProducerBuilder {
        Self::builder(Credentials::ConnectionString {
            connection_string: connection_string.to_string(),
            eventhub: eventhub.map(str::to_string),
        })
    }

    /// A builder for `eventhub` in `fully_qualified_namespace`, authenticated by an Entra ID
    /// credential (`azure_identity` or any [`TokenCredential`]).
    pub fn with_credential(
        fully_qualified_namespace: &str,
        eventhub: &str,
        credential: Arc<dyn TokenCredential>,
    ) -> BufferedProducerBuilder {
        Self::builder(Credentials::TokenCredential {
            namespace: fully_qualified_namespace.to_string(),
            eventhub: eventhub.to_string(),
            credential,
        })
    }

    /// A builder for `eventhub` in `fully_qualified_namespace`, authenticated by a shared
    /// access key (its name and key, as in the namespace's or the event hub's policy): tokens
    /// are signed here for each link and renewed before they expire. Uses TLS on port 5671.
    pub fn with_shared_access_key(
        fully_qualified_namespace: &str,
        eventhub: &str,
        key: SharedAccessKey,
    ) -> BufferedProducerBuilder {
        Self::builder(Credentials::Key {
            namespace: fully_qualified_namespace.to_string(),
            eventhub: eventhub.to_string(),
            key,
        })
    }

    /// A builder for `eventhub` in `fully_qualified_namespace`, authenticated by a shared
    /// access signature the application can replace before it expires
    /// ([`SasCredential::update`]). A token past its expiry makes sends fail with
    /// [`ErrorKind::Unauthorized`](crate::ErrorKind::Unauthorized), naming the expiry. Uses
    /// TLS on port 5671.
    pub fn with_sas_credential(
        fully_qualified_namespace: &str,
        eventhub: &str,
        credential: SasCredential,
    ) -> BufferedProducerBuilder {
        Self::builder(Credentials::Signature {
            namespace: fully_qualified_namespace.to_string(),
            eventhub: eventhub.to_string(),
            credential,
        })
    }

    /// A builder for a producer that shares `producer`'s connection (and its links, retry
    /// options and identifier), for an application that also sends batches of its own and
    /// wants one connection to the event hub.
    ///
    /// [`BufferedProducerOptions::client`] is not used (the client's own options apply), and
    /// [`enable_idempotent_retries`](BufferedProducerOptions::enable_idempotent_retries) is
    /// refused at build. Closing the buffered producer sends and reports everything it holds
    /// but leaves the connection open: close `producer` when the application is done with it.
    ///
    /// ```no_run
    /// # async fn demo(connection_string: &str) -> eventhubs_buffered::Result<()> {
    /// use eventhubs_buffered::{
    ///     BufferedProducerClient, EnqueueOptions, EventData, ProducerClient, ProducerClientOptions,
    ///     SendEventOptions,
    /// };
    ///
    /// let client = ProducerClient::from_connection_string(connection_string, None, ProducerClientOptions::default())?;
    /// let buffered = BufferedProducerClient::from_producer(client.clone())
    ///     .on_send_failed(|context| async move { eprintln!("not published: {}", context.error) })
    ///     .build()?;
    /// buffered.enqueue_event(EventData::from("one at a time"), EnqueueOptions::default()).await?;
    /// client.send_events(vec![EventData::from("a batch of my own")], SendEventOptions::default()).await?;
    /// buffered.close().await?;
    /// client.close().await;
    /// # Ok(())
    /// # }
    /// ```
    pub fn from_producer(producer: ProducerClient) -> BufferedProducerBuilder {
        Self::builder(Credentials::Shared(producer))
    }

    fn builder(credentials: Credentials) -> BufferedProducerBuilder {
        BufferedProducerBuilder {
            credentials,
            options: BufferedProducerOptions::default(),
            handler: None,
            succeeded: None,
            failed: None,
        }
    }

    /// A producer over `sender` whose reporters call `handler`.
    pub(crate) fn from_parts(
        options: BufferedProducerOptions,
        producer: Option<ProducerClient>,
        sender: Arc<dyn BatchSender>,
        handler: Arc<dyn DynHandler>,
    ) -> Self {
        Self::assemble(options, producer, sender, |weak| {
            Arc::new(Reporters {
                handler,
                producer: weak,
            })
        })
    }
}
