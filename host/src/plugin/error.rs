//! Errors of the plugin runtime: loading a component, and what ended an incarnation.

use std::path::PathBuf;

/// Why a component could not be loaded. Every message names the file.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    #[error("cannot read adapter {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path} is not a valid WebAssembly component: {reason}")]
    NotAComponent { path: PathBuf, reason: String },
    #[error("{path} does not export the Switchyard adapter interface (expected `{expected}`)")]
    NotAnAdapter {
        path: PathBuf,
        expected: &'static str,
    },
    #[error("{path} targets adapter contract {found}; this host supports {supported}")]
    UnsupportedVersion {
        path: PathBuf,
        found: String,
        supported: &'static str,
    },
    #[error("{path} imports `{import}`, which the sandbox does not grant")]
    ForbiddenImport { path: PathBuf, import: String },
    #[error("{path} could not be linked: {reason}")]
    Link { path: PathBuf, reason: String },
}

/// What ended an incarnation. A trap and an adapter's own error are kept apart: the first
/// kills the instance, the second is reported and the instance lives on.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Failure {
    #[error("the guest trapped: {0}")]
    Trap(String),
    #[error("the guest exceeded its CPU deadline")]
    Deadline,
    #[error("the guest exceeded its memory limit")]
    Memory,
    #[error("init failed: {0}")]
    Init(String),
    #[error("the adapter rejected its config: {0}")]
    InvalidConfig(String),
    #[error("instantiation failed: {0}")]
    Instantiate(String),
}

impl Failure {
    /// Classifies a wasmtime error from a guest call. Never Debug-formats the error (that
    /// symbolises a backtrace and takes about 100 ms).
    pub fn from_call(err: &wasmtime::Error) -> Self {
        match err.downcast_ref::<wasmtime::Trap>() {
            Some(wasmtime::Trap::Interrupt) => Self::Deadline,
            Some(t) => Self::Trap(t.to_string()),
            None => {
                let text = err.to_string();
                // A failed memory.grow under `trap_on_grow_failure` carries no Trap code.
                if text.contains("memory") && (text.contains("limit") || text.contains("grow")) {
                    Self::Memory
                } else {
                    Self::Trap(text)
                }
            }
        }
    }

    /// Whether restarting cannot help.
    pub fn is_fatal(&self) -> bool {
        matches!(self, Self::InvalidConfig(_))
    }
}
