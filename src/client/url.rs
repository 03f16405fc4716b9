//! Where requests go: `--endpoint` resolved to the API's route, the base URL for `/v1/models`
//! and the like, and the endpoint as safe to print. Pure functions of a URL, apart from the
//! requests, so the commands resolve and print endpoints without building a client.

use super::outcome::ClientError;
use crate::api::Api;

/// Resolves `--endpoint` for an API: a base URL gets the API's path; a URL that already names
/// a route is used as given.
pub fn resolve_url(endpoint: &str, api: Api) -> Result<reqwest::Url, ClientError> {
    let url = reqwest::Url::parse(endpoint)
        .map_err(|e| ClientError::Endpoint(format!("invalid --endpoint `{}`: {e}", redact_url(endpoint))))?;
    if !matches!(url.scheme(), "http" | "https") {
        return Err(ClientError::Endpoint(format!(
            "--endpoint must be an http:// or https:// URL, got `{}`",
            redact_url(endpoint)
        )));
    }
    let path = url.path().trim_end_matches('/');
    if api == Api::Forefront || Api::of_route(path).is_some() {
        return Ok(url);
    }
    let base = path.strip_suffix("/v1").unwrap_or(path);
    let mut out = url.clone();
    out.set_path(&format!("{base}{}", api.path()));
    Ok(out)
}

/// The endpoint as safe to print: user and password in the URL are replaced.
pub fn redact_url(endpoint: &str) -> String {
    match reqwest::Url::parse(endpoint) {
        Ok(mut u) => {
            if !u.username().is_empty() || u.password().is_some() {
                let _ = u.set_username("***");
                let _ = u.set_password(None);
            }
            u.set_query(None);
            u.to_string()
        }
        Err(_) => "<invalid URL>".into(),
    }
}

/// The base URL of an endpoint (scheme, host, port), for `/v1/models` and the like.
pub fn base_url(endpoint: &str) -> Option<reqwest::Url> {
    let mut u = reqwest::Url::parse(endpoint).ok()?;
    let path = u.path().to_string();
    let keep = match path.find("/v1") {
        Some(i) => path[..i].to_string(),
        None => String::new(),
    };
    u.set_path(&keep);
    u.set_query(None);
    Some(u)
}

/// The deployment an Azure OpenAI-style URL names (`/openai/deployments/NAME/...`): the model
/// there is the deployment, and the resource serves no `/v1/models` to ask.
pub fn azure_deployment(endpoint: &str) -> Option<String> {
    let u = reqwest::Url::parse(endpoint).ok()?;
    let mut segments = u.path_segments()?;
    segments.find(|s| *s == "deployments")?;
    segments.next().filter(|s| !s.is_empty()).map(str::to_string)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_resolve() {
        let u = |e, a| resolve_url(e, a).unwrap().to_string();
        assert_eq!(u("http://h:8000", Api::Completions), "http://h:8000/v1/completions");
        assert_eq!(u("http://h:8000/", Api::Chat), "http://h:8000/v1/chat/completions");
        assert_eq!(u("http://h:8000/v1", Api::Chat), "http://h:8000/v1/chat/completions");
        assert_eq!(
            u("https://h/x/v1/chat/completions", Api::Chat),
            "https://h/x/v1/chat/completions"
        );
        assert_eq!(u("https://h/api/run", Api::Forefront), "https://h/api/run");
        assert!(resolve_url("ftp://h", Api::Chat).is_err());
        assert!(resolve_url("not a url", Api::Chat).is_err());
        assert_eq!(redact_url("https://user:pw@h/v1?key=1"), "https://***@h/v1");
        let azure = "https://r.openai.azure.com/openai/deployments/gpt4o/chat/completions?api-version=2024-10-21";
        assert_eq!(azure_deployment(azure).as_deref(), Some("gpt4o"));
        assert_eq!(u(azure, Api::Chat), azure);
        assert_eq!(azure_deployment("http://h:8000/v1/chat/completions"), None);
    }
}
