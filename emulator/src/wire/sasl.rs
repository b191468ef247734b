//! SASL: the mechanisms the emulator offers and how it answers them.

use fe2o3_amqp::acceptor::sasl_acceptor::SaslServerFrame;
use fe2o3_amqp::acceptor::SaslAcceptor;
use fe2o3_amqp::types::primitives::{Array, Symbol};
use fe2o3_amqp::types::sasl::{SaslCode, SaslInit, SaslOutcome, SaslResponse};

/// Offers MSSBCBS, ANONYMOUS and PLAIN, and accepts every one of them: all real authorization
/// happens through `$cbs`, as in the service.
#[derive(Debug, Clone)]
pub(crate) struct EmulatorSasl;

impl SaslAcceptor for EmulatorSasl {
    fn mechanisms(&self) -> Array<Symbol> {
        Array(vec![
            Symbol::from("MSSBCBS"),
            Symbol::from("ANONYMOUS"),
            Symbol::from("PLAIN"),
        ])
    }

    fn on_init(&mut self, _init: SaslInit) -> SaslServerFrame {
        SaslServerFrame::Outcome(SaslOutcome {
            code: SaslCode::Ok,
            additional_data: None,
        })
    }

    fn on_response(&mut self, _response: SaslResponse) -> SaslServerFrame {
        SaslServerFrame::Outcome(SaslOutcome {
            code: SaslCode::Ok,
            additional_data: None,
        })
    }
}
