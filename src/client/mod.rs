//! Speaks to an OpenAI-compatible endpoint. Every request ends as an [`Outcome`]: a failed
//! request is data (its class, status and message), never an `Err` and never a panic, so one
//! bad answer cannot stop a load. Knows nothing of the simulator.
//!
//! This file only names the parts and re-exports what the rest of the crate uses; each part
//! uses its siblings, never this file:
//! - `send.rs`: the [`Client`], its send loop and one exchange in steps; `GET /v1/models`.
//! - `transport.rs`: one answer from either transport (reqwest's or `h1/`), errors classified.
//! - `h1/`: the plain-http HTTP/1.1 transport; `connect.rs` opens a connection to any of a
//!   host's addresses, `proxy.rs` the environment's proxy rules (as reqwest's).
//! - `reach.rs`: the pre-flight check that the endpoint (or its proxy) accepts connections.
//! - `parse.rs`: a whole answer read into an outcome (usage, error bodies, the checks).
//! - `stream.rs`: a streamed answer read into an outcome, through the SSE decoder `sse.rs`.
//! - `outcome.rs`: [`Outcome`], [`FailKind`], [`ClientError`], error type and message of an answer.
//! - `url.rs`: `--endpoint` resolved, its base URL, redacted for printing.
//! - `body.rs`: request bodies built and prepared for measurement.
//! - `access.rs`: the key, `--header`s and `--cacert` every request carries.

pub mod access;
mod body;
mod connect;
mod h1;
mod outcome;
mod parse;
mod proxy;
pub mod ratelimit;
mod reach;
mod send;
pub mod sse;
mod stream;
mod transport;
mod url;

// Re-exported: the commands and benches build bodies with it through the client's API.
pub use crate::api::MaxTokensField;
pub use access::{Access, Header};
pub use body::{build_body, prepare_body, wants_stream};
pub use outcome::{error_type, ClientError, FailKind, Failure, Outcome, Success, Usage};
pub use reach::{check_tls, reach, Unreachable};
pub use send::{first_model, post_empty, Client, ClientConfig};
pub use url::{azure_deployment, base_url, redact_url, resolve_url};
