//! The endpoint a command talks to: the user's, or the built-in simulator started in this
//! process; with the API key, the client settings and the reachability check.

use crate::api::{Api, MaxTokensField};
use crate::client::access::read_cacert;
use crate::client::{Access, Client, ClientConfig, ClientError, Header, Unreachable};
use crate::scrape::{MetricsSpec, Scraper};
use crate::secret::{api_key_from_env, Secret};
use crate::sim::{SimConfig, SimHandle};
use crate::ui::{self, usage_error};
use std::time::Duration;

/// Where requests go and how: the `--endpoint` flags, validated, with the API settled.
#[derive(Clone, Debug)]
pub struct Endpoint {
    /// `--endpoint`; `None`: the built-in simulator, started in this process.
    pub url: Option<String>,
    pub api: Api,
    pub model: Option<String>,
    pub timeout: Duration,
    pub first_byte_timeout: Option<Duration>,
    pub connect_timeout: Duration,
    /// `--pool-idle-timeout`: kept-alive connections idle longer are not used again.
    pub pool_idle_timeout: Duration,
    pub max_tokens_field: MaxTokensField,
    /// `--stop-after-failures`: stop on a failure every answer repeats (0 never).
    pub stop_after_failures: u32,
    pub server_metrics: MetricsSpec,
    pub scrape_interval: Duration,
    /// `--header`, as given (`Name: value`, `$VAR`s not yet expanded).
    pub headers: Vec<String>,
    /// `--cacert`: PEM certificates trusted besides the bundled and system roots.
    pub cacert: Option<std::path::PathBuf>,
}

/// The `--header`s expanded from the environment and `--cacert` read: exit 2 naming the
/// variable, header or file that is wrong.
fn access(endpoint: &Endpoint, key: Option<Secret>) -> anyhow::Result<Access> {
    let mut access = Access::with_key(key);
    for flag in &endpoint.headers {
        let header = Header::parse(flag, |name| std::env::var(name).ok()).map_err(|e| usage_error(e, None))?;
        access.headers.push(header);
    }
    if let Some(path) = &endpoint.cacert {
        access.roots = read_cacert(path).map_err(|e| {
            usage_error(
                e,
                Some("give the CA's certificate in PEM form (the file your company's IT hands out, or `openssl x509 -in CA.crt -outform pem`)".into()),
            )
        })?;
    }
    Ok(access)
}

/// The endpoint a command talks to: the user's, or a simulator started in this process.
pub struct Target {
    pub endpoint: String,
    /// What reports show: the endpoint without credentials, or "built-in simulator".
    pub display: String,
    pub sim: Option<SimHandle>,
    /// The API key and the variable it came from.
    pub key: Option<(Secret, &'static str)>,
    /// What every request carries: the key, the `--header`s, `--cacert`'s roots.
    pub access: Access,
}

impl Target {
    /// With no `--endpoint`, starts the simulated resource on a free loopback port.
    pub async fn open(endpoint: &Endpoint, sim: SimConfig) -> anyhow::Result<Target> {
        Target::open_with(endpoint, sim, false).await
    }

    /// Like [`Target::open`]; `start_off` starts an in-process simulator switched off.
    pub async fn open_with(endpoint: &Endpoint, sim: SimConfig, start_off: bool) -> anyhow::Result<Target> {
        let key = api_key_from_env();
        match &endpoint.url {
            Some(url) => {
                crate::client::resolve_url(url, endpoint.api).map_err(|e| usage_error(e.to_string(), None))?;
                if let Some((k, var)) = &key {
                    if !k.is_header_safe() {
                        return Err(usage_error(
                            format!(
                                "{var} holds a line break or another control character, which no HTTP header can carry"
                            ),
                            Some(format!(
                                "strip it: export {var}=\"$(printf %s \"${var}\" | tr -d '\\r\\n')\""
                            )),
                        ));
                    }
                }
                let access = access(endpoint, key.as_ref().map(|(k, _)| k.clone()))?;
                Ok(Target {
                    endpoint: url.clone(),
                    display: crate::client::redact_url(url),
                    sim: None,
                    key,
                    access,
                })
            }
            None => {
                let mut cfg = sim;
                // Listed by /v1/models; not strict, so bodies in the input naming other
                // models are served too, as by the endpoint the simulator stands in for.
                if let Some(m) = &endpoint.model {
                    cfg.model = m.clone();
                }
                cfg.start_off = start_off;
                let (cfg_gpus, cfg_batch) = (cfg.gpus, cfg.params.batch);
                let handle = SimHandle::start(cfg).await?;
                ui::info(format!(
                    "note: no --endpoint: using the built-in simulated resource at {} ({} GPU x {} slots)",
                    handle.url(),
                    cfg_gpus,
                    cfg_batch
                ));
                // The in-process simulator needs no key; never send a real one to it.
                Ok(Target {
                    endpoint: handle.url(),
                    display: "built-in simulator".into(),
                    sim: Some(handle),
                    key: None,
                    access: Access::default(),
                })
            }
        }
    }

