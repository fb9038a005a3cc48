//! The queue pair state machine, as libibverbs defines it for a reliable
//! connection: RESET → INIT → RTR (ready to receive) → RTS (ready to send),
//! and ERROR from any state (a failed completion, or teardown).
//!
//! Both the fake and the real verbs check every transition here, so a link
//! that skips a step fails in the fake exactly as `ibv_modify_qp` would fail
//! on a device (EINVAL). Receives may be posted from INIT on; sends only in RTS.

/// The state of a queue pair.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum QpState {
    /// Just created: nothing may be posted.
    Reset,
    /// Port, access flags set: receives may be posted.
    Init,
    /// Connected to the remote queue pair: it receives.
    ReadyToReceive,
    /// It sends too.
    ReadyToSend,
    /// Failed or torn down: every posted request completes with a flush error.
    Error,
}

/// A transition that the verbs refuse.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("queue pair cannot go from {from:?} to {to:?}")]
pub struct BadTransition {
    /// The current state.
    pub from: QpState,
    /// The state asked for.
    pub to: QpState,
}

impl QpState {
    /// Whether `self → to` is a legal `ibv_modify_qp` for an RC queue pair.
    pub fn check(self, to: QpState) -> Result<(), BadTransition> {
        use QpState::*;
        let legal = matches!(
            (self, to),
            (Reset, Init)
                | (Init, ReadyToReceive)
                | (ReadyToReceive, ReadyToSend)
                | (_, Error)
                | (_, Reset)
        );
        if legal {
            Ok(())
        } else {
            Err(BadTransition { from: self, to })
        }
    }

    /// Whether receive requests may be posted.
    pub fn can_post_recv(self) -> bool {
        matches!(
            self,
            QpState::Init | QpState::ReadyToReceive | QpState::ReadyToSend
        )
    }

    /// Whether incoming messages are accepted.
    pub fn receives(self) -> bool {
        matches!(self, QpState::ReadyToReceive | QpState::ReadyToSend)
    }
}

#[cfg(test)]
mod tests {
    use super::QpState::*;

    #[test]
    fn only_the_rc_ladder_and_error_are_legal() {
        assert!(Reset.check(Init).is_ok());
        assert!(Init.check(ReadyToReceive).is_ok());
        assert!(ReadyToReceive.check(ReadyToSend).is_ok());
        assert!(ReadyToSend.check(Error).is_ok());
        assert!(Error.check(Reset).is_ok());
        assert!(Reset.check(ReadyToSend).is_err());
        assert!(Init.check(ReadyToSend).is_err());
        assert!(Error.check(ReadyToSend).is_err());
        assert!(!Reset.can_post_recv() && Init.can_post_recv());
        assert!(!Init.receives() && ReadyToReceive.receives());
    }
}
