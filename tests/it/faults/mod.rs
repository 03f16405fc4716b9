//! Faults never lose a line or answer one twice: 5xx, 429 (after its Retry-After), connection
//! resets and timeouts are retried, 4xx and undecodable answers are recorded failures that
//! `--resume` retries, and a refused key, an unusable endpoint or a failure that every answer
//! repeats stops the run early with at most the requests in flight sent. Servers that misbehave
//! at the HTTP level (an early 413, a broken body, a proxy) get the outcome reqwest gives.

mod bad_answers;
mod matrix;
mod misbehaving;
mod retries;
mod stops;
