//! The request protocols sizeup speaks (the wire vocabulary). Shared by the client (building
//! and parsing bodies), the batch reader (validating input lines) and the command line, which
//! is why it sits below all three and imports none of them.

use std::fmt;

pub mod scan;

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

    /// The API a URL's route names (`…/chat/completions`, `…/completions`, `…/embeddings`),
    /// whatever comes before it (a base path, `/openai/v1`) and after it (query, fragment,
    /// a trailing slash); `None` for a base URL. The one place a route is read: the batch
    /// reader detects a line's API with it, the client keeps a URL that already names one.
    pub fn of_route(url: &str) -> Option<Api> {
        let path = url.split(['?', '#']).next().unwrap_or(url).trim_end_matches('/');
        if path.ends_with("/chat/completions") {
            Some(Api::Chat)
        } else if path.ends_with("/completions") {
            Some(Api::Completions)
        } else if path.ends_with("/embeddings") {
            Some(Api::Embeddings)
        } else {
            None
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

/// One JSON value as text: well formed (checked once, when it was made) and without
/// whitespace around it, so it goes into an output line as it is and is never parsed again.
/// An answer body is kept this way: parsing it a second time only to wrap it cost a tenth of
/// a request's instructions.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct JsonText(Box<str>);

impl JsonText {
    /// Checks `text`: one JSON value (whitespace around it is dropped).
    pub fn parse(text: &str) -> Result<JsonText, serde_json::Error> {
        let raw: &serde_json::value::RawValue = serde_json::from_str(text)?;
        Ok(JsonText(raw.get().into()))
    }

    pub fn from_value(v: &serde_json::Value) -> JsonText {
        JsonText(v.to_string().into_boxed_str())
    }

    /// `text` the caller has just parsed whole with `serde_json::from_slice` or `from_str` (one
    /// well-formed value, whitespace around it allowed): only the whitespace is cut off.
    pub(crate) fn parsed(mut text: String) -> JsonText {
        const WS: [char; 4] = [' ', '\t', '\n', '\r'];
        text.truncate(text.trim_end_matches(WS).len());
        let lead = text.len() - text.trim_start_matches(WS).len();
        text.drain(..lead);
        JsonText(text.into_boxed_str())
    }

    pub fn get(&self) -> &str {
        &self.0
    }
}

#[cfg(test)]
mod json_text_tests {
    use super::JsonText;

    #[test]
    fn kept_without_the_whitespace_around_it() {
        assert_eq!(
            JsonText::parsed(" \r\n{\"a\": [1, 2]}\n".into()).get(),
            "{\"a\": [1, 2]}"
        );
        assert_eq!(JsonText::parsed("7".into()).get(), "7");
        assert_eq!(JsonText::parse("\t\"x\" \n").unwrap().get(), "\"x\"");
        assert!(JsonText::parse("{\"a\":1} x").is_err());
        assert_eq!(
            JsonText::from_value(&serde_json::json!({"b": null})).get(),
            "{\"b\":null}"
        );
    }
}
