//! `keys recover` in a user binary: the key's in-doubt effects run once more, through the job
//! its registry rebuilds ([`Registry::recover_effects`]).

use safejob_core::{IdempotencyKey, KeyDigest, Recovery, Runner, queue::Registry};
use serde_json::json;

use super::{confirm, connect};
use crate::{CliError, out::Out};

/// The digest named by `text`: 64 hex characters are a digest; anything else is the key's text
/// (validated like any key, and never printed).
fn key_or_digest(text: &str) -> Result<KeyDigest, CliError> {
    if text.len() == 64 && text.bytes().all(|b| b.is_ascii_hexdigit()) {
        return KeyDigest::from_hex(text)
            .map_err(|e| CliError::BadInput(format!("not a key digest: {e}")));
    }
    IdempotencyKey::new(text)
        .map(|key| *key.digest())
        .map_err(|e| CliError::BadInput(format!("not a key or a digest: {e}")))
}

/// Asks (unless `yes`), then recovers the effects of the key `key` (text or digest).
pub(crate) fn recover(
    url: Option<&str>,
    out: Out,
    registry: &Registry,
    key: &str,
    yes: bool,
) -> Result<(), CliError> {
    let digest = key_or_digest(key)?;
    let (store, queue) = connect(url)?;
    confirm(
        &format!(
            "run the effects of key {} AGAIN (only if you checked that they did not happen)?",
            digest.short()
        ),
        yes,
    )?;
    let operator = format!("safejob-cli-{}", std::process::id());
    let runner = Runner::builder(store)
        .worker_id(operator)
        .build()
        .map_err(|e| CliError::BadInput(e.to_string()))?;
    match registry.recover_effects(&*queue, &runner, &digest)? {
        Recovery::Resolved { fence } => {
            out.emit(
                &json!({"digest": digest.to_hex(), "recovered": true, "fence": fence}),
                || {
                    println!(
                        "key {}: effects ran again and are recorded done (fence {fence})",
                        digest.short()
                    );
                },
            );
            Ok(())
        }
        Recovery::NotInDoubt(row) => Err(CliError::Refused(format!(
            "key {}'s effects are not in doubt (state {}, effects {})",
            digest.short(),
            row.state.as_str(),
            row.effects.as_str()
        ))),
        Recovery::Missing => Err(CliError::NotFound(format!("key {}", digest.short()))),
    }
}
