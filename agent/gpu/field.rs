//! One value read from NVML, which a GPU may not support.
//!
//! NVML answers `NOT_SUPPORTED` for many queries on older or consumer GPUs (ECC on a GeForce, row
//! remapping before Ampere, power draw on some boards). That is a fact about the GPU, not a failure
//! of the report, so it is a value of its own here, distinct from a real error (a GPU that fell off
//! the bus, no permission), which is kept with its message.

use serde::{Deserialize, Serialize};

/// `{"value": 42}`, `"not_supported"` or `{"error": "GPU is lost"}` in JSON.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Field<T> {
    Value(T),
    NotSupported,
    Error(String),
}

impl<T> Field<T> {
    /// The value, if the GPU gave one.
    pub fn value(&self) -> Option<&T> {
        match self {
            Field::Value(v) => Some(v),
            Field::NotSupported | Field::Error(_) => None,
        }
    }

    pub fn map<U>(&self, f: impl FnOnce(&T) -> U) -> Field<U> {
        match self {
            Field::Value(v) => Field::Value(f(v)),
            Field::NotSupported => Field::NotSupported,
            Field::Error(e) => Field::Error(e.clone()),
        }
    }

    /// The error message, if reading failed for another reason than "not supported".
    pub fn error(&self) -> Option<&str> {
        match self {
            Field::Error(e) => Some(e),
            Field::Value(_) | Field::NotSupported => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_shapes_tell_the_three_cases_apart() {
        let cases: [(Field<u32>, &str); 3] = [
            (Field::Value(42), r#"{"value":42}"#),
            (Field::NotSupported, r#""not_supported""#),
            (
                Field::Error("GPU is lost".into()),
                r#"{"error":"GPU is lost"}"#,
            ),
        ];
        for (field, json) in cases {
            assert_eq!(serde_json::to_string(&field).unwrap(), json);
            assert_eq!(serde_json::from_str::<Field<u32>>(json).unwrap(), field);
        }
    }

    #[test]
    fn accessors() {
        assert_eq!(Field::Value(3).value(), Some(&3));
        assert_eq!(Field::<u32>::NotSupported.value(), None);
        assert_eq!(Field::<u32>::Error("x".into()).error(), Some("x"));
        assert_eq!(Field::Value(3).map(|v| v * 2), Field::Value(6));
    }
}
