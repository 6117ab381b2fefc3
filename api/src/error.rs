use serde::{Deserialize, Serialize};

/// One problem with a resource: the field path (`sources[0].match`) and why.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Violation {
    pub field: String,
    pub reason: String,
}

/// Every problem found in a resource. Never empty when returned as an error.
#[derive(Debug, Clone, PartialEq, Eq, Default, thiserror::Error)]
pub struct ValidationError {
    pub violations: Vec<Violation>,
}

impl ValidationError {
    pub fn single(field: impl Into<String>, reason: impl Into<String>) -> Self {
        let mut e = Self::default();
        e.add(field, reason);
        e
    }

    pub fn add(&mut self, field: impl Into<String>, reason: impl Into<String>) {
        self.violations.push(Violation {
            field: field.into(),
            reason: reason.into(),
        });
    }

    pub fn is_empty(&self) -> bool {
        self.violations.is_empty()
    }

    /// `Ok(())` when nothing was found, the error otherwise.
    pub fn into_result(self) -> Result<(), ValidationError> {
        if self.is_empty() {
            Ok(())
        } else {
            Err(self)
        }
    }
}

impl std::fmt::Display for ValidationError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let parts: Vec<String> = self
            .violations
            .iter()
            .map(|v| format!("{}: {}", v.field, v.reason))
            .collect();
        write!(f, "{}", parts.join("; "))
    }
}

/// A text that is not YAML or JSON at all, with the document index it was found in.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("document {index}: {reason}")]
pub struct ParseError {
    /// Zero-based index of the document in a multi-document text.
    pub index: usize,
    pub reason: String,
}
