use super::{Protocol, Replies, Verdict};

/// Plain echo: every received byte goes back, in order.
///
/// It replies with [`Replies::echo`], so on the io_uring backend the bytes are sent straight out
/// of the provided buffer they arrived in, without a copy.
#[derive(Clone, Copy, Debug, Default)]
pub struct Echo;

impl Protocol for Echo {
    fn on_data(&mut self, input: &[u8], out: &mut Replies<'_>) -> Verdict {
        out.echo(0..input.len());
        Verdict::Continue
    }
}
