//! The request protocols sizeup speaks. Shared by the client (building and parsing bodies),
//! the batch reader (validating input lines) and the command line.

use std::fmt;

/// Which API the endpoint speaks.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, clap::ValueEnum, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Api {
    /// OpenAI `/v1/completions`: `{"prompt": ...}`.
    Completions,
    /// OpenAI `/v1/chat/completions`: `{"messages": [...]}`.
    Chat,
    /// The provider shape of the batching guide: POST `{prompt, max_tokens}` to the endpoint
    /// itself, answer `{"result":[{"completion": ...}]}`.
    Forefront,
    /// OpenAI `/v1/embeddings`: `{"input": ...}`; costs prompt tokens only, never streams.
    Embeddings,
}

impl Api {
    /// All variants, in the order help texts list them.
    pub const ALL: [Api; 4] = [Api::Completions, Api::Chat, Api::Forefront, Api::Embeddings];

    /// The path appended to a base URL; forefront posts to the URL as given.
    pub fn path(self) -> &'static str {
        match self {
            Api::Completions => "/v1/completions",
            Api::Chat => "/v1/chat/completions",
            Api::Forefront => "",
            Api::Embeddings => "/v1/embeddings",
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Api::Completions => "completions",
            Api::Chat => "chat",
            Api::Forefront => "forefront",
            Api::Embeddings => "embeddings",
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
            .ok_or_else(|| {
                let names: Vec<&str> = Api::ALL.iter().map(|a| a.name()).collect();
                format!("unknown API `{s}`; expected one of {}", names.join(", "))
            })
    }
}
