//! Switching the resource on before work and off after it: the simulated resource's API
//! (`POST /resource`), or the user's own hook commands and readiness URL.

use crate::target::Target;
use crate::ui::{self, usage_error};
use serde_json::Value;
use std::time::Duration;
use tokio::time::Instant;

/// How the resource is switched on and off (`--resource`, `--resource-on`, `--resource-off`,
/// `--ready-url`, `--ready-timeout`).
#[derive(Clone, Debug, Default)]
pub struct ResourceSpec {
    /// `--resource sim`: the simulated resource's own API.
    pub sim_api: bool,
    pub on: Option<String>,
    pub off: Option<String>,
    pub ready_url: Option<String>,
    pub ready_timeout: Duration,
}

/// Switching the resource on before the batch and off after it.
pub enum Lifecycle {
    None,
    /// The simulated resource's API: POST /resource.
    Sim {
        base: String,
        key: Option<crate::secret::Secret>,
    },
    Hooks {
        on: Option<String>,
        off: Option<String>,
        ready_url: Option<String>,
    },
}

impl Lifecycle {
    pub fn new(t: &ResourceSpec, target: &Target) -> anyhow::Result<Lifecycle> {
        if t.sim_api {
            let base = crate::client::base_url(&target.endpoint)
                .map(|u| u.to_string().trim_end_matches('/').to_string())
                .ok_or_else(|| usage_error("--resource sim needs an http(s) endpoint", None))?;
            return Ok(Lifecycle::Sim {
                base,
                key: target.key.as_ref().map(|(k, _)| k.clone()),
            });
        }
        if t.on.is_some() || t.off.is_some() || t.ready_url.is_some() {
            return Ok(Lifecycle::Hooks {
                on: t.on.clone(),
                off: t.off.clone(),
                ready_url: t.ready_url.clone(),
            });
        }
        Ok(Lifecycle::None)
    }

    pub async fn on(&self, gpus: u32, ready_timeout: Duration) -> anyhow::Result<()> {
        match self {
            Lifecycle::None => Ok(()),
            Lifecycle::Sim { base, key } => {
                ui::info(format!("switching the resource on with {gpus} GPUs"));
                post_resource(base, key.as_ref(), &serde_json::json!({"state": "on", "gpus": gpus})).await?;
                wait_ready(&format!("{base}/health"), ready_timeout).await
            }
            Lifecycle::Hooks { on, ready_url, .. } => {
                if let Some(cmd) = on {
                    run_hook(cmd, gpus, "--resource-on").await?;
                }
                if let Some(url) = ready_url {
                    wait_ready(url, ready_timeout).await?;
                }
                Ok(())
            }
        }
    }

    /// Best effort: a failure to switch off is reported, never hidden, never fatal.
    pub async fn off(&self) {
        let result = match self {
            Lifecycle::None => Ok(()),
            Lifecycle::Sim { base, key } => {
                ui::info("switching the resource off");
                post_resource(base, key.as_ref(), &serde_json::json!({"state": "off"})).await
            }
            Lifecycle::Hooks { off: Some(cmd), .. } => run_hook(cmd, 0, "--resource-off").await,
            Lifecycle::Hooks { .. } => Ok(()),
        };
        if let Err(err) = result {
            ui::warn(format!(
                "could not switch the resource off: {err:#}; switch it off by hand to stop paying for it"
            ));
        }
    }
}

/// `POST {base}/resource` of the simulated resource's API.
pub async fn post_resource(base: &str, key: Option<&crate::secret::Secret>, body: &Value) -> anyhow::Result<()> {
    let http = reqwest::Client::builder().timeout(Duration::from_secs(30)).build()?;
    let mut req = http
        .post(format!("{base}/resource"))
        .header(reqwest::header::CONTENT_TYPE, "application/json")
        .body(body.to_string());
    if let Some(k) = key {
        req = req.bearer_auth(k.expose());
    }
    let resp = req
        .send()
        .await
        .map_err(|e| anyhow::anyhow!("POST /resource failed: {}", e.without_url()))?;
    if !resp.status().is_success() {
        anyhow::bail!("POST /resource answered {}", resp.status());
    }
    Ok(())
}

/// Polls `url` until it answers 200, or fails after `timeout`.
async fn wait_ready(url: &str, timeout: Duration) -> anyhow::Result<()> {
    let http = reqwest::Client::builder().timeout(Duration::from_secs(10)).build()?;
    let deadline = Instant::now() + timeout;
    let mut delay = Duration::from_millis(50);
    loop {
        if let Ok(resp) = http.get(url).send().await {
            if resp.status().is_success() {
                return Ok(());
            }
        }
        if Instant::now() + delay > deadline {
            return Err(ui::unusable_error(
                format!(
                    "{} did not answer 200 within {}",
                    crate::client::redact_url(url),
                    humantime::format_duration(timeout)
                ),
                Some("raise --ready-timeout, or check that the resource came up".into()),
            ));
        }
        tokio::time::sleep(delay).await;
        delay = (delay * 2).min(Duration::from_secs(2));
    }
}

async fn run_hook(cmd: &str, gpus: u32, flag: &str) -> anyhow::Result<()> {
    let cmd = cmd.replace("{gpus}", &gpus.to_string());
    let status = tokio::process::Command::new("sh")
        .arg("-c")
        .arg(&cmd)
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .status()
        .await
        .map_err(|e| anyhow::anyhow!("{flag}: cannot start `sh`: {e}"))?;
    if !status.success() {
        return Err(ui::unusable_error(format!("{flag} command failed ({status})"), None));
    }
    Ok(())
}
