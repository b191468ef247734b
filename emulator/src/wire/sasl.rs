//! SASL: the mechanisms the emulator offers and how it answers them.

use fe2o3_amqp::acceptor::sasl_acceptor::SaslServerFrame;
use fe2o3_amqp::acceptor::SaslAcceptor;
use fe2o3_amqp::types::primitives::{Array, Binary, Symbol};
use fe2o3_amqp::types::sasl::{SaslCode, SaslInit, SaslOutcome, SaslResponse};

/// Offers what the service offers, in its order (MSSBCBS, PLAIN, ANONYMOUS, EXTERNAL), and
/// accepts every one of them: all real authorization happens through `$cbs`, as in the service.
/// The outcome carries the service's greeting.
#[derive(Debug, Clone)]
pub(crate) struct EmulatorSasl;

fn welcome() -> SaslServerFrame {
    SaslServerFrame::Outcome(SaslOutcome {
        code: SaslCode::Ok,
        additional_data: Some(Binary::from(b"Welcome!".to_vec())),
    })
}

impl SaslAcceptor for EmulatorSasl {
    fn mechanisms(&self) -> Array<Symbol> {
        Array(vec![
            Symbol::from("MSSBCBS"),
            Symbol::from("PLAIN"),
            Symbol::from("ANONYMOUS"),
            Symbol::from("EXTERNAL"),
        ])
    }

    fn on_init(&mut self, _init: SaslInit) -> SaslServerFrame {
        welcome()
    }

    fn on_response(&mut self, _response: SaslResponse) -> SaslServerFrame {
        welcome()
    }
}