    /// A client for this endpoint. Tells the person, once, when the client learns that the
    /// server closes connections after streamed answers (llama.cpp), since from then on streamed
    /// requests pay a new connection each.
    pub fn client(&self, e: &Endpoint, pool: usize) -> anyhow::Result<Client> {
        let client = Client::new(&ClientConfig {
            endpoint: self.endpoint.clone(),
            api: e.api,
            access: self.access.clone(),
            connect_timeout: e.connect_timeout,
            timeout: e.timeout,
            first_byte_timeout: e.first_byte_timeout,
            pool,
            pool_idle_timeout: e.pool_idle_timeout,
        })
        .map_err(|err| match err {
            // As `?` on the builder's error always did: its own message and causes, exit 2.
            ClientError::Build(b) => anyhow::Error::from(b),
            other => usage_error(other.to_string(), None),
        })?;
        let learned = client.learned_closes_after_stream();
        let url = crate::client::redact_url(client.url().as_str());
        // Ends with the client: `learned` resolves to false when it is dropped.
        tokio::spawn(async move {
            if learned.await {
                ui::info(format!(
                    "note: {url} closed a kept-alive connection after a streamed answer; streamed requests now use a fresh connection each (Connection: close)"
                ));
            }
        });
        Ok(client)
    }

    /// Fails fast (exit 3) when nothing listens at the endpoint, before any request is built.
    /// Connects where the requests will: through the proxy the environment names for the URL,
    /// if one applies, and to any of the host's addresses.
    pub async fn check_reachable(&self, e: &Endpoint) -> anyhow::Result<()> {
        let Ok(url) = reqwest::Url::parse(&self.endpoint) else {
            return Ok(());
        };
        let Err(why) = crate::client::reach(&url, e.connect_timeout).await else {
            let limit = e.connect_timeout.max(std::time::Duration::from_secs(10));
            return crate::client::check_tls(&url, &self.access, limit)
                .await
                .map_err(|why| ui::unusable_error(format!("cannot connect to {}: {why}", self.display), None));
        };
        let through = match why.proxy() {
            Some(p) => format!(" through the proxy {p} (from HTTP_PROXY/HTTPS_PROXY/ALL_PROXY)"),
            None => String::new(),
        };
        Err(match why {
            Unreachable::Failed { message, .. } => ui::unusable_error(
                format!("cannot connect to {}{through}: {message}", self.display),
                Some("is the server up? check --endpoint (or leave it out to use the built-in simulator)".into()),
            ),
            Unreachable::Timeout { .. } => ui::unusable_error(
                format!(
                    "cannot connect to {}{through} within {}",
                    self.display,
                    humantime::format_duration(e.connect_timeout)
                ),
                Some("check --endpoint and the network, or raise --connect-timeout".into()),
            ),
        })
    }

    /// `--model`, else the first model the endpoint lists (None when it lists none).
    /// Checks first that the endpoint is reachable at all.
    pub async fn model(&self, e: &Endpoint) -> anyhow::Result<Option<String>> {
        self.check_reachable(e).await?;
        if let Some(m) = &e.model {
            return Ok(Some(m.clone()));
        }
        if e.api == crate::api::Api::Forefront {
            return Ok(None);
        }
        if let Some(deployment) = crate::client::azure_deployment(&self.endpoint) {
            return Ok(Some(deployment));
        }
        match crate::client::first_model(
            &self.endpoint,
            &self.access,
            e.connect_timeout.max(std::time::Duration::from_secs(10)),
        )
        .await
        {
            Ok(m) => Ok(m),
            Err(err @ ClientError::Rejected { .. }) => Err(ui::unusable_error(
                format!("{} rejected the credentials: {err}", self.display),
                Some(self.key_hint()),
            )),
            Err(err) => Err(ui::unusable_error(
                format!("cannot reach {}: {err}", self.display),
                Some(
                    "check --endpoint and that the server is up; or leave --endpoint out to try the built-in simulator"
                        .into(),
                ),
            )),
        }
    }

    /// Names the variable the key came from, never its value.
    pub fn key_hint(&self) -> String {
        match &self.key {
            Some((_, var)) => format!("the API key came from ${var}; check that it is valid for this endpoint"),
            None => "no API key was sent: set SIZEUP_API_KEY (or OPENAI_API_KEY)".into(),
        }
    }

    /// Starts reading the server's metrics (`--server-metrics`); a server without them, or
    /// with names sizeup doesn't know, is a one-line note and `None`, never an error.
    pub async fn watch_server(&self, spec: &MetricsSpec, interval: std::time::Duration) -> Option<Scraper> {
        let interval = interval.max(std::time::Duration::from_millis(50));
        match Scraper::start(spec, &self.endpoint, &self.access, interval).await {
            Ok(Some(s)) => {
                ui::info(format!(
                    "note: reading the server's metrics ({}) from {} every {}",
                    s.dialect().name(),
                    s.url_display(),
                    humantime::format_duration(interval)
                ));
                Some(s)
            }
            Ok(None) => None,
            Err(note) => {
                ui::info(format!("note: {note}"));
                None
            }
        }
    }

    pub async fn close(self) {
        if let Some(sim) = self.sim {
            sim.shutdown().await;
        }
    }
}
