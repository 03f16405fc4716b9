//! The request protocols sizeup speaks (the wire vocabulary). Shared by the client (building
//! and parsing bodies), the batch reader (validating input lines) and the command line, which
//! is why it sits below all three and imports none of them.

use std::fmt;

/// Which API the endpoint speaks.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, clap::ValueEnum, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Api {
    /// OpenAI `/v1/completions`: `{"prompt": ...}`.
    Completions,
    /// OpenAI `/v1/chat/completions`: `{"messages": [...]}`.
    Chat,
    /// OpenAI `/v1/embeddings`: `{"input": string or list}`; a prefill-only request.
    Embeddings,
    /// The provider shape of the batching guide: POST `{prompt, max_tokens}` to the endpoint
    /// itself, answer `{"result":[{"completion": ...}]}`.
    Forefront,
}

impl Api {
    /// All variants, in the order help texts list them.
    pub const ALL: [Api; 4] = [Api::Completions, Api::Chat, Api::Embeddings, Api::Forefront];

    /// The path appended to a base URL; forefront posts to the URL as given.
    pub fn path(self) -> &'static str {
        match self {
            Api::Completions => "/v1/completions",
            Api::Chat => "/v1/chat/completions",
            Api::Embeddings => "/v1/embeddings",
            Api::Forefront => "",
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Api::Completions => "completions",
            Api::Chat => "chat",
            Api::Embeddings => "embeddings",
            Api::Forefront => "forefront",
        }
    }

    /// Whether the API streams tokens (server-sent events) when asked.
    pub fn streams(self) -> bool {
        matches!(self, Api::Completions | Api::Chat)
    }
}

impl fmt::Display for Api {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl std::str::FromStr for Api {
    type Err = String;

    fn from_str(s: &str) -> Result<Api, String> {
        Api::ALL
            .into_iter()
            .find(|a| a.name().eq_ignore_ascii_case(s.trim()))
            .ok_or_else(|| format!("unknown API `{s}`; expected completions, chat, embeddings or forefront"))
    }
}

/// Which field carries the output-token limit. OpenAI's chat API renamed `max_tokens` to
/// `max_completion_tokens`; most self-hosted servers (vLLM, llama.cpp, TGI) read `max_tokens`
/// and silently ignore the other, which would make every request run to the model's limit.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum MaxTokensField {
    #[value(name = "max_tokens")]
    MaxTokens,
    #[value(name = "max_completion_tokens")]
    MaxCompletionTokens,
}

impl MaxTokensField {
    pub fn key(self) -> &'static str {
        match self {
            MaxTokensField::MaxTokens => "max_tokens",
            MaxTokensField::MaxCompletionTokens => "max_completion_tokens",
        }
    }
}
