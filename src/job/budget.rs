//! What a request costs in tokens, as a hosted API counts them on arrival: its prompt tokens
//! (estimated from the prompt's bytes) plus its `max_tokens`. The estimate of tokens per byte
//! starts at a quarter (4 bytes a token, English text) and follows what the answers' `usage`
//! report. It charges the token budget (`--max-tokens-per-minute`) and, without one, the room
//! a server's announced token limit leaves (`x-ratelimit-*-tokens`).

use super::queue::Charge;
use crate::engine::rate::RateLimiter;
use std::sync::Mutex;

/// Prompt tokens per byte before any answer said otherwise.
const TOKENS_PER_BYTE: f64 = 0.25;

/// The tokens per prompt byte the answers report, shared by the run's workers.
pub(super) struct TokenEstimate {
    /// Prompt bytes sent and the prompt tokens the answers reported for them.
    seen: Mutex<(u64, u64)>,
}

impl TokenEstimate {
    pub(super) fn new() -> TokenEstimate {
        TokenEstimate {
            seen: Mutex::new((0, 0)),
        }
    }

    /// The tokens `c` is charged.
    pub(super) fn tokens(&self, c: &Charge) -> f64 {
        let (bytes, tokens) = *self.seen.lock().expect("estimate lock");
        let per_byte = if bytes > 0 && tokens > 0 {
            tokens as f64 / bytes as f64
        } else {
            TOKENS_PER_BYTE
        };
        // Rounded, not up: a token over on every line would waste a twentieth of a budget of
        // 20-token lines.
        (c.prompt_bytes as f64 * per_byte).round() + c.max_tokens as f64
    }

    /// An answer's `usage`: the prompt tokens its `prompt_bytes` came to.
    pub(super) fn learn(&self, prompt_bytes: u64, prompt_tokens: u64) {
        if prompt_bytes > 0 {
            let mut seen = self.seen.lock().expect("estimate lock");
            seen.0 += prompt_bytes;
            seen.1 += prompt_tokens;
        }
    }
}

/// `--max-tokens-per-minute`: no request starts that it cannot pay for.
pub(super) struct TokenBudget {
    limiter: RateLimiter,
}

impl TokenBudget {
    pub(super) fn new(tokens_per_minute: f64) -> TokenBudget {
        TokenBudget {
            limiter: RateLimiter::new(tokens_per_minute, 1),
        }
    }

    /// Waits until the budget pays for `tokens`.
    pub(super) async fn pay(&self, tokens: f64) {
        self.limiter.acquire_n(tokens).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn charged_prompt_estimate_plus_max_tokens_then_what_usage_says() {
        let b = TokenEstimate::new();
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
