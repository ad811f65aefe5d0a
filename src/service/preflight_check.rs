//! One line of the preflight table (`sdl check`, and the checks `sdl run` makes first): what was
//! checked, the verdict, what was found and the fix. Details pass through the redaction of URLs
//! and the tidying of driver dumps before anyone sees them.

use crate::redact::redact_error;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    Pass,
    Warn,
    Fail,
}

#[derive(Debug, Clone)]
pub struct Check {
    pub name: String,
    pub verdict: Verdict,
    /// What was found.
    pub detail: String,
    /// What to do (empty for a pass).
    pub fix: String,
}

impl Check {
    pub(crate) fn new(
        name: &str,
        verdict: Verdict,
        detail: impl Into<String>,
        fix: impl Into<String>,
    ) -> Self {
        Self {
            name: name.to_string(),
            verdict,
            detail: crate::messages::tidy(&redact_error(&detail.into())),
            fix: fix.into(),
        }
    }

    pub(crate) fn pass(name: &str, detail: impl Into<String>) -> Self {
        Self::new(name, Verdict::Pass, detail, "")
    }
}
