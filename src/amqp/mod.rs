//! The AMQP layer: the only place fe2o3-amqp types appear.

pub(crate) mod cbs;
pub(crate) mod config;
pub(crate) mod connection;
pub(crate) mod errors;
pub(crate) mod management;
pub(crate) mod message;
pub(crate) mod proxy;
pub(crate) mod request_response;
pub(crate) mod sender;
pub(crate) mod tls;
pub(crate) mod transport;
