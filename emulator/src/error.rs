//! Errors of the emulator's own API (not the AMQP errors it answers clients with).

/// What went wrong starting, configuring or inspecting the emulator.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum EmulatorError {
    /// Binding or serving the socket failed.
    #[error("I/O error: {0}")]
    Io(#[from] std::io::Error),
    /// The TLS certificate or configuration could not be made.
    #[error("TLS setup failed: {0}")]
    Tls(String),
    /// A configuration value is not acceptable.
    #[error("invalid configuration: {0}")]
    InvalidConfig(String),
    /// No event hub of that name.
    #[error("unknown event hub '{0}'")]
    UnknownHub(String),
    /// No partition of that id in the hub.
    #[error("unknown partition '{partition}' in event hub '{hub}'")]
    UnknownPartition {
        /// The hub.
        hub: String,
        /// The partition id asked for.
        partition: String,
    },
    /// A stored message could not be decoded.
    #[error("could not decode a stored message: {0}")]
    Decode(String),
}
