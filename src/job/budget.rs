//! The token budget (`--max-tokens-per-minute`): each request is charged, before it is sent,
//! its prompt tokens (estimated from the prompt's bytes) plus its `max_tokens`, as a hosted
//! API charges on arrival; the estimate of tokens per byte starts at a quarter (4 bytes a
//! token, English text) and follows what the answers' `usage` report.

use super::queue::Charge;
use crate::engine::rate::RateLimiter;
use std::sync::Mutex;

/// Prompt tokens per byte before any answer said otherwise.
const TOKENS_PER_BYTE: f64 = 0.25;

pub(super) struct TokenBudget {
    limiter: RateLimiter,
    /// Prompt bytes sent and the prompt tokens the answers reported for them.
    seen: Mutex<(u64, u64)>,
}

impl TokenBudget {
    pub(super) fn new(tokens_per_minute: f64) -> TokenBudget {
        TokenBudget {
            limiter: RateLimiter::new(tokens_per_minute, 1),
            seen: Mutex::new((0, 0)),
        }
    }

    /// The tokens `c` is charged.
    pub(super) fn tokens(&self, c: &Charge) -> f64 {
        let (bytes, tokens) = *self.seen.lock().expect("budget lock");
        let per_byte = if bytes > 0 && tokens > 0 {
            tokens as f64 / bytes as f64
        } else {
            TOKENS_PER_BYTE
        };
        (c.prompt_bytes as f64 * per_byte).ceil() + c.max_tokens as f64
    }

    /// Waits until the budget pays for `c`.
    pub(super) async fn pay(&self, c: &Charge) {
        self.limiter.acquire_n(self.tokens(c)).await;
    }

    /// An answer's `usage`: the prompt tokens its `prompt_bytes` came to.
    pub(super) fn learn(&self, prompt_bytes: u64, prompt_tokens: u64) {
        if prompt_bytes > 0 {
            let mut seen = self.seen.lock().expect("budget lock");
            seen.0 += prompt_bytes;
            seen.1 += prompt_tokens;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn charged_prompt_estimate_plus_max_tokens_then_what_usage_says() {
        let b = TokenBudget::new(60_000.0);
        let c = Charge {
            prompt_bytes: 400,
            max_tokens: 50,
        };
        assert_eq!(b.tokens(&c), 150.0, "400 bytes at 4 a token, and 50 to write");
        // The answers say a token is 2 bytes here (a language or a tokenizer 4 does not fit).
        b.learn(1000, 500);
        assert_eq!(b.tokens(&c), 250.0);
        // Nothing learned from a request without a prompt.
        b.learn(0, 7);
        assert_eq!(b.tokens(&c), 250.0);
    }
}
