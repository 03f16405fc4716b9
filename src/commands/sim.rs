//! `sizeup sim`: serve the simulated resource until Ctrl-C.

use crate::cli::SimArgs;
use crate::secret::Secret;
use crate::ui::{self, usage_error, ExitStatus};
use tokio_util::sync::CancellationToken;

pub async fn run(args: SimArgs) -> anyhow::Result<ExitStatus> {
    let mut cfg = super::settings::sim(&args.model_args, args.gpus)?;
    match &args.served_model_name {
        Some(name) => {
            cfg.model = name.clone();
            cfg.strict_model = true;
        }
        None => cfg.model = args.model.clone(),
    }
    cfg.api_key = args.api_key.clone().map(Secret::new);
    cfg.start_off = args.start_off;
    let listener = tokio::net::TcpListener::bind(&args.addr).await.map_err(|e| {
        usage_error(
            format!("cannot listen on {}: {e}", args.addr),
            Some("pick another address with --addr, e.g. --addr 127.0.0.1:0 for any free port".to_string()),
        )
    })?;
    let addr = listener.local_addr()?;
    let p = cfg.params;
    ui::info(format!(
        "sizeup sim: {} GPU x {} slots, decode step {} ms + {} ms/seq, prefill {} ms/1k tokens, jitter {}, serving {} on http://{addr} (Ctrl-C stops)",
        cfg.gpus,
        p.batch,
        p.decode_step_ms,
        p.decode_step_ms_per_seq,
        p.prefill_ms_per_1k,
        cfg.jitter,
        if cfg.strict_model {
            format!("only `{}`", cfg.model)
        } else {
            format!("any model (listing `{}`)", cfg.model)
        }
    ));
    let stop = CancellationToken::new();
    let trigger = stop.clone();
    tokio::spawn(async move {
        // Ctrl-C or SIGTERM (a service manager, a container stop) ends it cleanly.
        let _ = crate::engine::Signals::new().next().await;
        trigger.cancel();
    });
    crate::sim::serve(listener, cfg, stop).await?;
    Ok(ExitStatus::Success)
}
